"""Blobs and layers: content known by descriptor, readable again on demand.

A blob is made from an opener (a function returning a fresh stream), never a
one-shot stream, so every output can read it; readers verify size and digest
as they go. The work store keeps blobs ocibuild makes itself in one temporary
directory, each written to a temporary file and renamed into place."""

from __future__ import annotations

import io
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from ..fsutil import staging_prefix, sweep_stale, unlink_quietly
from .compression import Compression, decompressed, of_media_type
from .digest import CHUNK, HashingWriter, VerifyingReader, hex_of
from .entries import Entry
from .model import Descriptor
from .tarwriter import write_tar


@dataclass(frozen=True)
class Blob:
    descriptor: Descriptor
    opener: Callable[[], BinaryIO]
    where: str = "blob"        # names the blob in errors: "layer sha256:… of oci:base"
    trusted: bool = False      # made by this run (hashed as written): no need to re-verify
    # A file of this run's work store holding exactly the blob (trusted ones
    # only): an output on the same file system may hard-link it, not copy it.
    local: str = ""

    def open(self) -> BinaryIO:
        if self.trusted:
            return self.opener()
        d = self.descriptor
        # A VerifyingReader reads like the file it wraps (read, close, with).
        return cast(BinaryIO, VerifyingReader(self.opener(), d.digest, d.size, self.where))

    def read(self) -> bytes:
        with self.open() as r:
            return r.read()


@dataclass(frozen=True)
class Layer(Blob):
    diff_id: str = ""

    def open_tar(self) -> BinaryIO:
        """The uncompressed tar, for reading entries (verified on the compressed side)."""
        return decompressed(self.open(), of_media_type(self.descriptor.media_type))


def bytes_blob(media_type: str, data: bytes, where: str = "blob") -> Blob:
    return Blob(Descriptor.of(media_type, data), lambda: io.BytesIO(data), where, trusted=True)


WORK_TAG = "ocibuild-"      # work directories: ocibuild-<pid>-<random>


class WorkStore:
    """A temporary content-addressed directory for the blobs of one run."""

    def __init__(self, parent: str | None = None):
        parent = parent or tempfile.gettempdir()
        sweep_stale(parent, WORK_TAG)           # work directories of runs that were killed
        self.root = tempfile.mkdtemp(prefix=staging_prefix(WORK_TAG), dir=parent)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def path(self, digest: str) -> str:
        return os.path.join(self.root, hex_of(digest))

    def write_layer(self, entries: list[Entry], comp: Compression, mtime: int = 0) -> Layer:
        """Stream entries → tar → (hash: diff_id) → compressor → (hash: digest) → file.
        Memory stays flat: nothing larger than a few chunks is held.

        Two stages on two threads (sha256, the compressors and file writes
        release the GIL): the tar and its diff_id here; compressing, the
        digest and the write there. Uncompressed, the blob is the tar,
        hashed once, here, and only the write is on the other thread."""
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".partial")
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK) as f:
                if comp.name == "none":
                    with ThreadedWriter(f.write) as pipe:
                        blob = tar = HashingWriter(pipe)
                        write_tar(entries, tar, mtime)
                else:
                    blob = HashingWriter(f)
                    comp_stream = comp.writer(blob)
                    with ThreadedWriter(comp_stream.write) as pipe:
                        tar = HashingWriter(pipe)
                        write_tar(entries, tar, mtime)
                    comp_stream.close()
            path = self.path(blob.digest)
            os.replace(tmp, path)
        except BaseException:
            unlink_quietly(tmp)
            raise
        desc = Descriptor(comp.media_type, blob.digest, blob.size)
        return Layer(desc, lambda: open(path, "rb"), f"layer {blob.digest}", trusted=True, local=path,
                     diff_id=tar.digest)


class ThreadedWriter:
    """A write-only stream whose bytes are consumed by `sink` on a worker
    thread, in order, in chunks of about CHUNK bytes. The bounded queue keeps
    memory flat; an error in the worker is raised in the writer."""

    def __init__(self, sink: Callable[[bytes], object], depth: int = 4):
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(depth)
        self._buf = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sink(chunk)
                except BaseException as e:     # handed to the writer's thread
                    self._error = e

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        if not self._buf and len(data) >= CHUNK and type(data) is bytes:
            self._queue.put(data)           # immutable and large enough: handed on as it is
            return len(data)
        self._buf += data
        if len(self._buf) >= CHUNK:
            self._queue.put(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self._buf:
            self._queue.put(bytes(self._buf))
        self._queue.put(None)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error

