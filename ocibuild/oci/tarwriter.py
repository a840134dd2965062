"""The deterministic tar writer: the same entries give the same bytes.

Headers are built by hand (never `gettarinfo`): integer mtime, empty
user/group names, the entry's own owner and mode. The archive ends with the
two zero blocks the format requires and no padding to a record size."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable
from typing import Any, BinaryIO

from ..errors import InputError
from .digest import Reader, Writer
from .entries import DIR, FILE, HARDLINK, SYMLINK, Entry

BLOCK = 512
_TYPES = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE,
          SYMLINK: tarfile.SYMTYPE, HARDLINK: tarfile.LNKTYPE}
_CHUNK = 1 << 20


def header(e: Entry, mtime: int) -> bytes:
    info = tarfile.TarInfo(e.path)
    info.type = _TYPES[e.kind]
    info.mode = e.mode
    info.uid, info.gid = e.uid, e.gid
    info.uname = info.gname = ""
    info.mtime = int(mtime)
    info.size = e.size if e.kind == FILE else 0
    info.linkname = e.link if e.kind in (SYMLINK, HARDLINK) else ""
    # PAX: long or non-ASCII names get an extended header; nothing else does.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_tar(entries: Iterable[Entry], out: Writer, mtime: int = 0) -> None:
    for e in entries:
        out.write(header(e, mtime))
        if e.kind == FILE and (e.size or e.source):   # a source may have grown: check
            _write_content(e, out)
    end_archive(out)


def _write_content(e: Entry, out: Writer) -> None:
    if e.data is not None:
        out.write(e.data)
    elif e.source is None:
        raise ValueError(f"file entry /{e.path} has {e.size} bytes but no content")
    else:
        left = e.size
        try:
            f = open(e.source, "rb")  # noqa: SIM115 -- closed below; write errors are not read errors
        except OSError as err:
            raise InputError(f"cannot read {e.source!r}: {err.strerror}") from None
        with f:
            while left:
                chunk = _read_source(f, min(_CHUNK, left), e.source)
                if not chunk:
                    break
                out.write(chunk)        # an OSError here is the destination's (a full disk), not the source's
                left -= len(chunk)
            grew = bool(_read_source(f, 1, e.source))
        if left or grew:
            raise InputError(f"{e.source!r} changed size while it was being read; retry when it is stable")
    pad = -e.size % BLOCK
    if pad:
        out.write(b"\0" * pad)


def _read_source(f: BinaryIO, n: int, source: str) -> bytes:
    try:
        return f.read(n)
    except OSError as err:
        raise InputError(f"cannot read {source!r}: {err.strerror}") from None


def write_member(out: Writer, name: str, size: int, stream: Reader | None,
                 mtime: int = 0, kind: str = FILE) -> None:
    """One archive member whose content is streamed from `stream` (exactly
    `size` bytes; a verifying reader raises on any mismatch)."""
    out.write(header(Entry(name, kind, 0o755 if kind == DIR else 0o644, size=size), mtime))
    if stream is not None:
        left = size - _copy_in_kernel(stream, out, size)
        while left:
            chunk = stream.read(min(_CHUNK, left))
            if not chunk:
                raise InputError(f"{name} ended early while being archived")
            out.write(chunk)
            left -= len(chunk)
        pad = -size % BLOCK
        if pad:
            out.write(b"\0" * pad)


def _copy_in_kernel(stream: Any, out: Any, size: int) -> int:
    """Copy file to file with copy_file_range when both are plain files (our
    own, already hashed blobs): no trip through user space. Returns the
    bytes copied; 0 means "use the ordinary loop"."""
    try:
        src, dst = stream.fileno(), out.fileno()
        start = stream.tell()
    except (AttributeError, OSError, ValueError):
        return 0
    out.flush()
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, start + done)
            if n == 0:
                break
            done += n
    except OSError:
        if done:
            raise
        return 0
    stream.seek(start + done)
    return done


def end_archive(out: Writer) -> None:
    out.write(b"\0" * (2 * BLOCK))
