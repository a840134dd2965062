"""Blobs and layers: content known by descriptor, readable again on demand.

A blob is made from an opener (a function returning a fresh stream), never a
one-shot stream, so every output can read it; readers verify size and digest
as they go. The work store keeps blobs ocibuild makes itself in one temporary
directory, each written to a temporary file and renamed into place."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Callable

from .compression import Compression, decompressed, of_media_type, sniff
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

    def open(self) -> BinaryIO:
        if self.trusted:
            return self.opener()
        d = self.descriptor
        return VerifyingReader(self.opener(), d.digest, d.size, self.where)

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


class WorkStore:
    """A temporary content-addressed directory for the blobs of one run."""

    def __init__(self, parent: str | None = None):
        self.root = tempfile.mkdtemp(prefix="ocibuild-", dir=parent)

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
        Memory stays flat: nothing larger than one chunk is held."""
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".partial")
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK) as f:
                blob = HashingWriter(f)
                if comp.name == "none":          # the blob is the tar: hash it once
                    tar = blob
                    write_tar(entries, tar, mtime)
                else:
                    comp_stream = comp.writer(blob)
                    tar = HashingWriter(comp_stream)
                    write_tar(entries, tar, mtime)
                    comp_stream.close()
            path = self.path(blob.digest)
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
        desc = Descriptor(comp.media_type, blob.digest, blob.size)
        return Layer(desc, lambda: open(path, "rb"), f"layer {blob.digest}", trusted=True,
                     diff_id=tar.digest)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def sniff_stream(opener: Callable[[], BinaryIO]) -> str:
    with opener() as f:
        return sniff(f.read(4))
