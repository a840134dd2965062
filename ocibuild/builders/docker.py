"""The docker builder. By default a warm builder container (builders/warm.py,
python-on-whales: start, exec, inspect), shared with podman. With
--fresh-builder (or a module proxy directory): `go build` in a BuildKit build
stage (docker buildx, docker driver), with the Go build and module caches as
cache mounts, and the binary returned with a local output from a `FROM
scratch` stage.

The generated Dockerfile is an internal detail (nothing of it reaches the
image). It sticks to what dockerd 20.10's built-in frontend (BuildKit 0.8,
Dockerfile 1.2) accepts without a `# syntax=` line — no image can be pulled
for a newer frontend: `RUN --mount` (bind and cache), exec-form RUN, and
multi-stage `COPY --from`. No heredocs, no `COPY --link`, no named build
contexts, no `RUN --network` (the network is set for the whole build).

The source directory is the build context and is bind-mounted read-only into
the RUN step (never copied into a layer, never written); the Dockerfile lives
in a temp directory. A `.dockerignore` in the source would make BuildKit drop
files that the podman and host builders see, so such a source is built from
a copy without it.

`docker buildx build` runs through python-on-whales too, its `--progress
plain` output streamed and parsed line by line (the compiler's messages, the
RUN step's failure). The docker client's environment is the process's, as
from a shell, plus BUILDX_GIT_INFO=0."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable, Mapping
from typing import cast

from ..children import child_pids, stop_children
from ..engines import Engine, last_line, not_installed, unreachable
from ..errors import BuildError, EngineError
from ..gosource import BINARY, OUTPUT, PROXY_MOUNT, GoBuild
from ..progress import Say, silent
from ..toolchains import Toolchain
from .container import CACHE, builder_env, mirror, source_mount
from .images import engine_toolchains, ensure_image, image_for, is_archive, no_go
from .warm import WarmBuilder, WarmSettings

STAGE = "ocibuild-go-build"
WARM_CACHE_VOLUME = "ocibuild-go-cache"     # the warm builder's caches: a volume, as podman's

# `--progress plain` lines: a step's header, its process output, its failure.
_RUN_HEADER = re.compile(rf"^#(\d+) \[{STAGE} \d+/\d+\] RUN ")
_LOG = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")
_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
_EXIT = re.compile(r"exit code: (\d+)")


class DockerBuilder:
    name = "docker"

    def __init__(self, image: str, env: Mapping[str, str], cache_id: str = "ocibuild-go",
                 warm: WarmSettings | None = None):
        self.image = image                # --builder-image; "": by Go version
        self.cache_id = cache_id          # BuildKit cache mount ids: <cache_id>-build, -mod
        self.warm = warm                  # None: --fresh-builder (a BuildKit solve per build)
        self.engine = Engine("docker")    # one per run: what it read of an image is asked again

    def toolchains(self) -> list[Toolchain]:
        return engine_toolchains(self.engine, self.image)

    def compile(self, job: GoBuild, out_dir: str, say: Say) -> str:
        image = self._image(job)
        if self.warm is not None and not job.modules.proxy_dir:
            image = ensure_image(self.engine, image, say)
            return WarmBuilder(self.engine, self.warm, WARM_CACHE_VOLUME).compile(job, image, out_dir, say)
        if is_archive(image):                         # load it first (off the hot path)
            image = ensure_image(self.engine, image, say)
        argv = job.argv(f"{OUTPUT}/{BINARY}")
        output = os.path.join(out_dir, BINARY)
        # Inside the run's work directory: swept with it if ocibuild is killed.
        with tempfile.TemporaryDirectory(prefix="docker-", dir=out_dir) as tmp:
            dockerfile = os.path.join(tmp, "Dockerfile")
            nested = bool(job.modules.proxy_dir)
            with open(dockerfile, "w") as f:
                f.write(self.dockerfile(job, image, argv, nested))
            context, _ = source_mount(job)
            if nested or os.path.lexists(os.path.join(context, ".dockerignore")):
                # BuildKit 0.8 binds only from the one context: a context of our
                # own, made of hard links (or copies across file systems).
                source, context = context, os.path.join(tmp, "context")
                mirror(source, os.path.join(context, "src") if nested else context, skip=".dockerignore")
                if nested:
                    mirror(job.modules.proxy_dir, os.path.join(context, "goproxy"))
            say(f"compiling in a docker buildx stage from {image}: " + " ".join(argv[1:]))
            dest = tempfile.mkdtemp(prefix=".docker-out-", dir=out_dir)
            try:
                self._build(job, context, dockerfile, dest, say)
                built = os.path.join(dest, BINARY)
                if not os.path.isfile(built):
                    raise EngineError("docker buildx build succeeded but returned no binary")
                os.replace(built, output)
            finally:
                shutil.rmtree(dest, ignore_errors=True)
        return output

    def _image(self, job: GoBuild) -> str:
        return image_for(job, self.image)

    def dockerfile(self, job: GoBuild, image: str, argv: list[str], nested: bool = False) -> str:
        """`nested`: the context holds the source as src/ and a module proxy as goproxy/."""
        workdir = job.source.workdir
        _, target = source_mount(job)
        env = builder_env(job)
        source = ",source=src" if nested else ""
        proxy = [f"--mount=type=bind,source=goproxy,target={PROXY_MOUNT}"] if nested else []
        mounts = [f"--mount=type=bind{source},target={target}", *proxy,
                  f"--mount=type=cache,id={self.cache_id}-build,target={CACHE}/go-build",
                  f"--mount=type=cache,id={self.cache_id}-mod,target={CACHE}/mod"]
        env_lines = " \\\n    ".join(f"{k}={_quote(v)}" for k, v in sorted(env.items()))
        return (f"FROM {image} AS {STAGE}\n"
                "USER 0:0\n"
                f"ENV {env_lines}\n"
                f"WORKDIR {workdir}\n"
                f"RUN {' '.join(mounts)} {json.dumps(argv)}\n"
                "FROM scratch\n"
                f"COPY --from={STAGE} {OUTPUT}/{BINARY} /{BINARY}\n")

    def _build(self, job: GoBuild, context: str, dockerfile: str, dest: str, say: Say) -> None:
        """`docker buildx build` through python-on-whales, its plain progress
        streamed: the RUN step's output is the compiler's, its ERROR line the failure."""
        from python_on_whales.client_config import ClientNotFoundError
        from python_on_whales.exceptions import DockerException
        # No git metadata from the source's checkout into BuildKit's records.
        engine = Engine("docker", env={"BUILDX_GIT_INFO": "0"})
        lines: list[str] = []
        run_step: str | None = None
        failure: str | None = None            # the RUN step's ERROR line
        before = child_pids()
        try:
            stream = engine.client.buildx.build(
                context, file=dockerfile, output={"type": "local", "dest": dest}, progress="plain",
                provenance=False, pull=False, network=None if job.network else "none", stream_logs=True)
            for raw in cast(Iterable[str], stream):
                for line in raw.splitlines():
                    lines.append(line)
                    if m := _RUN_HEADER.match(line):
                        run_step = m.group(1)
                    elif (m := _LOG.match(line)) and m.group(1) == run_step:
                        say(m.group(2))
                    elif (m := _ERROR.match(line)) and m.group(1) == run_step:
                        failure = m.group(2)
            return
        except ClientNotFoundError:
            raise not_installed("docker") from None
        except DockerException as e:
            lines += (e.stderr or "").splitlines()
            failure = failure or next((m.group(2) for line in lines if (m := _ERROR.match(line))
                                       and m.group(1) == run_step), None)
        except BaseException:
            # Interrupted (Ctrl-C, or SIGTERM turned into KeyboardInterrupt):
            # ending the client closes the buildx session; BuildKit cancels the build.
            stop_children(before, signal.SIGTERM, grace=5)
            raise
        text = "\n".join(lines)
        if failure is None:
            raise self._engine_failure(lines, self._image(job))
        if 'exec: "go": executable file not found' in text:
            raise no_go("docker", self._image(job))
        m = _EXIT.search(failure)
        raise BuildError("docker", int(m.group(1)) if m else None, text)

    def _engine_failure(self, lines: list[str], image: str) -> EngineError:
        """Why buildx failed before our RUN step: say it the way a user can act on."""
        engine = Engine("docker")
        try:
            engine.server_version()
        except EngineError as e:
            return unreachable("docker", str(e))
        if not any(line.startswith("#") for line in lines):
            try:
                engine.call("buildx version", engine.client.buildx.version)
            except EngineError:
                return EngineError("docker buildx is not installed (`docker buildx version` fails); "
                                   "install the buildx plugin (scripts/setup does), or choose "
                                   "--builder podman or --builder host")
        ensure_image(engine, image, silent)   # raises when the image is missing
        errors = [line for line in lines if line.startswith("ERROR:")]
        return EngineError("docker buildx build failed: "
                           + (errors[-1][len("ERROR:"):].strip() if errors else last_line("\n".join(lines))))


def _quote(value: str) -> str:
    """A Dockerfile ENV value, taken literally (no $ expansion)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'
