"""What the engine builders (docker, podman) share: the builder image made
present in the engine, the engine client and its errors, and stopping the
engine's client process when a build is interrupted.

The builder image is named either as an image the engine already has, or as
an archive to load first — the air-gapped way to bring a toolchain:
`docker-archive:FILE[:NAME:TAG]`, `oci-archive:FILE[:REF]` or `oci:DIR[:REF]`.
An archive is loaded only when the engine lacks that exact image (same
config digest, which is the image ID in docker and podman alike)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tarfile
import tempfile
import time
from typing import Callable

from python_on_whales.exceptions import DockerException, NoSuchImage

from ..engines import engine_run, last_line, unreachable
from ..errors import EngineError, InputError
from ..transports import Reference, image_name, parse_reference
from .container import ARCHIVES

Say = Callable[[str], None]

# Archives without a usable name are loaded under this repository, tagged
# with their config digest: the name says exactly which image it is.
LOADED_REPO = "localhost/ocibuild/builder"

def no_go(engine: str, image: str) -> InputError:
    return InputError(f"builder image {image} has no `go` on PATH (in {engine}); "
                      "pass a Go toolchain image with --builder-image")


def image_id(engine: str, name: str) -> str | None:
    """The engine's ID (`sha256:...`) of image `name`; None when it has none."""
    try:
        out = engine_run(engine, "image", "inspect", "--format", "{{.Id}}", name)
    except NoSuchImage:
        return None
    except DockerException as e:
        raise unreachable(engine, last_line(e.stderr)) from None
    value = out.strip().splitlines()[0] if out.strip() else ""
    return value if value.startswith("sha256:") else "sha256:" + value


def ensure_image(engine: str, ref: str, say: Say) -> str:
    """The name under which `engine` has the builder image `ref`, loading an
    archive first when the engine lacks it."""
    if ref.partition(":")[0] not in ARCHIVES:
        if image_id(engine, ref) is None:
            raise InputError(f"builder image {ref} not found in {engine}; load it "
                             f"({engine} load -i FILE) or pass --builder-image docker-archive:FILE")
        return ref
    archive = parse_reference(ref, "--builder-image")
    if not os.path.exists(archive.path):
        raise InputError(f"--builder-image {ref}: {archive.path} does not exist")
    if archive.transport == "docker-archive":
        name, config = _docker_archive(archive)
    else:
        from ..sources import open_image   # reads index, manifest and config only
        image = open_image(archive)
        name, config = None, image.config.descriptor.digest
    name = name or f"{LOADED_REPO}:{config.partition(':')[2]}"
    if image_id(engine, name) == config:
        return name
    say(f"loading the builder image {name} from {archive.path} into {engine}")
    _load(engine, archive, name)
    if image_id(engine, name) != config:
        # An untagged archive, or one the engine named its own way: name it by ID.
        try:
            engine_run(engine, "tag", config if engine == "docker" else config.partition(":")[2], name)
        except DockerException as e:
            raise EngineError(f"{engine} loaded {archive.path} but has no image with config "
                              f"{config}: {last_line(e.stderr)}") from None
    return name


def _docker_archive(ref: Reference) -> tuple[str | None, str]:
    """The name (ref's NAME:TAG, else the archive's first RepoTag) and the
    config digest of the image a docker-archive holds. Reads two members."""
    what = f"docker-archive:{ref.path}"
    try:
        with tarfile.open(ref.path) as tar:
            entries = json.loads(_member(tar, "manifest.json", what))
            if not isinstance(entries, list) or not entries:
                raise InputError(f"{what}: manifest.json lists no image")
            if ref.ref:
                picked = [e for e in entries if ref.ref in (e.get("RepoTags") or [])]
                if not picked:
                    tags = sorted(t for e in entries for t in e.get("RepoTags") or [])
                    raise InputError(f"{what} has no image tagged {ref.ref}; it has "
                                     f"{', '.join(tags) or 'no tags'}")
                entry = picked[0]
            elif len(entries) == 1:
                entry = entries[0]
            else:
                raise InputError(f"{what} holds {len(entries)} images; name one with :NAME:TAG")
            config = "sha256:" + hashlib.sha256(_member(tar, entry["Config"], what)).hexdigest()
    except tarfile.TarError:
        raise InputError(f"{what} is not a tar archive") from None
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{what} is not a docker archive (bad manifest.json: {e!r})") from None
    tags = entry.get("RepoTags") or []
    name = ref.ref or (image_name(tags[0], what) if tags else None)
    return name, config


def _member(tar: tarfile.TarFile, name: str, what: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise InputError(f"{what}: {name} is not a file")
    return f.read()


def _load(engine: str, archive: Reference, name: str) -> None:
    # docker 20.10 cannot load OCI archives, and neither engine loads an oci:
    # directory: those go through ocibuild's own reader and docker-archive writer.
    if archive.transport == "docker-archive" or (engine == "podman" and archive.transport == "oci-archive"):
        _engine_load(engine, archive.path)
        return
    from ..blobs import WorkStore
    from ..outputs import ArchiveOutput
    from ..sources import open_image
    image = open_image(archive)
    with tempfile.TemporaryDirectory(prefix="ocibuild-builder-image-") as tmp, WorkStore(tmp) as work:
        out = ArchiveOutput(Reference("docker-archive", os.path.join(tmp, "image.tar"), name),
                            created=0, docker=True)
        try:
            out.stage(image, work)
            out.commit()
        finally:
            out.abort()
        _engine_load(engine, out.path)


def _engine_load(engine: str, path: str) -> None:
    try:
        engine_run(engine, "load", "--input", path)
    except DockerException as e:
        raise EngineError(f"{engine} load of {path} failed: {last_line(e.stderr)}") from None


# --- the engine's client process, on an interrupt ------------------------------

def child_pids() -> set[int]:
    """This process's children (from /proc: python-on-whales keeps the
    streaming Popen to itself)."""
    me, out = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == me:
                out.add(int(entry))
    return out


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def stop_children(before: set[int], sig: int, grace: float) -> None:
    """Signal the children started since `before` with `sig`, wait up to
    `grace` seconds for them to exit, then SIGKILL what is left."""
    pids = child_pids() - before
    for p in pids:
        _kill(p, sig)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        if pids:
            time.sleep(0.05)
    for p in pids:
        _kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
