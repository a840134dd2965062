"""What every part of the Fabric package reader shares: the one error type
for a refused package, the limits it is read under, and how an untrusted
name is shown in a one-line message."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

# Fabric's label rule (`^[[:alnum:]][[:alnum:]_.+-]*$`, ASCII classes in Go's RE2).
LABEL_RULE = "^[[:alnum:]][[:alnum:]_.+-]*$"
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*", re.ASCII)


@dataclass(frozen=True)
class Limits:
    """Bounds for reading one untrusted package. The defaults fit real
    chaincode with vendored dependencies; raise them for unusual packages."""
    max_bytes: int = 1 << 30      # bytes each compressed stream may inflate to
    max_entries: int = 100_000    # headers in one tar archive (extension headers included)
    max_path: int = 4096          # bytes in an entry name or link target
    max_name: int = 255           # bytes in one component of a name
    max_depth: int = 256          # components in a name (directories held open while extracting)
    max_header: int = 1 << 20     # metadata.json, a pax header, connection.json, a CDS spec

    def __post_init__(self):
        for field in ("max_bytes", "max_entries", "max_path", "max_name", "max_depth", "max_header"):
            if getattr(self, field) <= 0:
                raise InputError(f"package limit {field} must be positive")


def valid_label(label: object) -> bool:
    return isinstance(label, str) and _LABEL.fullmatch(label) is not None


def show(name: str, limit: int = 120) -> str:
    """An untrusted name, quoted, on one line: control and other unprintable
    characters escaped, long names shortened."""
    out = []
    for ch in name:
        if ch.isprintable() and ch not in "\\'":
            out.append(ch)
        elif ch in "\\'":
            out.append("\\" + ch)
        else:
            code = ord(ch)
            if 0xDC80 <= code <= 0xDCFF:          # a byte that was not UTF-8
                out.append(f"\\x{code - 0xDC00:02x}")
            elif code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    text = "".join(out)
    if len(text) > limit:
        text = text[:limit] + f"...({len(name.encode('utf-8', 'surrogateescape'))} bytes)"
    return f"'{text}'"
