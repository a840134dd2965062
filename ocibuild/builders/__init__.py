"""Builders compile a GoBuild into one binary. Each engine's quirks stay in
its own module; everything above sees only the `Builder` protocol and
`choose`. The caller's environment comes in as a plain mapping (read once,
by the CLI): builders pass on only what they document."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from typing import Protocol

from ..errors import EngineError, InputError
from ..gosource import GoBuild
from ..progress import Say
from ..toolchains import Toolchain


class Builder(Protocol):
    name: str

    def toolchains(self) -> list[Toolchain]:
        """The Go toolchains this builder can compile with (cheap: one
        engine query for image labels, or GOROOT VERSION files; no go runs)."""
        ...

    def compile(self, job: GoBuild, out_dir: str, say: Say) -> str:
        """Compile `job`; return the path of the binary, written in `out_dir`.
        The toolchain is `job.toolchain` (one of `toolchains()`). Raises
        BuildError (compiler failed: its messages already shown through
        `say`), EngineError or InputError. Leaves no container behind."""
        ...


BUILDERS = ("auto", "docker", "podman", "host")


def choose(name: str, image: str, say: Say, env: Mapping[str, str]) -> Builder:
    """The builder `name`; for "auto", the first usable of a docker engine with
    buildx, podman, the host's go — saying which was chosen. `image`: the
    --builder-image, "" to pick one by Go version. `env` is the caller's
    environment (PATH finds the tools)."""
    if name == "auto":
        name = _first_usable(env)
        say(f"builder: {name} (auto)")
    if name == "docker":
        from .docker import DockerBuilder
        return DockerBuilder(image, env)
    if name == "podman":
        from .podman import PodmanBuilder
        return PodmanBuilder(image)
    if name == "host":
        from .host import HostBuilder
        return HostBuilder(env)
    raise InputError(f"unknown builder {name!r}: use {', '.join(BUILDERS)}")


def _first_usable(env: Mapping[str, str]) -> str:
    path = env.get("PATH")

    def ok(*argv: str) -> bool:
        try:
            return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=20, env=dict(env)).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    if shutil.which("docker", path=path) and ok("docker", "info") and ok("docker", "buildx", "version"):
        return "docker"
    if shutil.which("podman", path=path) and ok("podman", "info"):
        return "podman"
    if shutil.which("go", path=path):
        return "host"
    raise EngineError("no builder found: start a docker engine with buildx, install podman, "
                      "or install Go for --builder host")
