"""Reading untrusted archives: a gzip inflater that counts bytes as they
inflate, a strict tar reader written for hostile input (no `tarfile`: its
extension headers are read whole into memory before any check), and an
extractor that only ever writes into directories it created itself.

Every refusal is a PackageError naming the entry and the rule it broke."""

from __future__ import annotations

import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import PackageError
from ..oci.compression import GZIP_MAGIC
from ..oci.entries import DIR, FILE, HARDLINK, SYMLINK, kind_name
from ..progress import human_size
from .common import Limits, show

BLOCK = 512
_ZERO = bytes(BLOCK)
_IN_CHUNK = 1 << 16
_OUT_CHUNK = 1 << 18

_SPECIAL = {b"3": "character device", b"4": "block device", b"6": "fifo"}
_UNSUPPORTED = {b"S": "a GNU sparse file", b"V": "a volume label", b"M": "a multi-volume continuation",
                b"N": "an old GNU long-name record", b"D": "a GNU directory dump"}
_PAX_STRINGS = ("path", "linkpath", "uname", "gname")
_PAX_NUMBERS = {  # the records Go parses (and refuses the archive when they do not parse)
    "uid": re.compile(rb"[+-]?[0-9]{1,18}"), "gid": re.compile(rb"[+-]?[0-9]{1,18}"),
    "size": re.compile(rb"[+-]?[0-9]{1,18}"),
    "mtime": re.compile(rb"[+-]?[0-9]{1,18}(\.[0-9]*)?"), "atime": re.compile(rb"[+-]?[0-9]{1,18}(\.[0-9]*)?"),
    "ctime": re.compile(rb"[+-]?[0-9]{1,18}(\.[0-9]*)?"),
}
_MAX_SYMLINK_HOPS = 40   # Linux's own limit (ELOOP)
_MAX_RESOLVE_STEPS = 1_000_000   # path components walked checking all symlinks of one archive
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Read = Callable[[int], bytes]


class FileWindow:
    """Bytes [start, end) of an open file, read with pread (no shared offset),
    optionally hashed as they are read."""

    def __init__(self, fd: int, start: int, end: int, hasher=None):
        self.fd, self.pos, self.end, self.hasher = fd, start, end, hasher

    def read(self, n: int) -> bytes:
        n = min(n, self.end - self.pos)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.pos)
        if not data:
            raise PackageError("the package file shrank while it was being read; retry when it is stable "
                               "(file changed)", rule="file changed")
        self.pos += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        return data

    def finish(self) -> None:
        """Read (and hash) whatever is left."""
        while self.read(1 << 20):
            pass


class Inflater:
    """A gzip stream (one or more members) read through `read`, refused as
    soon as its output passes `limit` bytes: a bomb stops early, in bounded
    memory, whatever its headers claim. Corrupt or truncated data, and
    anything but zero padding after the last member, are refused."""

    def __init__(self, read: Read, limit: int, what: str, max_members: int):
        self._read = read
        self.limit = limit
        self.what = what
        self._max_members = max_members
        self._d: zlib._Decompress | None = None
        self._pending = b""
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self.members = 0
        self.total = 0

    @property
    def remaining(self) -> int:
        """Bytes a reader may still take before the limit (read-ahead not counted)."""
        return self.limit - self.total + (len(self._buf) - self._pos)

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at the end of the stream."""
        while len(self._buf) - self._pos < n and self._more():
            pass
        end = min(self._pos + n, len(self._buf))
        out = bytes(self._buf[self._pos:end])
        self._pos = end
        if self._pos > _OUT_CHUNK:
            del self._buf[:self._pos]
            self._pos = 0
        return out

    def drain(self) -> None:
        """Inflate the rest (verifying it, counting it) and drop it."""
        while self._more():
            del self._buf[:]
            self._pos = 0

    def _input(self) -> bytes:
        return self._read(_IN_CHUNK)

    def _more(self) -> bool:
        while not self._eof:
            if self._d is None and not self._start_member():
                self._eof = True
                return False
            if not self._pending:
                self._pending = self._input()
                if not self._pending:
                    raise PackageError(f"{self.what} is truncated: its gzip stream ends early (truncated)",
                                       rule="truncated")
            d = self._d
            assert d is not None
            try:
                out = d.decompress(self._pending, _OUT_CHUNK)
            except zlib.error as e:
                why = str(e).rpartition(": ")[2] or "bad deflate data"
                raise PackageError(f"{self.what} is corrupt: {why} (corrupt gzip data)",
                                   rule="corrupt gzip data") from None
            if d.eof:
                self._pending = d.unused_data
                self._d = None
            else:
                self._pending = d.unconsumed_tail
            if out:
                self.total += len(out)
                if self.total > self.limit:
                    raise PackageError(
                        f"{self.what} inflates to more than {human_size(self.limit)} (size limit); "
                        "it may be a decompression bomb", rule="size limit")
                self._buf += out
                return True
        return False

    def _start_member(self) -> bool:
        """At a member boundary: start the next member, or report the end."""
        while True:
            if not self._pending:
                self._pending = self._input()
                if not self._pending:
                    if self.members == 0:
                        raise PackageError(f"{self.what} is empty (empty)", rule="empty")
                    return False
            if self.members and self._pending[0] == 0:      # zero padding after the last member
                self._pending = self._pending.lstrip(b"\0")
                continue
            if len(self._pending) < 2:
                more = self._input()
                if more:
                    self._pending += more
                    continue
            if self._pending[:2] != GZIP_MAGIC:
                if self.members == 0:
                    raise PackageError(f"{self.what} is not gzip-compressed (not gzip)", rule="not gzip")
                raise PackageError(f"{self.what} has data after the end of its gzip stream (trailing data)",
                                   rule="trailing data")
            self.members += 1
            if self.members > self._max_members:
                raise PackageError(f"{self.what} has more than {self._max_members} gzip members "
                                   "(entry limit)", rule="entry limit")
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            return True


@dataclass
class TarMember:
    name: str        # as in the archive (decoded), for messages
    kind: str        # FILE, DIR, SYMLINK, HARDLINK, or a special kind (refused by users)
    size: int        # FILE: bytes of data
    link: str        # SYMLINK / HARDLINK target as written
    mode: int        # permission bits (0o7777)
    raw_mode: int = 0  # the header's whole mode field, type bits included (as Go reads it)


@dataclass
class _Extensions:
    pax: dict[str, bytes] = field(default_factory=dict)
    long_name: bytes | None = None
    long_link: bytes | None = None
    seen_x: bool = False

    @property
    def pending(self) -> bool:
        return self.seen_x or self.long_name is not None or self.long_link is not None


class TarReader:
    """Headers and data of a tar stream (ustar, pax, GNU long names), with
    every field checked before it is believed. Iterate for members; read a
    member's data with `read` before asking for the next one (what is left
    unread is skipped)."""

    def __init__(self, stream, limits: Limits, where: str, size_budget: Callable[[], int]):
        self._stream = stream
        self._limits = limits
        self.where = where
        self._budget = size_budget
        self._left = 0          # data bytes of the current member not yet read
        self._pad = 0
        self.headers = 0
        self._last = ""

    # -- low level ---------------------------------------------------------
    def _exact(self, n: int, what: str | None = None) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            what = what or f"entry {show(self._last)}"
            raise PackageError(f"{self.where} is truncated: {what} ends early (truncated)", rule="truncated")
        return data

    def _skip(self, n: int) -> None:
        while n:
            got = self._stream.read(min(n, 1 << 20))
            if not got:
                raise PackageError(f"{self.where} is truncated: entry {show(self._last)} ends early (truncated)",
                                   rule="truncated")
            n -= len(got)

    def read(self, n: int) -> bytes:
        n = min(n, self._left)
        if n <= 0:
            return b""
        data = self._exact(n)
        self._left -= n
        return data

    def _finish_member(self) -> None:
        self._skip(self._left + self._pad)
        self._left = self._pad = 0

    # -- headers -----------------------------------------------------------
    def __iter__(self) -> Iterator[TarMember]:
        while True:
            self._finish_member()
            m = self._next()
            if m is None:
                return
            yield m

    def _next(self) -> TarMember | None:
        ext = _Extensions()              # the extension headers read for the coming entry
        while True:
            blk = self._stream.read(BLOCK)
            if not blk:
                if ext.pending:
                    raise PackageError(f"{self.where} is truncated: an extended header has no entry (truncated)",
                                       rule="truncated")
                return None          # end of data on a header boundary: an archive without end blocks
            if len(blk) != BLOCK:
                raise PackageError(f"{self.where} is truncated: a header ends early (truncated)", rule="truncated")
            if blk == _ZERO:
                if ext.pending:
                    raise PackageError(f"{self.where} is corrupt: an extended header has no entry (corrupt tar)",
                                       rule="corrupt tar")
                self._end_of_archive()
                return None
            self.headers += 1
            if self.headers > self._limits.max_entries:
                raise PackageError(f"{self.where} holds more than {self._limits.max_entries} entries "
                                   "(entry limit)", rule="entry limit")
            self._check_sum(blk)
            self._check_header(blk)
            flag = blk[156:157]
            size_ = self._number(blk[124:136], "size")
            if flag == b"g":
                # Go returns a global header as an entry of its own (the peer's
                # name rule then refuses it) and drops pending extensions.
                self._ambiguous("a global pax header (g)", "global pax header")
            if flag in (b"x", b"L", b"K"):
                self._extension(flag, size_, ext)
                continue
            if "path" in ext.pax and ext.long_name is not None:
                self._ambiguous("both a pax path and a GNU long name", "ambiguous header")
            if "linkpath" in ext.pax and ext.long_link is not None:
                self._ambiguous("both a pax linkpath and a GNU long link", "ambiguous header")
            return self._member(blk, flag, size_, ext.pax, ext.long_name, ext.long_link)

    def _extension(self, flag: bytes, size_: int, ext: _Extensions) -> None:
        """Read an x, L or K header's data into `ext`. Readers disagree on
        repeated or mixed extensions (Go: a second x replaces the first
        whole; a GNU long name beats a pax path): an archive that needs the
        answer is refused, not guessed at."""
        cap = self._limits.max_header if flag == b"x" else self._limits.max_path + 1
        if size_ > cap:
            what = "pax header" if flag == b"x" else "GNU long name"
            raise PackageError(f"{self.where} has a {what} of {human_size(size_)}, more than "
                               f"{human_size(cap)} (header limit)", rule="header limit")
        data = self._exact(size_, "an extended header")
        self._skip(-size_ % BLOCK)
        if flag == b"x":
            if ext.seen_x:
                self._ambiguous("two pax headers (x) for one entry", "ambiguous header")
            ext.seen_x, ext.pax = True, self._pax(data)
        elif flag == b"L":
            if ext.long_name is not None:
                self._ambiguous("two GNU long names for one entry", "ambiguous header")
            ext.long_name = data.split(b"\0", 1)[0]
        else:
            if ext.long_link is not None:
                self._ambiguous("two GNU long links for one entry", "ambiguous header")
            ext.long_link = data.split(b"\0", 1)[0]

    def _member(self, blk: bytes, flag: bytes, size_: int, pax: dict, long_name, long_link) -> TarMember:
        raw = blk[0:100].split(b"\0", 1)[0]
        if blk[257:263] == b"ustar\0":           # POSIX ustar: a prefix may hold the start of the name
            prefix = blk[345:500].split(b"\0", 1)[0]
            if prefix:
                raw = prefix + b"/" + raw
        raw = pax.get("path", long_name if long_name is not None else raw)
        link = pax.get("linkpath", long_link if long_link is not None else blk[157:257].split(b"\0", 1)[0])
        if "size" in pax:
            text = pax["size"]
            if not text.isascii() or not text.isdigit() or len(text) > 18:
                raise PackageError(f"{self.where} is corrupt: bad pax size (corrupt tar)", rule="corrupt tar")
            size_ = int(text)
        name = self._decode(raw, raw)
        self._last = name
        link_s = self._decode(link, raw) if link else ""
        raw_mode = self._number(blk[100:108], "mode")
        mode = raw_mode & 0o7777
        if flag in (b"0", b"\0"):
            kind = DIR if flag == b"\0" and name.endswith("/") else FILE
        elif flag == b"5":
            kind = DIR
        elif flag == b"2":
            kind = SYMLINK
        elif flag == b"1":
            kind = HARDLINK
        elif flag in _SPECIAL:
            kind = _SPECIAL[flag]
        else:
            what = _UNSUPPORTED.get(flag, f"of unknown type {flag.decode('latin-1')!r}")
            raise PackageError(f"{self.where} entry {show(name)} is {what}, which a chaincode package "
                               "cannot hold (unsupported entry type)", entry=name, rule="unsupported entry type")
        if any(k.startswith("GNU.sparse") for k in pax):
            raise PackageError(f"{self.where} entry {show(name)} is a sparse file, which a chaincode "
                               "package cannot hold (unsupported entry type)", entry=name,
                               rule="unsupported entry type")
        if kind == FILE:
            budget, limit = self._budget(), self._limits.max_bytes
            if size_ > budget:
                room = (f"the {human_size(limit)}" if size_ > limit
                        else f"the {human_size(max(budget, 0))} left of the {human_size(limit)}")
                raise PackageError(f"{self.where} entry {show(name)} is {human_size(size_)}, more than {room} "
                                   "the package may inflate to (size limit)", entry=name, rule="size limit")
            self._left, self._pad = size_, -size_ % BLOCK
        return TarMember(name, kind, size_ if kind == FILE else 0, link_s, mode, raw_mode)

    def _decode(self, raw: bytes, entry_raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = entry_raw.decode("utf-8", "surrogateescape")
            what = "name" if raw is entry_raw else "link target"
            raise PackageError(f"{self.where} entry {show(shown)} has a {what} that is not valid UTF-8 "
                               "(non-UTF-8 name)", entry=shown, rule="non-UTF-8 name") from None

    def _check_sum(self, blk: bytes) -> None:
        try:
            stored = self._number(blk[148:156], "checksum")
        except PackageError:
            stored = -1
        unsigned = sum(blk[:148]) + sum(blk[156:]) + 8 * 32
        if stored != unsigned and stored != unsigned - 256 * sum(1 for b in blk[:148] + blk[156:] if b > 127):
            # (the second sum: old tars computed the checksum over signed chars)
            if self.headers == 1:
                raise PackageError(f"{self.where} is not a tar archive (bad header checksum)",
                                   rule="bad header checksum")
            raise PackageError(f"{self.where} is corrupt: bad header checksum after entry {show(self._last)} "
                               "(corrupt tar)", rule="corrupt tar")

    def _number(self, field: bytes, what: str) -> int:
        """An octal header field read as Go's archive/tar reads it (spaces
        and NULs trimmed at both ends, the rest octal digits). Base-256
        numbers (GNU, for huge values) no chaincode needs: refused, since
        readers disagree on them (sign, which fields allow them)."""
        if field[:1] and field[0] & 0x80:
            raise PackageError(f"{self.where} has a base-256 {what} field in a header, which a chaincode "
                               "package does not need and readers disagree on (ambiguous header)",
                               rule="ambiguous header")
        text = field.strip(b" \0")
        if not text:
            return 0
        if any(c not in b"01234567" for c in text):
            raise PackageError(f"{self.where} is corrupt: bad {what} field in a header (corrupt tar)",
                               rule="corrupt tar")
        return int(text, 8)

    def _check_header(self, blk: bytes) -> None:
        """The numeric fields Go parses in every header block (and refuses
        the archive when they do not parse), and header shapes Go reads
        differently (STAR; a GNU header whose atime/ctime hide a prefix)."""
        for start, end, what in ((100, 108, "mode"), (108, 116, "uid"), (116, 124, "gid"),
                                 (136, 148, "mtime")):
            self._number(blk[start:end], what)
        magic = blk[257:263]
        if magic == b"ustar\0" and blk[508:512] == b"tar\0":
            self._ambiguous("a STAR header (its name prefix is read differently)", "ambiguous header")
        gnu = magic == b"ustar " and blk[263:265] == b" \0"
        if magic == b"ustar\0" or gnu:
            for start, end, what in ((329, 337, "devmajor"), (337, 345, "devminor")):
                self._number(blk[start:end], what)
        if gnu:
            for start, end, what in ((345, 357, "atime"), (357, 369, "ctime")):
                if blk[start] != 0:
                    try:
                        self._number(blk[start:end], what)
                    except PackageError:
                        # Go then reads these bytes as a ustar name prefix.
                        self._ambiguous(f"a GNU header whose {what} is not a number", "ambiguous header")

    def _ambiguous(self, what: str, rule: str) -> None:
        raise PackageError(f"{self.where} has {what}; readers disagree on what it means, so the package "
                           f"is refused ({rule})", rule=rule)

    def _end_of_archive(self) -> None:
        """After the first zero block: a second one, or the end of the data,
        as Go requires; anything else is refused, not silently dropped."""
        blk = self._stream.read(BLOCK)
        if not blk or blk == _ZERO:
            return
        if len(blk) != BLOCK:
            raise PackageError(f"{self.where} is truncated: its end-of-archive marker ends early (truncated)",
                               rule="truncated")
        raise PackageError(f"{self.where} has data after a zero block, which ends a tar archive for some "
                           "readers and not others (data after end of archive)", rule="data after end of archive")

    def _pax(self, data: bytes) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        pos = 0
        while pos < len(data):
            sp = data.find(b" ", pos, pos + 21)
            if sp <= pos or not data[pos:sp].isdigit():
                raise PackageError(f"{self.where} is corrupt: bad pax record (corrupt tar)", rule="corrupt tar")
            length = int(data[pos:sp])
            rec = data[pos:pos + length]
            if length <= sp - pos + 1 or len(rec) != length or not rec.endswith(b"\n") or b"=" not in rec:
                raise PackageError(f"{self.where} is corrupt: bad pax record (corrupt tar)", rule="corrupt tar")
            key_b, _, value = rec[sp - pos + 1:-1].partition(b"=")
            key = key_b.decode("utf-8", "replace")
            if not key or b"\0" in key_b:
                raise PackageError(f"{self.where} is corrupt: a pax record with an empty or NUL key (corrupt tar)",
                                   rule="corrupt tar")
            if key in out:
                self._ambiguous(f"the pax record {key!r} twice in one header", "ambiguous header")
            if key in _PAX_STRINGS and b"\0" in value:
                raise PackageError(f"{self.where} is corrupt: a NUL in the pax {key} (corrupt tar)", rule="corrupt tar")
            rule = _PAX_NUMBERS.get(key)
            if rule is not None and not rule.fullmatch(value):
                raise PackageError(f"{self.where} is corrupt: bad pax {key} (corrupt tar)", rule="corrupt tar")
            out[key] = value
            pos += length
        return out


def clean_name(name: str, limits: Limits, where: str) -> str:
    """The normalised relative path of an archive entry name ('' for the
    root), or a PackageError naming the rule it breaks."""
    def fail(problem: str, rule: str):
        raise PackageError(f"{where} entry {show(name)} {problem} ({rule})", entry=name, rule=rule)

    if _CONTROL.search(name):
        fail("has a control character in its name", "control character in name")
    length = len(name.encode("utf-8"))
    if length > limits.max_path:
        fail(f"has a name of {length} bytes, longer than {limits.max_path}", "over-long name")
    if name.startswith("/"):
        fail("is an absolute path", "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        fail("escapes the package", "path traversal")
    for p in parts:
        if len(p.encode("utf-8")) > limits.max_name:
            fail(f"has a name component of {len(p.encode('utf-8'))} bytes, longer than {limits.max_name}",
                 "over-long name")
    if len(parts) > limits.max_depth:
        fail(f"has {len(parts)} path components, more than {limits.max_depth}", "over-deep name")
    return "/".join(parts)


class Extractor:
    """Writes one archive's members under `root`, a directory this process
    just created. Names are checked (no '..', not absolute, UTF-8, no control
    characters, bounded length); nothing is written through a symlink (files
    are created with O_NOFOLLOW|O_EXCL inside directory fds opened with
    O_NOFOLLOW); symlinks are made last, only once every one of them
    resolves inside the tree; hard links only to regular files extracted
    before them; devices and fifos refused; duplicates refused."""

    def __init__(self, root: str | None, limits: Limits, where: str):
        """`root` None: a first pass that writes nothing and checks all the
        same (names, duplicates, links, the entry limit), so a package that
        will be refused is refused before a single file is made."""
        self.seen: list[TarMember] = []     # every entry, as read (for the type's own rules)
        self.root = root
        self.limits = limits
        self.where = where
        self._root_fd = os.open(root, _DIR_FLAGS) if root is not None else -1
        self._kinds: dict[str, str] = {"": DIR}     # every path made or to be made, implied parents too
        self._explicit: set[str] = set()
        self._links: dict[str, str] = {}
        self._steps = 0
        self._chain: list[tuple[str, int]] = []     # open fds of the last directory used, root down
        self.files = 0

    def close(self) -> None:
        self._drop_chain()
        if self._root_fd >= 0:
            os.close(self._root_fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- names -------------------------------------------------------------
    def _fail(self, name: str, problem: str, rule: str):
        raise PackageError(f"{self.where} entry {show(name)} {problem} ({rule})", entry=name, rule=rule)

    def clean(self, name: str) -> str:
        return clean_name(name, self.limits, self.where)

    def _claim(self, name: str, path: str, kind: str) -> None:
        """Register `path` for an entry, refusing duplicates and paths under
        anything that is not a directory. Parents are checked from the
        nearest up, stopping at the first one already known (its own parents
        were checked when it was), so each entry costs little."""
        end = len(path)
        new: list[str] = []
        while True:
            end = path.rfind("/", 0, end)
            if end < 0:
                break
            parent = path[:end]
            have = self._kinds.get(parent)
            if have == DIR:
                break
            if have == SYMLINK:
                self._fail(name, f"lies under the symlink {show(parent)}", "writing through a symlink")
            if have is not None:
                self._fail(name, f"lies under {show(parent)}, which is a {have}", "path conflict")
            new.append(parent)
        have = self._kinds.get(path)
        if have is not None:
            implied = have == DIR and path not in self._explicit
            if implied and kind != DIR:
                self._fail(name, f"is a {kind_name(kind)} where earlier entries put a directory", "path conflict")
            if not implied:
                self._fail(name, "appears more than once", "duplicate entry")
        if len(self._kinds) + len(new) > self.limits.max_entries:
            self._fail(name, f"would make more than {self.limits.max_entries} files and directories",
                       "entry limit")
        for parent in new:
            self._kinds[parent] = DIR
        self._kinds[path] = kind
        if kind == DIR:
            self._explicit.add(path)

    # -- file system -------------------------------------------------------
    def _drop_chain(self, keep: int = 0) -> None:
        while len(self._chain) > keep:
            os.close(self._chain.pop()[1])

    def _dir_fd(self, rel: str) -> int:
        """An fd of directory `rel` (created as needed), each component
        opened with O_NOFOLLOW from its parent's fd. The fds of the path are
        kept (at most max_depth of them), so the next entry only opens what
        differs. Owned by the extractor: never close it."""
        comps = rel.split("/") if rel else []
        common = 0
        while common < min(len(comps), len(self._chain)) and self._chain[common][0] == comps[common]:
            common += 1
        self._drop_chain(common)
        fd = self._chain[-1][1] if self._chain else self._root_fd
        for comp in comps[common:]:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.fchmod(nfd, 0o755)
            self._chain.append((comp, nfd))
            fd = nfd
        return fd

    def add(self, m: TarMember, reader: TarReader) -> None:
        self.seen.append(m)
        if m.kind not in (FILE, DIR, SYMLINK, HARDLINK):
            self._fail(m.name, f"is a {kind_name(m.kind)}", "device and fifo entries are not allowed")
        path = self.clean(m.name)
        if path == "":
            if m.kind == DIR:
                return                     # "./": the root itself
            self._fail(m.name, "has an empty name", "empty name")
        self._claim(m.name, path, FILE if m.kind == HARDLINK else m.kind)
        target = self._check_hardlink(m, path) if m.kind == HARDLINK else ""
        if m.kind == SYMLINK:
            self._check_symlink(m)
            self._links[path] = m.link      # made in finish(), once all of them resolve inside
        if self._root_fd < 0:
            return
        parent, _, base = path.rpartition("/")
        try:
            if m.kind == DIR:
                self._dir_fd(path)
            elif m.kind == FILE:
                self._write(m, reader, self._dir_fd(parent), base)
            elif m.kind == HARDLINK:
                self._hardlink(target, parent, base)
            else:
                self._dir_fd(parent)        # its parents exist now
        except OSError as e:
            raise PackageError(f"{self.where} entry {show(m.name)} could not be extracted: "
                               f"{e.strerror} (extraction failed)", entry=m.name,
                               rule="extraction failed") from None

    def _write(self, m: TarMember, reader: TarReader, dfd: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dfd)
        try:
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fchmod(fd, 0o755 if m.mode & 0o111 else 0o644)
        finally:
            os.close(fd)
        self.files += 1

    def _check_hardlink(self, m: TarMember, path: str) -> str:
        """The path a hard link entry links to, checked."""
        self._check_target(m)
        if m.link.startswith("/") or ".." in m.link.split("/"):
            self._fail(m.name, f"is a hard link to {show(m.link)}, outside the package", "hard link escape")
        target = "/".join(p for p in m.link.split("/") if p not in ("", "."))
        if self._kinds.get(target) != FILE or target == path:
            self._fail(m.name, f"is a hard link to {show(m.link)}, which is not a regular file "
                               "extracted before it", "hard link target")
        return target

    def _hardlink(self, target: str, parent: str, base: str) -> None:
        tparent, _, tbase = target.rpartition("/")
        tfd = os.dup(self._dir_fd(tparent))
        try:
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=self._dir_fd(parent), follow_symlinks=False)
        finally:
            os.close(tfd)
        self.files += 1

    def _check_target(self, m: TarMember) -> None:
        link = m.link
        if not link:
            self._fail(m.name, f"is a {kind_name(m.kind)} with an empty target", "empty link target")
        if _CONTROL.search(link):
            self._fail(m.name, "has a control character in its link target", "control character in name")
        if len(link.encode("utf-8")) > self.limits.max_path:
            self._fail(m.name, f"has a link target of {len(link.encode('utf-8'))} bytes, longer than "
                               f"{self.limits.max_path}", "over-long name")
        if any(len(p.encode("utf-8")) > self.limits.max_name for p in link.split("/")):
            self._fail(m.name, f"has a link target component longer than {self.limits.max_name} bytes",
                       "over-long name")

    def _check_symlink(self, m: TarMember) -> None:
        self._check_target(m)
        if m.link.startswith("/"):
            self._fail(m.name, f"is a symlink to {show(m.link)}, outside the package",
                       "absolute symlink target")

    def finish(self) -> None:
        """Check every symlink against the whole tree, then create them."""
        for path in sorted(self._links):
            self._resolve(path)
        if self._root_fd < 0:
            return
        for path in sorted(self._links):
            parent, _, base = path.rpartition("/")
            try:
                os.symlink(self._links[path], base, dir_fd=self._dir_fd(parent))
            except OSError as e:
                raise PackageError(f"{self.where} entry {show(path)} could not be extracted: {e.strerror} "
                                   "(extraction failed)", entry=path, rule="extraction failed") from None
        self._drop_chain()

    def _resolve(self, path: str) -> None:
        """Follow `path`'s target the way the kernel would, through the
        symlinks of this tree, refusing any step above the root."""
        link = self._links[path]
        current = [""]                      # joined paths of the directories walked, root first
        for comp in path.split("/")[:-1]:
            current.append(f"{current[-1]}/{comp}" if current[-1] else comp)
        todo = [p for p in reversed(link.split("/"))]
        hops = 1
        while todo:
            comp = todo.pop()
            self._steps += 1
            if self._steps > _MAX_RESOLVE_STEPS:
                self._fail(path, "is one of more symlinks than can be checked", "symlink limit")
            if comp in ("", "."):
                continue
            if comp == "..":
                if len(current) == 1:
                    self._fail(path, f"is a symlink to {show(link)}, which resolves outside the package",
                               "symlink escape")
                current.pop()
                continue
            candidate = f"{current[-1]}/{comp}" if current[-1] else comp
            target = self._links.get(candidate)
            if target is None:
                current.append(candidate)
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                self._fail(path, f"is part of a symlink loop, or of a chain of more than {_MAX_SYMLINK_HOPS} "
                                 "symlinks", "too many levels of symlinks")
            if target.startswith("/"):
                self._fail(path, f"is a symlink to {show(link)}, which resolves outside the package",
                           "symlink escape")
            todo.extend(reversed(target.split("/")))


def extract(read_member: TarReader, extractor: Extractor) -> None:
    for m in read_member:
        extractor.add(m, read_member)
    extractor.finish()


def regular_file(path: str, max_bytes: int, what: str) -> bytes | None:
    """The content of `path` if it is a regular file (not through a final
    symlink), at most `max_bytes`; None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        raise PackageError(f"{what} is not a regular file (not a regular file)",
                           rule="not a regular file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PackageError(f"{what} is not a regular file (not a regular file)", rule="not a regular file")
        if st.st_size > max_bytes:
            raise PackageError(f"{what} is {human_size(st.st_size)}, more than {human_size(max_bytes)} (header limit)",
                               rule="header limit")
        return os.pread(fd, max_bytes + 1, 0)
    finally:
        os.close(fd)


def inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")

