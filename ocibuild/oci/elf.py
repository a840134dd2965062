"""Just enough ELF: the platform a binary is for, whether it needs a
dynamic loader (the file and program headers), and the Go version a Go
binary was built with."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .buildinfo import read_buildinfo
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
            if is64 and len(head) < 64:
                return None
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
    except (OSError, ValueError, struct.error):     # ValueError: an offset no file offset can be
        return None
    arch, variant = _MACHINES.get(machine, (f"elf-machine-{machine}", ""))
    if machine == 0x15:
        arch = "ppc64le" if little else "ppc64"
    return ElfInfo(Platform("linux", arch, variant), interp)


_GO_VERSION = re.compile(r"go1\.\d+(?:\.\d+|(?:rc|beta)\d+)?(?: [\x21-\x7e]+)?", re.ASCII)


def go_version(path: str) -> str | None:
    """The Go version a binary was built with (`go1.24.4`), from the build
    information in its `.go.buildinfo` section (`buildinfo.read_buildinfo`:
    found through the section headers, as Go's debug/buildinfo does, so a
    string in the program's data cannot pose as it; Go 1.18+). None for
    anything else, and for a version that does not look like one."""
    info = read_buildinfo(path)
    if info is None or not _GO_VERSION.fullmatch(info.go_version):
        return None
    return info.go_version
