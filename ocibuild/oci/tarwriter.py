"""The deterministic tar writer: the same entries give the same bytes.

Headers are built by hand (never `gettarinfo`): integer mtime, empty
user/group names, the entry's own owner and mode. The archive ends with the
two zero blocks the format requires and no padding to a record size.

A header that fits ustar (an ASCII name and link of at most 100 bytes,
numbers within their octal fields: nearly every entry) is packed here
directly; anything else goes through `tarfile`'s PAX writer, whose output
the packed headers reproduce byte for byte (tests/test_tarwriter.py checks
the two against each other)."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable
from functools import lru_cache

from ..errors import InputError
from ..fsutil import copy_in_kernel
from .digest import Reader, Writer
from .entries import DIR, FILE, HARDLINK, SYMLINK, Entry

BLOCK = 512
_TYPES = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE,
          SYMLINK: tarfile.SYMTYPE, HARDLINK: tarfile.LNKTYPE}
_CHUNK = 1 << 20
_ZEROS = bytes(BLOCK)
# After the link name: magic "ustar\0" + version "00", empty uname, gname,
# devmajor, devminor and prefix, and the block's last 12 bytes.
_USTAR_TAIL = tarfile.POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
# The checksum counts its own 8-byte field as spaces.
_CHECKSUM_BASE = 8 * ord(" ") + sum(_USTAR_TAIL)
_OCTAL7, _OCTAL11 = 8 ** 7, 8 ** 11       # what 7 and 11 octal digits hold


def header(e: Entry, mtime: int) -> bytes:
    mtime = int(mtime)
    kind = e.kind
    typeflag = _TYPES[kind]
    name, link, size = e.path, "", 0
    if kind == FILE:
        size = e.size
    elif kind == DIR:
        if not name.endswith("/"):
            name += "/"
    else:
        link = e.link
    if (len(name) <= 100 and name.isascii() and len(link) <= 100 and link.isascii()
            and 0 <= size < _OCTAL11 and 0 <= mtime < _OCTAL11):
        owner = _mode_and_owner(e.mode & 0o7777, e.uid, e.gid)
        if owner is not None:
            return _ustar(name.encode("ascii"), owner, size, _octal11(mtime), typeflag, link.encode("ascii"))
    return _pax_header(e, mtime)


@lru_cache(maxsize=512)
def _mode_and_owner(mode: int, uid: int, gid: int) -> tuple[bytes, int] | None:
    """The mode, uid and gid fields (and their byte sum); None if an owner
    needs PAX. Few combinations per layer: kept."""
    if not (0 <= uid < _OCTAL7 and 0 <= gid < _OCTAL7):
        return None
    fields = b"%07o\0%07o\0%07o\0" % (mode, uid, gid)
    return fields, sum(fields)


@lru_cache(maxsize=64)
def _octal11(n: int) -> tuple[bytes, int]:
    fields = b"%011o\0" % n
    return fields, sum(fields)


def _ustar(name: bytes, owner: tuple[bytes, int], size: int, mtime: tuple[bytes, int], typeflag: bytes,
           link: bytes) -> bytes:
    """One ustar block, exactly as tarfile's PAX writer makes it when no
    extended header is needed (octal fields zero-padded and NUL-ended, the
    checksum as six digits, NUL, space)."""
    size_field = b"%011o\0" % size
    checksum = (_CHECKSUM_BASE + owner[1] + mtime[1] + typeflag[0]
                + sum(name) + sum(size_field) + (sum(link) if link else 0))
    return b"".join((name.ljust(100, b"\0"), owner[0], size_field, mtime[0], b"%06o\0 " % checksum, typeflag,
                     link.ljust(100, b"\0"), _USTAR_TAIL))


def _pax_header(e: Entry, mtime: int) -> bytes:
    info = tarfile.TarInfo(e.path)
    info.type = _TYPES[e.kind]
    info.mode = e.mode
    info.uid, info.gid = e.uid, e.gid
    info.uname = info.gname = ""
    info.mtime = mtime
    info.size = e.size if e.kind == FILE else 0
    info.linkname = e.link if e.kind in (SYMLINK, HARDLINK) else ""
    # PAX: long or non-ASCII names get an extended header; nothing else does.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_tar(entries: Iterable[Entry], out: Writer, mtime: int = 0) -> None:
    """Small members are gathered and handed to `out` about a CHUNK at a
    time (one hash update, one queue hand-off per MiB, not per file); a
    large file's content goes through in chunks of its own."""
    mtime = int(mtime)
    held: list[bytes] = []
    n = 0
    for e in entries:
        h = header(e, mtime)
        if e.kind != FILE or not (e.size or e.source):   # a source may have grown: check
            held.append(h)
            n += len(h)
            if n < _CHUNK:
                continue
        else:
            pad = _ZEROS[:-e.size % BLOCK]
            if e.data is not None:
                held += (h, e.data, pad)
                n += len(h) + len(e.data) + len(pad)
            elif e.source is None:
                raise ValueError(f"file entry /{e.path} has {e.size} bytes but no content")
            elif e.size <= _CHUNK:
                data = _read_small(e.source, e.size)
                held += (h, data, pad)
                n += len(h) + len(data) + len(pad)
            else:
                held.append(h)
                out.write(b"".join(held))
                held.clear()
                _stream_large(e.source, e.size, out)
                held.append(pad)
                n = len(pad)
                continue
            if n < _CHUNK:
                continue
        out.write(b"".join(held))
        held.clear()
        n = 0
    held.append(_ZEROS * 2)
    out.write(b"".join(held))


def _open_source(source: str) -> int:
    try:
        return os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise InputError(f"cannot read {source!r}: {err.strerror}") from None


def _read(fd: int, n: int, source: str) -> bytes:
    try:
        return os.read(fd, n)
    except OSError as err:
        raise InputError(f"cannot read {source!r}: {err.strerror}") from None


def _changed(source: str) -> InputError:
    return InputError(f"{source!r} changed size while it was being read; retry when it is stable")


def _read_small(source: str, size: int) -> bytes:
    """The whole content of a file scanned at `size` bytes; refused if it
    now holds more or fewer (read up to one byte past `size`, to EOF)."""
    fd = _open_source(source)
    try:
        data = _read(fd, size + 1, source)
        if len(data) == size and size:
            if _read(fd, 1, source):
                raise _changed(source)
        elif len(data) != size:
            parts, got = [data], len(data)
            while 0 < got <= size and (more := _read(fd, size + 1 - got, source)):   # a short read
                parts.append(more)
                got += len(more)
            if got != size or _read(fd, 1, source):
                raise _changed(source)
            data = b"".join(parts)
    finally:
        os.close(fd)
    return data


def _stream_large(source: str, size: int, out: Writer) -> None:
    fd = _open_source(source)
    try:
        left = size
        while left:
            chunk = _read(fd, min(_CHUNK, left), source)
            if not chunk:
                break
            out.write(chunk)        # an OSError here is the destination's (a full disk), not the source's
            left -= len(chunk)
        if left or _read(fd, 1, source):
            raise _changed(source)
    finally:
        os.close(fd)


def write_member(out: Writer, name: str, size: int, stream: Reader | None,
                 mtime: int = 0, kind: str = FILE) -> None:
    """One archive member whose content is streamed from `stream` (exactly
    `size` bytes; a verifying reader raises on any mismatch)."""
    out.write(header(Entry(name, kind, 0o755 if kind == DIR else 0o644, size=size), mtime))
    if stream is not None:
        left = size - copy_in_kernel(stream, out, size)
        while left:
            chunk = stream.read(min(_CHUNK, left))
            if not chunk:
                raise InputError(f"{name} ended early while being archived")
            out.write(chunk)
            left -= len(chunk)
        pad = -size % BLOCK
        if pad:
            out.write(b"\0" * pad)


def end_archive(out: Writer) -> None:
    out.write(b"\0" * (2 * BLOCK))
