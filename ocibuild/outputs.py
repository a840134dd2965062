"""Where an image goes. Every output follows one small protocol — check
before any work, stage aside, commit, or abort leaving nothing — so writing
to several places is one loop, and a failure anywhere leaves every output
as it was."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from typing import Callable, Protocol

from .blobs import WorkStore, unlink_quietly
from .errors import OcibuildError, OutputError
from .image import Image
from .layout import (Member, add_to_index, blob_name, check_layout_dir, image_blobs,
                     members, put_blob, read_index, umask, write_archive)
from .model import CONTAINERD_NAME, REF_NAME, canonical_json
from .transports import Reference, parse_reference



class Output(Protocol):
    ref: Reference

    def check(self) -> None:
        """Refuse early (before assembly) what would certainly fail."""

    def stage(self, image: Image, work: WorkStore) -> None:
        """Write everything aside; the destination is not touched."""

    def commit(self) -> None:
        """Make the staged image visible, as one atomic step where possible."""

    def abort(self) -> None:
        """Remove whatever stage() left; harmless after commit()."""


def parse_output(text: str, created: int, registry=None) -> Output:
    """The output `text` names; `registry` (RegistryOptions) for docker:// ones."""
    ref = parse_reference(text, "--output")
    if ref.transport == "oci":
        return LayoutOutput(ref)
    if ref.transport == "oci-archive":
        return ArchiveOutput(ref, created, docker=False)
    if ref.transport == "docker-archive":
        return ArchiveOutput(ref, created, docker=True)
    if ref.transport in ("docker-daemon", "containers-storage"):
        from .engines import Engine   # python-on-whales costs 0.13 s to import: only when used
        engine = Engine("docker" if ref.transport == "docker-daemon" else "podman")
        return EngineOutput(ref, engine, created)
    from .registry import RegistryOptions, registry_output   # httpx: only when used
    return registry_output(ref, registry or RegistryOptions())


def write_all(outputs: list[Output], image: Image, work: WorkStore,
              say: Callable[[str], None] = lambda s: None) -> None:
    try:
        for out in outputs:
            say(f"writing {out.ref}")
            _os_errors(out, lambda: out.stage(image, work))
        # Engines and registries first: they are the likeliest to refuse at the
        # last step, and local files are then still only staged.
        for out in sorted(outputs, key=lambda o: isinstance(o, (ArchiveOutput, LayoutOutput))):
            _os_errors(out, out.commit)
    except BaseException:
        for out in outputs:
            out.abort()
        raise


def _os_errors(out: Output, step: Callable[[], None]) -> None:
    try:
        step()
    except OcibuildError:
        raise
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise OutputError(f"cannot write {out.ref}: {e.strerror}{where}; nothing was written") from None


def _index_annotations(ref: Reference, docker: bool) -> dict:
    if not ref.ref:
        return {}
    if docker:   # as `docker save` does: containerd's full name, the tag as ref.name
        return {CONTAINERD_NAME: ref.ref, REF_NAME: ref.ref.rsplit(":", 1)[1]}
    return {REF_NAME: ref.ref}


class ArchiveOutput:
    """`oci-archive:` or `docker-archive:`: one tar holding the OCI layout; the
    docker flavour adds the `manifest.json` that `docker load` reads."""

    def __init__(self, ref: Reference, created: int, docker: bool):
        self.ref, self.created, self.docker = ref, created, docker
        self.path = os.path.abspath(ref.path)
        self._tmp: str | None = None

    def check(self) -> None:
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise OutputError(f"cannot write {self.ref}: directory {parent} does not exist")
        if os.path.isdir(self.path):
            raise OutputError(f"cannot write {self.ref}: {self.path} is a directory")

    def stage(self, image: Image, work: WorkStore) -> None:
        fd, self._tmp = tempfile.mkstemp(dir=os.path.dirname(self.path),
                                         prefix=f".{os.path.basename(self.path)}.", suffix=".partial")
        files = members(image, _index_annotations(self.ref, self.docker))
        if self.docker:
            files.append(_docker_manifest(image, self.ref.ref))
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            write_archive(f, files, self.created)
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        if self._tmp:
            os.chmod(self._tmp, 0o644 & ~umask())
            os.replace(self._tmp, self.path)
            self._tmp = None

    def abort(self) -> None:
        if self._tmp:
            unlink_quietly(self._tmp)
            self._tmp = None


def _docker_manifest(image: Image, name: str) -> Member:
    doc = canonical_json([{
        "Config": blob_name(image.config.descriptor.digest),
        "RepoTags": [name] if name else [],
        "Layers": [blob_name(l.descriptor.digest) for l in image.layers],
    }])
    return Member("manifest.json", len(doc), lambda: io.BytesIO(doc))


class LayoutOutput:
    """`oci:DIR[:ref]`. A new layout is staged whole and renamed into place;
    an existing one gets its missing blobs, then index.json is updated under
    a lock, so other images and tags in it are kept."""

    def __init__(self, ref: Reference):
        self.ref = ref
        self.root = os.path.abspath(ref.path)
        self._tmp: str | None = None
        self._desc = None

    def check(self) -> None:
        check_layout_dir(self.root)
        if not os.path.isdir(os.path.dirname(self.root)):
            raise OutputError(f"cannot write {self.ref}: directory {os.path.dirname(self.root)} does not exist")

    def stage(self, image: Image, work: WorkStore) -> None:
        # Stage on the layout's own file system: inside it when it exists (it
        # may be a mount point), else beside it, to be renamed into place.
        existing = os.path.isdir(self.root)
        if existing:
            read_index(self.root)     # a damaged index.json stops us before anything moves
        self._tmp = tempfile.mkdtemp(dir=self.root if existing else os.path.dirname(self.root),
                                     prefix=".ocibuild-", suffix=".partial")
        os.chmod(self._tmp, 0o755 & ~umask())
        for blob in image_blobs(image):
            if existing and _has_blob(self.root, blob):
                continue
            put_blob(self._tmp, blob)
        self._desc = image.descriptor(_index_annotations(self.ref, False))

    def commit(self) -> None:
        if self._tmp is None:
            return
        if os.path.dirname(self._tmp) != self.root:
            add_to_index(self._tmp, self._desc)
            try:
                os.rename(self._tmp, self.root)     # a new layout: one step
                self._tmp = None
                return
            except OSError:
                check_layout_dir(self.root)         # created meanwhile: merge into it
        sha = os.path.join(self._tmp, "blobs", "sha256")
        if os.path.isdir(sha):
            os.makedirs(os.path.join(self.root, "blobs", "sha256"), exist_ok=True)
            for name in sorted(os.listdir(sha)):
                os.replace(os.path.join(sha, name), os.path.join(self.root, "blobs", "sha256", name))
        add_to_index(self.root, self._desc)
        self.abort()

    def abort(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class EngineOutput:
    """`docker-daemon:` / `containers-storage:`: a docker-archive loaded into
    the engine."""

    def __init__(self, ref: Reference, engine, created: int):
        self.ref, self.engine, self.created = ref, engine, created
        self._archive: ArchiveOutput | None = None

    def check(self) -> None:
        self.engine.require()

    def stage(self, image: Image, work: WorkStore) -> None:
        if any(l.descriptor.media_type.endswith("+zstd") for l in image.layers):
            self.engine.require_zstd()
        path = os.path.join(work.root, f"load-{self.engine.name}.tar")
        self._archive = ArchiveOutput(Reference("docker-archive", path, self.ref.ref),
                                      self.created, docker=True)
        self._archive.stage(image, work)
        self._archive.commit()

    def commit(self) -> None:
        if self._archive:
            self.engine.load(self._archive.path, self.ref.ref)
            self.abort()

    def abort(self) -> None:
        if self._archive:
            unlink_quietly(self._archive.path)
            self._archive = None


def _has_blob(root: str, blob) -> bool:
    try:
        return os.path.getsize(os.path.join(root, blob_name(blob.descriptor.digest))) == blob.descriptor.size
    except OSError:
        return False
