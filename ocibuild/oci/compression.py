"""Layer compression. Each compressor is pinned (library and level) because the
compressed digest depends on the exact deflate/zstd code; the diff_id (of the
uncompressed tar) does not. gzip uses ISA-L through `isal`, chosen by
measurement (README, "Compression"); its header is written here with no time,
no name and OS 255 so it is the same on every host and Python."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

import zstandard
from isal import isal_zlib

from ..errors import InputError
from .digest import ClosingWriter, Writer
from .model import OCI_LAYER

GZIP_LEVEL = 2     # ISA-L's default: zlib -1's ratio at ~5x its speed here
ZSTD_LEVEL = 3


class _GzipWriter:
    def __init__(self, raw: Writer):
        self._raw = raw
        self._deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        raw.write(GZIP_MAGIC + b"\x08\x00" + b"\0\0\0\0" + b"\x00\xff")  # deflate, no flags/time, OS 255

    def write(self, data) -> int:
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += len(data)
        self._raw.write(self._deflate.compress(data))
        return len(data)

    def close(self) -> None:
        self._raw.write(self._deflate.flush())
        self._raw.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


class _ZstdWriter:
    def __init__(self, raw: Writer):
        # zstd's output is the same for any number of worker threads >= 1
        # (not for 0, its single-threaded mode): use them all.
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, write_checksum=True, write_content_size=False,
            threads=max(1, os.cpu_count() or 1))
        self._w = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            cast(BinaryIO, raw), closefd=False)

    def write(self, data) -> int:
        return self._w.write(data)

    def close(self) -> None:
        self._w.flush(zstandard.FLUSH_FRAME)
        self._w.close()


class _PlainWriter:
    def __init__(self, raw: Writer):
        self._raw = raw

    def write(self, data) -> int:
        return self._raw.write(data)

    def close(self) -> None:
        pass


class _FixedBlocks:
    """Feeds a compressor in blocks of exactly BLOCK bytes. ISA-L's output (and
    zstd's, in streaming mode) depends on how the input is split into calls,
    so the split is made a function of the bytes alone, not of the writer."""
    BLOCK = 1 << 20

    def __init__(self, inner: ClosingWriter):
        self._inner = inner
        self._buf = bytearray()

    def write(self, data) -> int:
        self._buf += data
        if len(self._buf) >= self.BLOCK:
            view = memoryview(self._buf)
            end = len(self._buf) - len(self._buf) % self.BLOCK
            for start in range(0, end, self.BLOCK):
                self._inner.write(view[start:start + self.BLOCK])
            view.release()
            del self._buf[:end]
        return len(data)

    def close(self) -> None:
        if self._buf:
            self._inner.write(bytes(self._buf))
            self._buf.clear()
        self._inner.close()


@dataclass(frozen=True)
class Compression:
    name: str
    media_type: str
    writer: Callable[[Writer], ClosingWriter]


COMPRESSIONS = {
    "gzip": Compression("gzip", OCI_LAYER + "+gzip", lambda raw: _FixedBlocks(_GzipWriter(raw))),
    "zstd": Compression("zstd", OCI_LAYER + "+zstd", lambda raw: _FixedBlocks(_ZstdWriter(raw))),
    "none": Compression("none", OCI_LAYER, _PlainWriter),
}


def compression(name: str) -> Compression:
    try:
        return COMPRESSIONS[name]
    except KeyError:
        raise InputError(f"unknown compression {name!r}: use gzip, zstd or none") from None


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff(head: bytes) -> str:
    """The compression of a blob, from its first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def of_media_type(media_type: str) -> str:
    if media_type.endswith("gzip"):
        return "gzip"
    if media_type.endswith("zstd"):
        return "zstd"
    return "none"


def decompressed(raw: BinaryIO, name: str) -> BinaryIO:
    """A read stream of the uncompressed bytes."""
    if name == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if name == "zstd":
        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw, closefd=False))
    return raw
