"""Outputs that are local files: `oci:` layouts and `oci-archive:` /
`docker-archive:` tars. Each is staged beside its destination and renamed
into place on commit."""

from __future__ import annotations

import os
import shutil
import tempfile

from ..errors import OutputError
from ..fsutil import publish, staging_prefix, sweep_stale, umask, unlink_quietly
from ..oci.blobs import Blob, WorkStore
from ..oci.imageset import ImageSet
from ..oci.layout import (
    add_to_index,
    check_layout_dir,
    docker_archive_files,
    has_blob,
    image_blobs,
    index_annotations,
    index_entries,
    layout_files,
    merge_into,
    put_blob,
    read_index,
    write_archive,
)
from ..oci.model import Descriptor
from ..oci.reference import FileRef

STAGING_TAG = ".ocibuild-"   # a layout staged beside or inside its destination


class ArchiveOutput:
    """`oci-archive:` or `docker-archive:`: one tar holding the OCI layout; the
    docker flavour adds the `manifest.json` that `docker load` reads, and
    holds one platform (what docker load takes)."""
    commit_first = False

    def __init__(self, ref: FileRef, created: int):
        self.ref, self.created = ref, created
        self.docker = ref.transport == "docker-archive"
        self.single_platform = self.docker
        self.written = 0
        self.path = os.path.abspath(ref.path)
        self._tmp: str | None = None

    def check(self) -> None:
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise OutputError(f"cannot write {self.ref}: directory {parent} does not exist")
        if os.path.isdir(self.path):
            raise OutputError(f"cannot write {self.ref}: {self.path} is a directory")

    def stage(self, images: ImageSet, work: WorkStore) -> None:
        parent, tag = os.path.dirname(self.path), f".{os.path.basename(self.path)}."
        sweep_stale(parent, tag, ".partial")
        fd, self._tmp = tempfile.mkstemp(dir=parent, prefix=staging_prefix(tag), suffix=".partial")
        files = (docker_archive_files(images.images[0], self.ref.ref) if self.docker
                 else layout_files(images, index_annotations(self.ref.ref, docker=False)))
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            write_archive(f, files, self.created)
            f.flush()
            os.fsync(f.fileno())
            self.written = f.tell()

    def commit(self) -> None:
        if self._tmp:
            publish(self._tmp, self.path)
            self._tmp = None

    def abort(self) -> None:
        if self._tmp:
            unlink_quietly(self._tmp)
            self._tmp = None


class LayoutOutput:
    """`oci:DIR[:ref]`. A new layout is staged whole and renamed into place;
    an existing one gets its missing blobs, then index.json is updated under
    a lock, so other images and tags in it are kept."""
    commit_first = False
    single_platform = False

    def __init__(self, ref: FileRef):
        self.ref = ref
        self.root = os.path.abspath(ref.path)
        self.written = 0
        self._tmp: str | None = None
        self._descs: list[Descriptor] = []
        self._blobs: list[Blob] = []

    def check(self) -> None:
        check_layout_dir(self.root)
        if not os.path.isdir(os.path.dirname(self.root)):
            raise OutputError(f"cannot write {self.ref}: directory {os.path.dirname(self.root)} does not exist")

    def stage(self, images: ImageSet, work: WorkStore) -> None:
        # Stage on the layout's own file system: inside it when it exists (it
        # may be a mount point), else beside it, to be renamed into place.
        existing = os.path.isdir(self.root)
        if existing:
            read_index(self.root)     # a damaged index.json stops us before anything moves
        parent = self.root if existing else os.path.dirname(self.root)
        sweep_stale(parent, STAGING_TAG, ".partial")
        self._tmp = tempfile.mkdtemp(dir=parent, prefix=staging_prefix(STAGING_TAG), suffix=".partial")
        publish_dir_mode(self._tmp)
        self._blobs = image_blobs(images)
        for blob in self._blobs:
            if existing and has_blob(self.root, blob.descriptor):
                continue
            put_blob(self._tmp, blob)
            self.written += blob.descriptor.size
        self._descs = index_entries(images, index_annotations(self.ref.ref, docker=False))

    def commit(self) -> None:
        tmp, descs = self._tmp, self._descs
        if tmp is None or not descs:
            return
        if os.path.dirname(tmp) != self.root:
            add_to_index(tmp, descs)
            try:
                os.rename(tmp, self.root)     # a new layout: one step
                self._tmp = None
                return
            except OSError:
                check_layout_dir(self.root)         # created meanwhile: merge into it
        merge_into(self.root, tmp, self._blobs, descs)
        self.abort()

    def abort(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def publish_dir_mode(path: str) -> None:
    """A staged directory gets the mode a new directory would have (mkdtemp makes it 0700)."""
    os.chmod(path, 0o755 & ~umask())

