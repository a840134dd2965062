"""sha256 digests, and streams that hash or verify what passes through them."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from ..errors import BlobError

CHUNK = 1 << 20
# The one digest grammar ocibuild accepts (what it writes, and what it reads).
HEX = r"[0-9a-f]{64}"
DIGEST = re.compile(rf"sha256:{HEX}", re.ASCII)


class Reader(Protocol):
    """A byte stream to read from (a file, a verifying reader, a slice)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


Data = bytes | bytearray | memoryview


class Writer(Protocol):
    """A byte stream to write to (a file, a hasher, a compressor)."""

    def write(self, data: Data, /) -> int: ...


class ClosingWriter(Writer, Protocol):
    """A writer that must be closed to finish its output (a compressor)."""

    def close(self) -> None: ...


def is_digest(text: object) -> bool:
    return isinstance(text, str) and DIGEST.fullmatch(text) is not None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Return `digest` if it is a lowercase sha256 digest, else raise."""
    if not is_digest(digest):
        raise BlobError(f"unsupported or malformed digest {digest!r}")
    return digest


def hex_of(digest: str) -> str:
    return check_digest(digest).split(":", 1)[1]


class HashingWriter:
    """A write-only stream that counts and hashes bytes before passing them on."""

    def __init__(self, sink: Writer | None = None):
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Data) -> int:
        self._hash.update(data)
        self.size += len(data)
        if self._sink is not None:
            self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._sink, "flush", None)
        if flush is not None:
            flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class VerifyingReader:
    """Reads at most `size` bytes; at EOF checks the size and digest, raising
    BlobError naming `what` on a mismatch. Reading past `size` never happens,
    so a blob with trailing garbage fails on digest, not on memory."""

    def __init__(self, raw: Reader, digest: str, size: int, what: str):
        self._raw = raw
        self._want = digest
        self._left = size
        self._size = size
        self._what = what
        self._hash = hashlib.sha256()
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        if self._left <= 0:
            self._finish()
            return b""
        n = min(n, self._left)
        data = self._raw.read(n)
        if not data:
            raise BlobError(
                f"{self._what} is truncated: {self._size - self._left} of "
                f"{self._size} bytes; rewrite or re-fetch it")
        self._left -= len(data)
        self._hash.update(data)
        if self._left == 0:
            self._finish()
        return data

    def _finish(self) -> None:
        if self._checked:
            return
        self._checked = True
        got = "sha256:" + self._hash.hexdigest()
        if got != self._want:
            raise BlobError(
                f"{self._what} is corrupt: its content hashes to {got}, "
                f"not {self._want}; rewrite or re-fetch it")

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK):
            parts.append(chunk)
        self._finish()
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def file_digest(path: str) -> str | None:
    """The sha256 digest of a file's content; None if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while data := f.read(CHUNK):
                h.update(data)
    except OSError:
        return None
    return "sha256:" + h.hexdigest()


def copy_stream(src, dst, chunk: int = CHUNK) -> int:
    """Copy until EOF; return the byte count."""
    total = 0
    while data := src.read(chunk):
        dst.write(data)
        total += len(data)
    return total
