"""The one wrapper around the local container engines (docker, podman),
driven through python-on-whales' client API. Everything ocibuild asks of an
engine goes through `Engine`, and every engine failure reads the same way:
`EngineError` naming the engine, what failed, and what to do.

python-on-whales is imported when an Engine is first used, not with this
module: its import costs 0.15-0.2 s (its pydantic models), which commands
that reach no engine (`assemble` to files, registry pushes, `--builder
auto`'s socket probes) do not pay."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .children import child_pids, end_process, stop_children
from .errors import EngineError
from .fsutil import unlink_quietly
from .oci.blobs import WorkStore
from .oci.image import Image
from .oci.layout import docker_archive_files, write_archive

if TYPE_CHECKING:
    from python_on_whales import DockerClient

WHAT_TO_DO = {
    "docker": "start dockerd (scripts/setup does), or choose --builder podman or --builder host",
    "podman": "install and configure podman (scripts/setup does), or choose --builder docker "
              "or --builder host",
}


def last_line(text: str | bytes | None) -> str:
    """The last non-empty line of an engine's message."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def unreachable(engine: str, why: str) -> EngineError:
    return EngineError(f"{engine} is not usable ({why}); {WHAT_TO_DO[engine]}")


def not_installed(engine: str) -> EngineError:
    return EngineError(f"{engine} is not installed; {WHAT_TO_DO[engine]}")


def client_call(name: str, tmpdir: str = "", env: Mapping[str, str] | None = None) -> list[str]:
    """How python-on-whales starts the engine's client. It takes no
    `preexec_fn`, so util-linux's setpriv (in every Debian) sets the
    parent-death signal and execs the client: a `docker load` or `podman
    run` then ends when ocibuild dies, even by kill -9. `tmpdir`: the
    client's TMPDIR (podman stages a load there, and leaves it when
    killed: inside ocibuild's work store, the next run sweeps it). A client
    missing from PATH stays bare, for python-on-whales' own "not found"."""
    found = shutil.which(name)
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if not found or not setpriv:
        return [name]
    settings = {**({"TMPDIR": tmpdir} if tmpdir else {}), **(env or {})}
    prefix = (["/usr/bin/env", *(f"{k}={v}" for k, v in settings.items())]
              if settings and os.path.exists("/usr/bin/env") else [])
    return [setpriv, "--pdeathsig", "TERM", *prefix, found]


class Engine:
    """docker or podman, as the current user reaches it (podman rootless too)."""

    def __init__(self, name: str, env: Mapping[str, str] | None = None):
        if name not in WHAT_TO_DO:
            raise ValueError(f"unknown engine {name!r}")
        self.name = name
        self.env = dict(env or {})       # set for the client (e.g. BUILDX_GIT_INFO=0), over the process's own
        self._client: DockerClient | None = None
        # name -> (ID, labels) as this run read them: the toolchain choice,
        # the builder image check and the warm builder's key ask about the
        # same image within milliseconds; one inspect answers all three.
        # Anything that can move a name (load, tag, rmi) forgets them.
        self._images: dict[str, tuple[str, dict[str, str]]] = {}

    @property
    def client(self) -> DockerClient:
        """The python-on-whales client (for a builder's own container calls)."""
        if self._client is None:
            from python_on_whales import DockerClient
            self._client = DockerClient(client_call=client_call(self.name, env=self.env))
        return self._client

    def call(self, doing: str, fn, *args, passthrough: tuple[type[Exception], ...] = (), **kwargs):
        """`fn(*args, **kwargs)` with python-on-whales' errors turned into ours;
        exceptions in `passthrough` (e.g. NoSuchImage: an answer, not a
        failure) reach the caller as they are."""
        from python_on_whales.client_config import ClientNotFoundError
        from python_on_whales.exceptions import DockerException
        try:
            return fn(*args, **kwargs)
        except passthrough:
            raise
        except ClientNotFoundError:
            raise not_installed(self.name) from None
        except DockerException as e:
            raise EngineError(f"{self.name} {doing} failed: {last_line(e.stderr)}") from None

    # -- the engine itself ------------------------------------------------------

    def require(self, otherwise: str = "drop that output") -> None:
        """Refuse early, saying what to do (start it, or `otherwise`), when
        the engine cannot be reached."""
        try:
            info = self.call("info", self.client.system.info)
            # `docker info --format json` (what python-on-whales runs) exits 0 with
            # no server fields when the daemon does not answer (client 20.10).
            if self.name == "docker" and not getattr(info, "server_version", None):
                errors = getattr(info, "server_errors", None) or ["the daemon does not answer"]
                raise EngineError(f"docker info failed: {errors[-1]}")
        except EngineError as e:
            raise EngineError(f"the {self.name} engine is not reachable ({e}); "
                              f"{WHAT_TO_DO[self.name].split(', or')[0]}, or {otherwise}") from None

    def server_version(self) -> str:
        """The engine's version (docker: the daemon's; podman: its own)."""
        v = self.call("version", self.client.version)
        server = getattr(v, "server", None)
        client = getattr(v, "client", None)
        return str(getattr(server, "version", None) or getattr(client, "version", None) or "")

    def require_zstd(self) -> None:
        """Docker engines before 23 cannot unpack zstd layers (podman can)."""
        if self.name != "docker":
            return
        version = self.server_version()
        try:
            major = int(version.split(".")[0])
        except ValueError:
            return
        if major < 23:
            raise EngineError(f"docker {version} cannot load zstd-compressed layers; "
                              "use --compression gzip for docker-daemon: outputs")

    # -- images -----------------------------------------------------------------

    def image_id(self, name: str) -> str | None:
        """The engine's ID (`sha256:...`, the config digest) of image `name`; None when it has none."""
        found = self._image(name)
        return found[0] if found else None

    def has(self, name: str) -> bool:
        return self.image_id(name) is not None

    def labels(self, name: str) -> dict[str, str] | None:
        """Image `name`'s config labels; None when the engine has no such image."""
        found = self._image(name)
        return dict(found[1]) if found else None

    def _image(self, name: str) -> tuple[str, dict[str, str]] | None:
        if name in self._images:
            return self._images[name]
        from python_on_whales.client_config import ClientNotFoundError
        from python_on_whales.exceptions import DockerException, NoSuchImage
        try:
            image = self.client.image.inspect(name)
        except NoSuchImage:
            return None
        except ClientNotFoundError:
            raise not_installed(self.name) from None
        except DockerException as e:
            raise unreachable(self.name, last_line(e.stderr)) from None
        return self._remember(name, str(image.id), image.config.labels)

    def _remember(self, name: str, image_id: str, labels: Mapping | None) -> tuple[str, dict[str, str]]:
        found = (image_id if image_id.startswith("sha256:") else "sha256:" + image_id,
                 {str(k): str(v) for k, v in (labels or {}).items()})
        self._images[name] = found
        return found

    def labelled(self, label: str) -> list[tuple[str, str]]:
        """(name, value) for every named image whose config carries `label`, by name."""
        from python_on_whales.exceptions import NoSuchImage
        for attempt in range(3):
            # python-on-whales lists the IDs, then inspects them: an image
            # removed in between (another process's rmi) fails the inspect.
            try:
                images = self.call("image list", self.client.image.list, filters=[("label", label)],
                                   passthrough=(NoSuchImage,))
                break
            except NoSuchImage:
                if attempt == 2:
                    raise unreachable(self.name, "its image list kept changing while it was read") from None
        out = []
        for im in images:
            # Each property read over 10 ms after the last re-runs the
            # inspect (python-on-whales' cache period): read them once.
            tags, labels = list(im.repo_tags or []), im.config.labels
            for tag in tags:
                out.append((tag, self._remember(tag, str(im.id), labels)[1].get(label, "")))
        return sorted(out)

    def load(self, archive: str, name: str = "", scratch: str = "") -> None:
        """`ENGINE load` of a docker-archive; with `name`, check it arrived;
        `scratch`: a directory of the run's work store for the client's own
        temporary files. Interrupted, the engine's client is stopped
        (python-on-whales streams a load through a Popen it would leave running)."""
        client = self.client
        if scratch:
            from python_on_whales import DockerClient
            tmp = os.path.join(scratch, f"{self.name}-tmp")
            os.makedirs(tmp, exist_ok=True)
            client = DockerClient(client_call=client_call(self.name, tmp))
        before = child_pids()
        self._images.clear()
        try:
            self.call(f"load of {archive}", client.image.load, archive, quiet=True)
        except BaseException:
            stop_children(before, signal.SIGTERM, grace=2)
            raise
        if name and not self.has(name):
            raise EngineError(f"{self.name} loaded the archive but has no image {name}")

    def archive(self, image: Image, name: str, work: WorkStore) -> str:
        """`image` written in `work` as the docker-archive this engine loads."""
        fd, path = tempfile.mkstemp(dir=work.root, prefix=f"load-{self.name}-", suffix=".tar")
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                write_archive(f, docker_archive_files(image, name), 0)
        except BaseException:
            unlink_quietly(path)
            raise
        return path

    def load_image(self, image: Image, name: str, work: WorkStore) -> None:
        """Load `image` under `name`."""
        path = self.archive(image, name, work)
        try:
            self.load(path, name, scratch=work.root)
        finally:
            unlink_quietly(path)

    def tag(self, image_id: str, name: str) -> None:
        # podman names an image by its bare hex ID; docker takes sha256:...
        source = image_id if self.name == "docker" else image_id.partition(":")[2]
        self._images.clear()
        self.call("tag", self.client.image.tag, source, name)

    def restore_name(self, name: str, loaded: str, before: str | None) -> None:
        """Undo a load that may have moved `name` to the image `loaded`: give
        the name back to `before`, or remove it when it was new. Best
        effort, and never while an interrupt is being handled twice."""
        try:
            now = self.image_id(name)
            if now is None or now == before or now != loaded:
                return
            if before is None:
                self._images.clear()
                self.call("rmi", self.client.image.remove, name)
            else:
                self.tag(before, name)
        except (EngineError, KeyboardInterrupt):
            pass

    # -- containers -------------------------------------------------------------

    def create_container(self, image: str, name: str, command: list[str], env: dict[str, str],
                         network: str, files: tuple[tuple[str, str], ...] = (),
                         labels: dict[str, str] | None = None) -> None:
        """A container `name` of `image`, not started, removed by the engine
        once it exits (even when nobody waits for it); `files`: (host file,
        path inside) bound read-only."""
        self.call(f"create of {name}", self.client.container.create, image, command, name=name, envs=env,
                  networks=[network], remove=True, pull="never", labels=labels or {},
                  volumes=[(host, inside, "ro") for host, inside in files])

    def containers_labelled(self, label: str) -> list[tuple[str, str]]:
        """(name, value of `label`) of every container, running or not, carrying `label`."""
        from python_on_whales.exceptions import NoSuchContainer
        for attempt in range(3):
            # As labelled(): a container removed between the list and its
            # inspect (another process's --rm) fails the inspect.
            try:
                found = self.call("container list", self.client.container.list, all=True,
                                  filters=[("label", label)], passthrough=(NoSuchContainer,))
                break
            except NoSuchContainer:
                if attempt == 2:
                    raise unreachable(self.name, "its container list kept changing while it was read") from None
        return [(c.name, str((c.config.labels or {}).get(label, ""))) for c in found]

    def copy_into(self, container: str, source_dir: str, dest: str) -> None:
        """`source_dir`'s files into the created container's `dest`. podman's
        cp gives them to the container's user; docker's would make them
        root's (its `cp -a` needs a getent in the image), so docker callers
        bind files instead (create_container's `files`)."""
        self.call(f"copy into {container}", self.client.container.copy, f"{source_dir}/.", (container, dest))

    def start_attached(self, container: str, output_fd: int = 2) -> int:
        """Start the created container and wait for it; the exit status of
        `ENGINE start --attach` (the container's, or the engine's own
        failure). Its output goes straight to `output_fd`, both streams:
        the client runs as python-on-whales would start it (client_call,
        the parent-death signal), but not through it — its attach keeps
        every stderr line in memory for the container's whole life, which
        for a chaincode is days."""
        import subprocess
        try:
            proc = subprocess.Popen([*client_call(self.name), "start", "--attach", container],
                                    stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd)
        except OSError as e:
            raise not_installed(self.name) if e.errno == 2 else EngineError(
                f"cannot run {self.name}: {e.strerror}") from None
        try:
            return proc.wait()
        except BaseException:
            end_process(proc)
            raise

    def remove_container(self, name: str) -> None:
        """Remove container `name` at once (SIGKILL, no stop timeout), if it
        exists. One that goes away by itself meanwhile (created --rm: the
        engine's own removal already in progress) counts as removed."""
        from python_on_whales.exceptions import NoSuchContainer
        try:
            self.call("kill", self.client.container.kill, name, passthrough=(NoSuchContainer,))
        except (NoSuchContainer, EngineError):
            pass                          # not running (any more): remove it all the same
        try:
            self.call("rm", self.client.container.remove, name, force=True, passthrough=(NoSuchContainer,))
        except NoSuchContainer:
            pass
        except EngineError:
            # "removal already in progress": the engine's own --rm is at it; give it a moment.
            for _ in range(20):
                if not self.call("container exists", self.client.container.exists, name):
                    return
                time.sleep(0.5)
            raise

    def save(self, name: str, work: WorkStore) -> str:
        """Image `name` saved as a docker-archive in `work`; its path."""
        fd, path = tempfile.mkstemp(dir=work.root, prefix=f"save-{self.name}-", suffix=".tar")
        os.close(fd)
        self.call(f"save of {name}", self.client.image.save, name, output=path)
        return path
