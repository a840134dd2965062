"""The build information a Go binary carries (Go 1.18+), read from its ELF
file without running `go`: the toolchain version, the main package and
module, the dependency modules (with go.sum's h1: hashes and replacements)
and the build settings, as `go version -m` prints them.

Where it is (Go's debug/buildinfo): the `.go.buildinfo` section, found
through the section headers. It starts with a 32-byte header: the magic
`\\xff Go buildinf:` (14 bytes), the pointer size, the flags (bit 2: the
strings follow inline, Go 1.18+; without it the header holds pointers, the
pre-1.18 format, which is not read here), then two strings, each an
unsigned varint length and that many bytes: the Go version, and the
modinfo text framed by two 16-byte markers (cmd/go's modload infoStart and
infoEnd). The modinfo's lines are what runtime/debug.ParseBuildInfo reads:
`path`, `mod`, `dep`, `=>` (replaces the module on the line before) and
`build KEY=VALUE`, fields separated by tabs, a key or value quoted as Go's
strconv.Quote does when it holds spaces, tabs, quotes or newlines.

The binary comes from strangers: every read is bounded (the section table,
the section names, 1 MiB of modinfo), nothing in the file is trusted for an
allocation, and what cannot be read is said in `BuildInfo.problem` rather
than raised."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"\xff Go buildinf:"
INFO_START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")    # cmd/go/internal/modload infoStart
INFO_END = bytes.fromhex("f932433186182072008242104116d8f2")      # and infoEnd
MAX_MODINFO = 1 << 20            # bytes of modinfo read at most (real ones: a few KiB)
MAX_VERSION = 256                # bytes of Go version ("go1.24.4", "go1.22.1 X:boringcrypto")
MAX_SECTIONS = 4096              # section headers looked at (a Go binary has ~25)
MAX_SECTION_HEADER = 256         # bytes per section header (64 in ELF64, 40 in ELF32)
MAX_SECTION_NAMES = 1 << 20      # bytes of section names read
_HEADER = 32
_VARINT = 10                     # the longest unsigned varint of a 64-bit value
_FLAG_INLINE = 0x2
_SHT_NOBITS = 8
_BUILDINFO_SECTION = b".go.buildinfo"


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    sum: str = ""                    # go.sum's h1: hash, "" when none (a (devel) main module, vendor mode)
    replace: Module | None = None    # what a go.mod replace put in its place: what was built


@dataclass(frozen=True)
class BuildInfo:
    go_version: str = ""             # "go1.24.4"
    path: str = ""                   # main package path
    main: Module | None = None
    deps: tuple[Module, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()   # build settings in binary order
    problem: str = ""                # "" when read; else what could not be read, one short phrase


def read_buildinfo(path: str) -> BuildInfo | None:
    """None: not an ELF file at all (or not openable). A BuildInfo with
    .problem set: an ELF whose build info could not be (fully) read; what
    was read before the trouble is kept (the Go version, say)."""
    try:
        with open(path, "rb") as f:
            return _read(f)
    except OSError:
        return None


def _read(f: BinaryIO) -> BuildInfo | None:
    size = os.fstat(f.fileno()).st_size
    head = f.read(64)
    if len(head) < 4 or head[:4] != b"\x7fELF":
        return None
    try:
        found = _section(f, size, head, _BUILDINFO_SECTION)
        if isinstance(found, str):
            return BuildInfo(problem=found)
        offset, length, kind = found
        if kind == _SHT_NOBITS:
            return BuildInfo(problem="a .go.buildinfo section without contents in the file")
        data = _read_at(f, size, offset, min(length, _HEADER + 2 * _VARINT + MAX_VERSION))
        need = _extent(data)
        if need > len(data):                             # then as much as the modinfo's length says
            data = _read_at(f, size, offset, min(length, need))
    except OSError as e:
        return BuildInfo(problem=f"an unreadable file ({e.strerror or type(e).__name__})")
    return _decode(data)


def _extent(data: bytes) -> int:
    """How many bytes of the section the two strings take, as far as `data`
    (the header, the version, and the modinfo's length) says; 0 when it
    cannot say (`_decode` then says why)."""
    version = _uvarint(data, _HEADER)
    if version is None or version[0] > MAX_VERSION:
        return 0
    mod = _uvarint(data, version[1] + version[0])
    if mod is None or mod[0] > MAX_MODINFO:
        return 0
    return mod[1] + mod[0]


def _read_at(f: BinaryIO, size: int, offset: int, n: int) -> bytes:
    """Up to `n` bytes at `offset`, nothing past the end of the file."""
    if offset < 0 or offset >= size or n <= 0:
        return b""
    f.seek(offset)
    return f.read(min(n, size - offset))


def _section(f: BinaryIO, size: int, head: bytes, wanted: bytes) -> tuple[int, int, int] | str:
    """(file offset, size, type) of the first section named `wanted`, or
    what is wrong with the section headers."""
    if len(head) < 52 or (head[4] == 2 and len(head) < 64):
        return "a truncated ELF header"
    if head[4] not in (1, 2) or head[5] not in (1, 2):
        return "an ELF header of unknown class or byte order"
    is64, end = head[4] == 2, "<" if head[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", head, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x3A)
        fields, at = end + "IIQQQQ", (0, 1, 4, 5)           # name, type, offset, size
    else:
        shoff, = struct.unpack_from(end + "I", head, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x2E)
        fields, at = end + "IIIIII", (0, 1, 4, 5)
    if not shoff or not shnum:
        return "no section headers"
    if shnum > MAX_SECTIONS:
        return f"too many sections ({shnum})"
    if not struct.calcsize(fields) <= shentsize <= MAX_SECTION_HEADER:
        return f"section headers of an impossible size ({shentsize} bytes)"
    table = _read_at(f, size, shoff, shnum * shentsize)
    if len(table) < shnum * shentsize:
        return "a truncated section header table"
    if shstrndx >= shnum:
        return "no section name table"
    headers = [struct.unpack_from(fields, table, i * shentsize) for i in range(shnum)]
    names_header = headers[shstrndx]
    names = _read_at(f, size, names_header[at[2]], min(names_header[at[3]], MAX_SECTION_NAMES))
    for h in headers:
        name_at = h[at[0]]
        if names[name_at:name_at + len(wanted) + 1] == wanted + b"\0":
            return h[at[2]], h[at[3]], h[at[1]]
    return "no .go.buildinfo section"


def _uvarint(data: bytes, pos: int) -> tuple[int, int] | None:
    """An unsigned varint at `pos` (Go's binary.Uvarint: at most 10 bytes,
    no overflow past 64 bits): (value, position after it), or None."""
    value = shift = 0
    for i in range(pos, min(pos + _VARINT, len(data))):
        byte = data[i]
        if i == pos + _VARINT - 1 and byte > 1:
            return None                                  # overflows 64 bits
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


def _string(data: bytes, pos: int, cap: int, what: str) -> tuple[bytes, int] | str:
    """A varint-length-prefixed string at `pos`, at most `cap` bytes long."""
    got = _uvarint(data, pos)
    if got is None:
        return f"a truncated or malformed {what} length" if pos < len(data) else f"no {what}"
    length, pos = got
    if length > cap:
        return f"a {what} longer than {cap} bytes ({length})"
    if pos + length > len(data):
        return f"a truncated {what}"
    return data[pos:pos + length], pos + length


def _decode(data: bytes) -> BuildInfo:
    if len(data) < _HEADER or not data.startswith(MAGIC):
        return BuildInfo(problem="a .go.buildinfo section without the build information header")
    if not data[15] & _FLAG_INLINE:
        return BuildInfo(problem="build information in the pre-Go 1.18 format")
    got = _string(data, _HEADER, MAX_VERSION, "Go version")
    if isinstance(got, str):
        return BuildInfo(problem=got)
    raw_version, pos = got
    version, clean = _text(raw_version)
    if not version:
        return BuildInfo(problem="an empty Go version")
    got = _string(data, pos, MAX_MODINFO, "modinfo")
    if isinstance(got, str):
        return BuildInfo(go_version=version, problem=got)
    mod = got[0]
    if not mod:
        return BuildInfo(go_version=version, problem="" if clean else "a Go version that is not UTF-8")
    if len(mod) < 33 or not mod.startswith(INFO_START) or not mod.endswith(INFO_END) or mod[-17] != 0x0A:
        return BuildInfo(go_version=version, problem="modinfo without its start and end markers")
    info = _parse(mod[16:-16], version)
    if not clean and not info.problem:
        return BuildInfo(info.go_version, info.path, info.main, info.deps, info.settings,
                         "a Go version that is not UTF-8")
    return info


def _text(raw: bytes) -> tuple[str, bool]:
    """`raw` as text, invalid UTF-8 replaced by U+FFFD; and whether it was valid."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), False


class _Malformed(Exception):
    pass


def _parse(mod: bytes, go_version: str) -> BuildInfo:
    """runtime/debug.ParseBuildInfo, over bytes. Where Go would refuse the
    whole text (a malformed line), what came before it is kept and the
    problem names the line."""
    path = ""
    main: Module | None = None
    deps: list[Module] = []
    settings: list[tuple[str, str]] = []
    last = ""                                            # "main", "dep": what a `=>` line replaces
    clean = True
    problem = ""

    def text(raw: bytes) -> str:
        nonlocal clean
        out, ok = _text(raw)
        clean = clean and ok
        return out

    lines = mod.split(b"\n")[:-1]                        # Go ignores text after the last newline
    for number, line in enumerate(lines, 1):
        try:
            if line.startswith(b"path\t"):
                path = text(line[5:])
            elif line.startswith(b"mod\t"):
                main, last = _module(line[4:].split(b"\t"), text), "main"
            elif line.startswith(b"dep\t"):
                deps.append(_module(line[4:].split(b"\t"), text))
                last = "dep"
            elif line.startswith(b"=>\t"):
                elem = line[3:].split(b"\t")
                if len(elem) != 3:
                    raise _Malformed
                new = Module(text(elem[0]), text(elem[1]), text(elem[2]))
                if last == "main" and main is not None:
                    main = Module(main.path, main.version, main.sum, new)
                elif last == "dep":
                    old = deps[-1]
                    deps[-1] = Module(old.path, old.version, old.sum, new)
                else:
                    raise _Malformed
                last = ""
            elif line.startswith(b"build\t"):
                key, value = _setting(line[6:])
                settings.append((text(key), text(value)))
        except _Malformed:
            problem = f"a malformed modinfo line ({number})"
            break
    if not problem and not clean:
        problem = "modinfo that is not UTF-8"
    return BuildInfo(go_version, path, main, tuple(deps), tuple(settings), problem)


def _module(elem: list[bytes], text: Callable[[bytes], str]) -> Module:
    if len(elem) not in (2, 3):
        raise _Malformed
    return Module(text(elem[0]), text(elem[1]), text(elem[2]) if len(elem) == 3 else "")


# --- build settings: Go's quoting -----------------------------------------------

def _needs_quotes(text: bytes, key: bool) -> bool:
    """runtime/debug's quoteKey / quoteValue: what strconv.Quote must quote."""
    return (key and (not text or b"=" in text)) or any(c in text for c in b" \t\r\n\"`")


def _setting(kv: bytes) -> tuple[bytes, bytes]:
    """KEY=VALUE of a `build` line, each possibly quoted (ParseBuildInfo)."""
    if not kv or kv[:1] == b"=":
        raise _Malformed
    if kv[:1] in (b'"', b"`"):
        got = _unquote_prefix(kv)
        if got is None:
            raise _Malformed
        key, n = got
        if kv[n:n + 1] != b"=":
            raise _Malformed
        raw = kv[n + 1:]
    else:
        key, sep, raw = kv.partition(b"=")
        if not sep or _needs_quotes(key, key=True):
            raise _Malformed
    if raw[:1] in (b'"', b"`"):
        got = _unquote_prefix(raw)
        if got is None or got[1] != len(raw):
            raise _Malformed
        return key, got[0]
    if _needs_quotes(raw, key=False):
        raise _Malformed
    return key, raw


_SIMPLE_ESCAPES = {ord("a"): b"\a", ord("b"): b"\b", ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r",
                   ord("t"): b"\t", ord("v"): b"\v", ord("\\"): b"\\", ord('"'): b'"'}
_HEX = b"0123456789abcdefABCDEF"


def _unquote_prefix(s: bytes) -> tuple[bytes, int] | None:
    """The Go string literal at the start of `s` (strconv.QuotedPrefix, then
    Unquote): (its value, its length in `s`), or None if there is none."""
    if s[:1] == b"`":
        end = s.find(b"`", 1)
        return None if end < 0 else (s[1:end].replace(b"\r", b""), end + 1)
    if s[:1] != b'"':
        return None
    out = bytearray()
    i = 1
    while i < len(s):
        c = s[i]
        if c == 0x22:                                    # the closing quote
            return bytes(out), i + 1
        if c == 0x0A:
            return None
        if c != 0x5C:                                    # not a backslash
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(s):
            return None
        e = s[i + 1]
        if e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e]
            i += 2
        elif e in b"xuU":
            n = {0x78: 2, 0x75: 4, 0x55: 8}[e]
            digits = s[i + 2:i + 2 + n]
            if len(digits) != n or any(d not in _HEX for d in digits):
                return None
            v = int(digits, 16)
            if e == 0x78:
                out.append(v)                            # \xHH: one byte
            elif v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                return None
            else:
                out += chr(v).encode("utf-8")
            i += 2 + n
        elif 0x30 <= e <= 0x37:                          # \OOO: one byte
            digits = s[i + 1:i + 4]
            if len(digits) != 3 or any(not 0x30 <= d <= 0x37 for d in digits) or int(digits, 8) > 255:
                return None
            out.append(int(digits, 8))
            i += 4
        else:
            return None
    return None
