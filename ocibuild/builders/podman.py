"""The podman builder: `go build` in a throw-away container (rootful or
rootless), the source mounted read-only, the Go build and module caches in a
named volume, the output directory mounted.

Podman is daemonless: the container belongs to this process's `podman run`.
On a failure or an interrupt the client is killed and the container removed
by its unique name, so none is left behind. `podman run` exits 125 for its
own errors, 126 when the command cannot run and 127 when it is not found
(no `go` in the image); anything else is go's own exit status.

Rootless podman (an ordinary user) works the same: container root is the
user, so the binary it writes is owned by the user. Machine settings that
podman needs on some hosts (runtime, cgroup manager, ulimits, no slirp
network) belong in containers.conf, not here."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid

from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

from ..children import child_pids, stop_children
from ..engines import Engine, last_line, not_installed
from ..errors import BuildError, EngineError, InputError
from ..gosource import BINARY, OUTPUT, PROXY_MOUNT, GoBuild
from ..progress import Say
from ..toolchains import Toolchain
from .container import CACHE, builder_env, source_mount
from .images import engine_toolchains, ensure_image, image_for, no_go
from .warm import WarmBuilder, WarmSettings

NAME_PREFIX = "ocibuild-build-"
CACHE_VOLUME = "ocibuild-go-cache"


class PodmanBuilder:
    name = "podman"

    def __init__(self, image: str, cache_volume: str = CACHE_VOLUME, warm: WarmSettings | None = None):
        self.image = image                # --builder-image; "": by Go version
        self.cache_volume = cache_volume
        self.engine = Engine("podman")
        self.warm = warm                  # None: --fresh-builder (a container per build)

    def toolchains(self) -> list[Toolchain]:
        return engine_toolchains(self.engine, self.image)

    def compile(self, job: GoBuild, out_dir: str, say: Say) -> str:
        for path in (source_mount(job)[0], out_dir, job.modules.proxy_dir):
            if ":" in path:
                raise InputError(f"podman cannot mount {path!r} (it contains ':'); "
                                 "move it, or use --builder docker or --builder host")
        image = ensure_image(self.engine, image_for(job, self.image), say)
        if self.warm is not None and not job.modules.proxy_dir:
            return WarmBuilder(self.engine, self.warm, self.cache_volume).compile(job, image, out_dir, say)
        argv = job.argv(f"{OUTPUT}/{BINARY}")
        env = builder_env(job)
        name = NAME_PREFIX + uuid.uuid4().hex[:16]
        output = os.path.join(out_dir, BINARY)
        say(f"compiling in podman container {name} from {image}: " + " ".join(argv[1:]))
        stage = tempfile.mkdtemp(prefix=".podman-out-", dir=out_dir)
        try:
            self._run(job, image, argv, env, name, stage, say)
            built = os.path.join(stage, BINARY)
            if not os.path.isfile(built):
                raise EngineError(f"podman container {name} exited 0 but wrote no binary")
            os.replace(built, output)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return output

    def _run(self, job: GoBuild, image: str, argv: list[str], env: dict, name: str,
             stage: str, say: Say) -> None:
        lines: list[str] = []
        before = child_pids()
        done = False
        try:
            logs = self.engine.client.container.run(
                image, argv, name=name, remove=True, pull="never", user="0:0",
                networks=[] if job.network else ["none"],
                volumes=[(*source_mount(job), "ro"),
                         (self.cache_volume, CACHE),
                         (stage, OUTPUT),
                         *([(job.modules.proxy_dir, PROXY_MOUNT, "ro")] if job.modules.proxy_dir else [])],
                workdir=job.source.workdir, envs=env, stream=True)
            for _, raw in logs:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                say(line)
            done = True
        except ClientNotFoundError:
            raise not_installed("podman") from None
        except DockerException as e:
            code = e.return_code
            if code == 127:
                raise no_go("podman", image) from None
            if code in (125, 126):
                raise EngineError(f"podman could not run the builder container "
                                  f"({last_line(e.stderr)}); check podman (scripts/setup "
                                  "configures it), or choose --builder docker or --builder host") from None
            raise BuildError("podman", code, "\n".join(lines)) from None
        finally:
            if not done:
                self._remove(before, name)

    def _remove(self, before: set[int], name: str) -> None:
        """Kill this process's `podman run` client (after an interrupt it may
        still be creating or running the container), then remove the container."""
        for _ in range(3):
            try:
                stop_children(before, signal.SIGKILL, grace=0)
                self.engine.remove_container(name)
                return
            except KeyboardInterrupt:
                continue          # a second Ctrl-C: still clean up, then re-raise the first
            except EngineError:
                return
