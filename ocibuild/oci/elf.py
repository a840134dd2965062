"""Just enough ELF: the platform a binary is for, whether it needs a
dynamic loader (the file and program headers), and the Go version a Go
binary was built with."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .model import Platform

_MACHINES = {0x03: ("386", ""), 0x28: ("arm", "v7"), 0x3E: ("amd64", ""), 0xB7: ("arm64", ""),
             0x16: ("s390x", ""), 0xF3: ("riscv64", ""), 0x08: ("mips", "")}
PT_INTERP = 3


@dataclass(frozen=True)
class ElfInfo:
    platform: Platform
    interpreter: str       # "" for a static binary

    @property
    def dynamic(self) -> bool:
        return bool(self.interpreter)


def read_elf(path: str) -> ElfInfo | None:
    """ElfInfo for an ELF executable, None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return None
            is64, little = head[4] == 2, head[5] == 1
            end = "<" if little else ">"
            machine = struct.unpack_from(end + "H", head, 18)[0]
            if is64:
                phoff, = struct.unpack_from(end + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(end + "I", head, 28)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
            interp = ""
            for i in range(min(phnum, 256)):
                f.seek(phoff + i * phentsize)
                ph = f.read(phentsize)
                if len(ph) < (56 if is64 else 32):
                    break
                if struct.unpack_from(end + "I", ph, 0)[0] != PT_INTERP:
                    continue
                if is64:
                    off, = struct.unpack_from(end + "Q", ph, 8)
                    size, = struct.unpack_from(end + "Q", ph, 32)
                else:
                    off, = struct.unpack_from(end + "I", ph, 4)
                    size, = struct.unpack_from(end + "I", ph, 16)
                f.seek(off)
                interp = f.read(min(size, 4096)).rstrip(b"\0").decode("utf-8", "replace")
    except OSError:
        return None
    arch, variant = _MACHINES.get(machine, (f"elf-machine-{machine}", ""))
    if machine == 0x15:
        arch = "ppc64le" if little else "ppc64"
    return ElfInfo(Platform("linux", arch, variant), interp)


_BUILDINFO_MAGIC = b"\xff Go buildinf:"
_GO_VERSION = re.compile(rb"go1\.\d+(?:\.\d+|(?:rc|beta)\d+)?(?: [\x21-\x7e]+)?", re.ASCII)
_MAX_SECTIONS = 4096


def go_version(path: str) -> str | None:
    """The Go version a binary was built with (`go1.24.4`), from its
    `.go.buildinfo` section (found through the section headers, as Go's
    debug/buildinfo does, so a string in the program's data cannot pose as
    it): a 32-byte header, then (Go 1.18+, flag 2) the version inline,
    length-prefixed. None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return None
            section = _section(f, head, b".go.buildinfo")
            if section is None:
                return None
            f.seek(section[0])
            data = f.read(min(section[1], 32 + 10 + 64))
    except (OSError, struct.error):
        return None
    if len(data) < 33 or not data.startswith(_BUILDINFO_MAGIC) or not data[15] & 2:
        return None
    length, shift, pos = 0, 0, 32
    while pos < min(len(data), 42):                     # an unsigned varint
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    raw = data[pos:pos + min(length, 64)]
    return raw.decode("ascii") if _GO_VERSION.fullmatch(raw) else None


def _section(f, head: bytes, wanted: bytes) -> tuple[int, int] | None:
    """(file offset, size) of the section named `wanted`."""
    is64, end = head[4] == 2, "<" if head[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", head, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x3A)
        fields, at = end + "IIQQQQ", (0, 4, 5)          # name, offset, size
    else:
        shoff, = struct.unpack_from(end + "I", head, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x2E)
        fields, at = end + "IIIIII", (0, 4, 5)
    if not shoff or shnum > _MAX_SECTIONS or shstrndx >= shnum or shentsize < struct.calcsize(fields):
        return None
    f.seek(shoff)
    table = f.read(shnum * shentsize)
    headers = [struct.unpack_from(fields, table, i * shentsize) for i in range(len(table) // shentsize)]
    if shstrndx >= len(headers):
        return None
    names_at, names_size = headers[shstrndx][at[1]], headers[shstrndx][at[2]]
    f.seek(names_at)
    names = f.read(min(names_size, 1 << 20))
    for h in headers:
        name_at = h[at[0]]
        if names[name_at:name_at + len(wanted) + 1] == wanted + b"\0":
            return h[at[1]], h[at[2]]
    return None
