"""Builders compile a GoBuild into one binary. Each engine's quirks stay in
its own module; everything above sees only the `Builder` protocol and
`choose`. The caller's environment comes in as a plain mapping (read once,
by the CLI): builders pass on only what they document."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from typing import Protocol

from ..errors import EngineError, InputError
from ..gosource import GoBuild
from ..progress import Say
from ..toolchains import Toolchain
from .warm import WarmSettings


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


def choose(name: str, image: str, say: Say, env: Mapping[str, str], warm: WarmSettings | None = None) -> Builder:
    """The builder `name`; for "auto", the first usable of a docker engine,
    podman, the host's go — saying which was chosen and why the ones before
    it were skipped. `image`: the --builder-image, "" to pick one by Go
    version. `env` is the caller's environment (PATH finds the tools;
    DOCKER_HOST, CONTAINER_HOST name the engines). `warm`: reuse builder
    containers (None: --fresh-builder)."""
    if name == "auto":
        name, skipped = first_usable(env, fresh=warm is None)
        say(f"builder: {name} (auto" + "".join(f"; {why}" for why in skipped) + ")")
    if name == "docker":
        from .docker import DockerBuilder
        return DockerBuilder(image, env, warm=warm)
    if name == "podman":
        from .podman import PodmanBuilder
        return PodmanBuilder(image, warm=warm)
    if name == "host":
        from .host import HostBuilder
        return HostBuilder(env)
    raise InputError(f"unknown builder {name!r}: use {', '.join(BUILDERS)}")


def first_usable(env: Mapping[str, str], fresh: bool = False) -> tuple[str, list[str]]:
    """The first usable builder, and why each one before it is not usable.
    Cheap: the engines' sockets and files are probed (a docker `_ping`
    over its socket, a few milliseconds), no engine CLI is run; a socket
    that is there but refuses (a rootless user on docker's socket) is not
    usable, with the reason."""
    path = env.get("PATH")
    skipped: list[str] = []
    why = _docker_unusable(env, path, needs_buildx=fresh)
    if not why:
        return "docker", skipped
    skipped.append(f"docker: {why}")
    why = _podman_unusable(env, path)
    if not why:
        return "podman", skipped
    skipped.append(f"podman: {why}")
    if shutil.which("go", path=path):
        return "host", skipped
    raise EngineError("no builder found (" + "; ".join(skipped) + "; go: not on PATH): start a docker "
                      "engine, install podman, or install Go for --builder host")


def engine_unusable(name: str, env: Mapping[str, str]) -> str:
    """Why engine `name` is not usable here ("" when it is), by the cheap probes."""
    path = env.get("PATH")
    return _docker_unusable(env, path, needs_buildx=False) if name == "docker" else _podman_unusable(env, path)


def _docker_unusable(env: Mapping[str, str], path: str | None, needs_buildx: bool) -> str:
    if not shutil.which("docker", path=path):
        return "no docker client on PATH"
    host = env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if env.get("DOCKER_CONTEXT") or not host.startswith(("unix://", "tcp://")):
        return "" if _cli_ok(env, "docker", "info") else f"`docker info` fails for {host}"
    why = _ping(host)
    if why:
        return why
    if needs_buildx and not any(os.path.isfile(os.path.join(d, "docker-buildx")) for d in _plugin_dirs(env)):
        return "no buildx plugin (needed with --fresh-builder)"
    return ""


def _podman_unusable(env: Mapping[str, str], path: str | None) -> str:
    if not shutil.which("podman", path=path):
        return "no podman on PATH"
    remote = env.get("CONTAINER_HOST")
    if remote:
        return _ping(remote) if remote.startswith("unix://") else ""
    # Daemonless: usable once it can keep per-user state (rootless needs its runtime directory).
    if os.geteuid() != 0 and not os.path.isdir(env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"):
        return "no XDG_RUNTIME_DIR for rootless podman"
    return ""


def _ping(host: str) -> str:
    """"" when the engine API at `host` answers `GET /_ping`; else why not."""
    try:
        if host.startswith("unix://"):
            where = host[len("unix://"):]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect(where)
        else:
            where = host.removeprefix("tcp://")
            h, _, port = where.rpartition(":")
            sock = socket.create_connection((h.strip("[]"), int(port)), timeout=2)
    except FileNotFoundError:
        return f"no socket at {where}"
    except PermissionError:
        return f"permission denied on {where}"
    except (OSError, ValueError) as e:
        return f"{where} refuses ({getattr(e, 'strerror', None) or e})"
    try:
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        answer = sock.recv(64)
    except OSError as e:
        return f"{where} does not answer ({e.strerror or e})"
    finally:
        sock.close()
    return "" if answer.startswith(b"HTTP/1.") and b" 200 " in answer[:16] else f"{where} is not an engine API"


def _plugin_dirs(env: Mapping[str, str]) -> list[str]:
    home = env.get("HOME", "")
    config = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    return [os.path.join(config, "cli-plugins"), "/usr/local/lib/docker/cli-plugins",
            "/usr/local/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins",
            "/usr/libexec/docker/cli-plugins"]


def _cli_ok(env: Mapping[str, str], *argv: str) -> bool:
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20, env=dict(env)).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
