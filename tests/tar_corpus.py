"""A corpus of code.tar.gz archives for the differential test
(test_tar_differential.py): hand-written edge cases of the tar format, the
places where two readers can disagree, and seeded mutations of valid
archives (bit flips, truncations, header field mutations, pax and GNU
extension headers inserted, blocks duplicated or dropped).

Headers are built here byte by byte (tarfile refuses to write most of
these). Everything is deterministic: the same corpus, byte for byte, on
every run."""

from __future__ import annotations

import functools
import io
import random
import tarfile
from dataclasses import dataclass

from fabric_corpus import GO_MOD, MAIN_GO, gz

BLOCK = 512
END = bytes(2 * BLOCK)
EVIL_GO = b"package main\n\n// not what the reviewer saw\nfunc main() { panic(1) }\n"
OTHER_GO = b"package main\n\nfunc other() {}\n"

# Header fields: name -> (offset, width). STAR and GNU reuse the prefix area.
FIELDS = {
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
    "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
    "magic": (257, 6), "version": (263, 2), "uname": (265, 32), "gname": (297, 32),
    "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155),
    # GNU (magic "ustar  \0"): atime, ctime in the prefix area; STAR: trailer "tar\0".
    "atime": (345, 12), "ctime": (357, 12), "star_trailer": (508, 4),
}
NUMERIC = ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor")
MAGIC = {"ustar": (b"ustar\0", b"00"), "gnu": (b"ustar ", b" \0"), "v7": (b"", b"")}


@dataclass(frozen=True)
class Case:
    name: str        # unique, shown in reports
    cls: str         # what it probes: the class a mismatch is counted under
    code: bytes      # the code.tar.gz bytes


# -- building blocks ------------------------------------------------------------

def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def octal(n: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, n)


def base256(n: int, width: int) -> bytes:
    """GNU binary numbers: the high bit of the first byte set, two's complement."""
    raw = bytearray((n % (1 << (8 * width))).to_bytes(width, "big"))
    raw[0] |= 0x80
    return bytes(raw)


def checksum(blk: bytes) -> int:
    return sum(blk[:148]) + 8 * 32 + sum(blk[156:])


def with_checksum(blk: bytes | bytearray) -> bytes:
    out = bytearray(blk)
    out[148:156] = b"%06o\0 " % checksum(bytes(out))
    return bytes(out)


def put(blk: bytearray, field: str | int, value: bytes) -> None:
    """Write `value` into a header field, NUL-padded to its width (or at a
    raw offset when `field` is an int)."""
    if isinstance(field, int):
        blk[field:field + len(value)] = value
        return
    off, width = FIELDS[field]
    assert len(value) <= width, (field, value)
    blk[off:off + width] = value.ljust(width, b"\0")


def header(name: str | bytes, typeflag: bytes = b"0", size: int = 0, mode: int = 0o644,
           linkname: str | bytes = b"", fmt: str = "ustar", raw: dict | None = None,
           fix_checksum: bool = True) -> bytes:
    """One 512-byte header. `raw` overrides fields with exact bytes
    ({field name or offset: bytes}); the checksum is computed last unless
    `raw` sets it or `fix_checksum` is false."""
    blk = bytearray(BLOCK)
    put(blk, "name", _b(name))
    put(blk, "mode", octal(mode, 8))
    put(blk, "uid", octal(0, 8))
    put(blk, "gid", octal(0, 8))
    put(blk, "size", octal(size, 12))
    put(blk, "mtime", octal(0, 12))
    put(blk, "typeflag", typeflag)
    put(blk, "linkname", _b(linkname))
    magic, version = MAGIC[fmt]
    if magic:
        put(blk, "magic", magic)
        put(blk, "version", version)
        put(blk, "uname", b"root")
        put(blk, "gname", b"root")
        if fmt == "ustar":
            put(blk, "devmajor", octal(0, 8))
            put(blk, "devminor", octal(0, 8))
    for field, value in (raw or {}).items():
        put(blk, field, value)
    if fix_checksum and "chksum" not in (raw or {}):
        return with_checksum(blk)
    return bytes(blk)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def entry(name: str | bytes, data: bytes = b"", typeflag: bytes = b"0", mode: int = 0o644,
          linkname: str | bytes = b"", fmt: str = "ustar", size: int | None = None,
          raw: dict | None = None) -> bytes:
    return header(name, typeflag, len(data) if size is None else size, mode, linkname, fmt, raw) + pad(data)


def file(name: str | bytes, data: bytes = MAIN_GO, **kw) -> bytes:
    return entry(name, data, **kw)


def dir_(name: str | bytes, **kw) -> bytes:
    return entry(name, b"", typeflag=b"5", mode=0o755, **kw)


def symlink(name: str | bytes, target: str | bytes, **kw) -> bytes:
    return entry(name, b"", typeflag=b"2", mode=0o777, linkname=target, **kw)


def hardlink(name: str | bytes, target: str | bytes, **kw) -> bytes:
    return entry(name, b"", typeflag=b"1", linkname=target, **kw)


def pax_record(key: str | bytes, value: str | bytes) -> bytes:
    body = b" " + _b(key) + b"=" + _b(value) + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax(records, flag: bytes = b"x", name: str = "PaxHeaders.0/entry", raw: dict | None = None) -> bytes:
    """A pax extended header ('x') or global header ('g'): `records` are
    (key, value) pairs, or the exact body as bytes."""
    body = records if isinstance(records, bytes) else b"".join(pax_record(k, v) for k, v in records)
    return entry(name, body, typeflag=flag, raw=raw)


def gnu_long(flag: bytes, value: str | bytes, terminate: bool = True) -> bytes:
    """A GNU long name ('L') or long link ('K') record."""
    data = _b(value) + (b"\0" if terminate else b"")
    return entry("././@LongLink", data, typeflag=flag, fmt="gnu")


def archive(*parts: bytes, end: bytes = END) -> bytes:
    return b"".join(parts) + end


def base_module() -> list[bytes]:
    return [file("src/go.mod", GO_MOD), file("src/main.go", MAIN_GO)]


def module(*extra: bytes, end: bytes = END) -> bytes:
    """The raw tar of a good module followed by `extra` members."""
    return archive(*base_module(), *extra, end=end)


# -- hand-written cases -------------------------------------------------------------

def _hand_written() -> list[tuple[str, str, bytes]]:
    """(name, class, raw tar) for the edge cases, grouped by what they probe."""
    cases: list[tuple[str, str, bytes]] = []

    def add(cls: str, name: str, raw: bytes) -> None:
        cases.append((f"{cls}/{name}", cls, raw))

    go_mod = file("src/go.mod", GO_MOD)

    # pax path vs GNU long name on one entry (the case), both orders.
    cls = "pax path vs GNU long name"
    add(cls, "L-then-x", archive(go_mod, gnu_long(b"L", "src/main.go"), pax([("path", "src/evil.go")]),
                                 file("src/main.go", EVIL_GO)))
    add(cls, "x-then-L", archive(go_mod, pax([("path", "src/evil.go")]), gnu_long(b"L", "src/main.go"),
                                 file("src/main.go", EVIL_GO)))
    add(cls, "L-overrides-x-to-src", archive(go_mod, pax([("path", "src/main.go")]),
                                             gnu_long(b"L", "src/lib/main.go"), file("x", EVIL_GO)))
    add(cls, "same-value", archive(go_mod, gnu_long(b"L", "src/main.go"), pax([("path", "src/main.go")]),
                                   file("src/main.go", MAIN_GO)))
    add(cls, "L-empty-x-path", archive(go_mod, gnu_long(b"L", ""), pax([("path", "src/main.go")]),
                                       file("src/other.go", MAIN_GO)))
    add(cls, "L-on-gnu-header", archive(go_mod, pax([("path", "src/evil.go")]), gnu_long(b"L", "src/main.go"),
                                        file("src/x.go", EVIL_GO, fmt="gnu")))

    cls = "pax linkpath vs GNU long link"
    add(cls, "symlink-K-then-x", archive(*base_module(), gnu_long(b"K", "go.mod"), pax([("linkpath", "main.go")]),
                                         symlink("src/link", "main.go")))
    add(cls, "symlink-x-then-K", archive(*base_module(), pax([("linkpath", "main.go")]), gnu_long(b"K", "go.mod"),
                                         symlink("src/link", "main.go")))
    add(cls, "hardlink-K-then-x", archive(*base_module(), file("src/evil.txt", EVIL_GO),
                                          gnu_long(b"K", "src/evil.txt"), pax([("linkpath", "src/main.go")]),
                                          hardlink("src/copy.go", "src/main.go")))
    add(cls, "symlink-K-only", module(gnu_long(b"K", "main.go"), symlink("src/link", "go.mod")))
    add(cls, "symlink-x-only", module(pax([("linkpath", "main.go")]), symlink("src/link", "go.mod")))

    cls = "duplicate pax records"
    add(cls, "path-twice", archive(go_mod, pax([("path", "src/evil.go"), ("path", "src/main.go")]),
                                   file("src/x.go", MAIN_GO)))
    add(cls, "size-twice", archive(go_mod, pax([("size", "5"), ("size", str(len(MAIN_GO)))]),
                                   file("src/main.go", MAIN_GO, size=0)))
    add(cls, "linkpath-twice", module(pax([("linkpath", "go.mod"), ("linkpath", "main.go")]),
                                      symlink("src/link", "x")))
    add(cls, "two-x-headers", archive(go_mod, pax([("path", "src/evil.go")]), pax([("mtime", "1")]),
                                      file("src/main.go", EVIL_GO)))
    add(cls, "two-x-headers-size", archive(go_mod, pax([("size", str(len(EVIL_GO)))]), pax([("mtime", "1")]),
                                           file("src/main.go", EVIL_GO)))
    add(cls, "x-then-empty-x", archive(go_mod, pax([("path", "src/evil.go")]), pax(b""),
                                       file("src/main.go", EVIL_GO)))
    add(cls, "two-x-headers-both-path", archive(go_mod, pax([("path", "src/evil.go")]),
                                                pax([("path", "src/main.go")]), file("src/x.go", MAIN_GO)))

    cls = "global pax header"
    add(cls, "g-path", archive(go_mod, pax([("path", "src/evil.go")], flag=b"g"), file("src/main.go")))
    add(cls, "g-vs-x-path", archive(go_mod, pax([("path", "src/evil.go")], flag=b"g"),
                                    pax([("path", "src/main.go")]), file("src/x.go")))
    add(cls, "x-then-g", archive(go_mod, pax([("path", "src/evil.go")]), pax([("comment", "hi")], flag=b"g"),
                                 file("src/main.go", EVIL_GO)))
    add(cls, "L-then-g", archive(go_mod, gnu_long(b"L", "src/evil.go"), pax([("comment", "hi")], flag=b"g"),
                                 file("src/main.go", EVIL_GO)))
    add(cls, "g-size", archive(go_mod, pax([("size", "3")], flag=b"g"), file("src/main.go")))
    add(cls, "g-first", archive(pax([("comment", "made by git archive")], flag=b"g", name="pax_global_header"),
                                *base_module()))
    add(cls, "g-named-in-src", archive(pax([("comment", "x")], flag=b"g", name="src/global"), *base_module()))
    add(cls, "g-bad-record", archive(pax(b"5 =x\n", flag=b"g"), *base_module()))

    # Numeric fields: octal with spaces and NULs, base-256, negative numbers.
    cls = "numeric fields"
    n = len(MAIN_GO)
    size_variants = {
        "size-leading-spaces": b"%11o " % n, "size-trailing-space-nul": b"%010o \0" % n,
        "size-leading-nul": b"\0" + b"%010o\0" % n, "size-space-then-nul": b" \0" + b"%09o\0" % n,
        "size-no-terminator": b"%012o" % n, "size-embedded-space": b"00 %08o\0" % n,
        "size-nul-then-garbage": b"%010o\0x" % n, "size-base256": base256(n, 12),
        "size-base256-negative": base256(-n, 12), "size-base256-0xc0": b"\xc0" + bytes(10) + bytes([n]),
        "size-base256-overflow": b"\x80\x01" + bytes(9) + bytes([n]), "size-all-spaces": b" " * 12,
        "size-hex": b"0x%x\0" % n, "size-plus": b"+%o\0" % n, "size-9": b"%010o9" % n,
    }
    for name, value in size_variants.items():
        add(cls, name, archive(go_mod, file("src/main.go", MAIN_GO, raw={"size": value})))
    mode_variants = {
        "mode-leading-nul": b"\x00000755\x00", "mode-leading-space": b"    755\0", "mode-base256": base256(0o755, 8),
        "mode-base256-negative": base256(-(0o10000 - 0o755), 8), "mode-base256-0xc0": b"\xc0" + bytes(6) + b"\x01",
        "mode-base256-exec-high": b"\x80" + bytes(6) + b"\x49", "mode-garbage": b"07a5\0", "mode-empty": b"",
        "mode-setuid": octal(0o4755, 8), "mode-type-bits": octal(0o100755, 8),
        "mode-dir-bits-on-file": octal(0o40755, 8), "mode-8-digits": b"00000755", "mode-nul-exec": b"\x00" * 4 + b"755",
    }
    for name, value in mode_variants.items():
        add(cls, name, archive(go_mod, file("src/main.go", MAIN_GO, raw={"mode": value})))
    other_variants = {
        "mtime-invalid-octal": ("mtime", b"99999999999\0"), "mtime-base256-negative": ("mtime", base256(-1, 12)),
        "mtime-garbage": ("mtime", b"yesterday\0"), "mtime-base256": ("mtime", base256(1 << 40, 12)),
        "uid-garbage": ("uid", b"root\0"), "uid-base256-negative": ("uid", base256(-2, 8)),
        "gid-invalid-octal": ("gid", b"0000008\0"), "devmajor-garbage": ("devmajor", b"zz\0"),
        "devminor-invalid-octal": ("devminor", b"9\0"),
        "chksum-leading-nul": ("chksum", None), "chksum-base256": ("chksum", None),
        "chksum-signed": ("chksum", None), "chksum-no-space": ("chksum", None), "chksum-spaces": ("chksum", b" " * 8),
    }
    for name, (field, value) in other_variants.items():
        raw = _checksum_variant(name, value) if field == "chksum" else header("src/main.go", size=n, raw={field: value})
        add(cls, name, archive(go_mod, raw + pad(MAIN_GO)))
    # Go skips leading NULs in a number, a reader stopping at the first NUL
    # reads 0: what Go sees as the data of one file is another entry to it.
    hidden = file("src/evil.go", EVIL_GO)
    add(cls, "size-leading-nul-smuggles-an-entry",
        archive(go_mod, file("src/main.go"), entry("src/notes.txt", hidden,
                                                   raw={"size": b"\0" + b"%010o\0" % len(hidden)})))
    add(cls, "devmajor-garbage-v7", archive(go_mod, file("src/main.go", fmt="v7", raw={"devmajor": b"zz\0"})))
    add(cls, "pax-header-mtime-garbage", archive(go_mod, pax([("comment", "x")], raw={"mtime": b"zz\0"}),
                                                 file("src/main.go")))
    add(cls, "pax-header-size-base256", archive(go_mod, _pax_base256_size(), file("src/main.go")))

    cls = "pax size"
    add(cls, "overrides-header-size", archive(go_mod, pax([("size", str(len(EVIL_GO)))]),
                                              entry("src/main.go", EVIL_GO, size=3)))
    add(cls, "header-size-zero", archive(go_mod, pax([("size", str(n))]), file("src/main.go", size=0)))
    add(cls, "pax-size-smaller", archive(go_mod, pax([("size", "8")]), file("src/main.go")))
    add(cls, "pax-size-plus", archive(go_mod, pax([("size", f"+{n}")]), file("src/main.go")))
    add(cls, "pax-size-leading-zero", archive(go_mod, pax([("size", f"0{n}")]), file("src/main.go")))
    add(cls, "pax-size-negative", archive(go_mod, pax([("size", "-1")]), file("src/main.go")))
    add(cls, "pax-size-empty", archive(go_mod, pax([("size", "")]), file("src/main.go")))
    add(cls, "pax-size-space", archive(go_mod, pax([("size", f" {n}")]), file("src/main.go")))
    add(cls, "pax-size-on-symlink", module(pax([("size", "512")]), symlink("src/l", "main.go"), file("src/z.go")))
    add(cls, "pax-size-on-dir", module(pax([("size", "512")]), dir_("src/d/"), file("src/z.go")))

    cls = "pax records Go checks"
    for name, body in {
        "empty-key": pax_record("", "x"), "nul-in-key": pax_record("a\0b", "x"),
        "nul-in-uname": pax_record("uname", "ro\0ot"), "nul-in-comment": pax_record("comment", "a\0b"),
        "mtime-garbage": pax_record("mtime", "yesterday"), "mtime-fraction": pax_record("mtime", "1.5"),
        "mtime-bad-fraction": pax_record("mtime", "1.x"), "atime-garbage": pax_record("atime", "-"),
        "uid-garbage": pax_record("uid", "root"), "gid-overflow": pax_record("gid", "99999999999999999999999"),
        "length-plus": b"+11 path=a\n", "length-too-short": b"3 a=\n", "length-too-long": b"99 path=src/a.go\n",
        "no-equals": b"9 pathab\n", "no-newline": b"11 path=ab ", "trailing-garbage": pax_record("comment", "a") + b"x",
        "key-with-equals-value": pax_record("path", "src/a=b.go"), "charset": pax_record("hdrcharset", "BINARY"),
        "xattr": pax_record("SCHILY.xattr.user.x", "y"), "path-empty": pax_record("path", ""),
        "linkpath-empty": pax_record("linkpath", ""),
    }.items():
        add(cls, name, archive(go_mod, pax(body), file("src/main.go")))
    add(cls, "sparse-1.0", archive(go_mod, pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"),
                                                ("GNU.sparse.name", "src/main.go"),
                                                ("GNU.sparse.realsize", str(n))]),
                                   file("src/x.go", b"1\n0\n%d\n" % n + bytes(BLOCK - 7) + MAIN_GO,
                                        size=BLOCK + n)))
    add(cls, "sparse-unknown-version", archive(go_mod, pax([("GNU.sparse.major", "7"),
                                                            ("GNU.sparse.name", "src/evil.go")]), file("src/main.go")))
    add(cls, "sparse-name-alone", archive(go_mod, pax([("GNU.sparse.name", "src/evil.go")]), file("src/main.go")))

    cls = "names"
    add(cls, "trailing-slash-regular", module(file("src/extra.go/", OTHER_GO)))
    add(cls, "trailing-slash-regA", module(entry("src/extra/", b"", typeflag=b"\0")))
    add(cls, "trailing-slash-regA-pax", module(pax([("path", "src/extra/")]), entry("src/x", b"", typeflag=b"\0")))
    add(cls, "regA-file", module(entry("src/extra.go", OTHER_GO, typeflag=b"\0")))
    add(cls, "dot-slash", archive(file("./src/go.mod", GO_MOD), file("./src/main.go")))
    add(cls, "dot-slash-and-plain", module(file("./src/main.go", EVIL_GO)))
    add(cls, "double-slash", module(file("src//extra.go", OTHER_GO)))
    add(cls, "dot-component", module(file("src/./extra.go", OTHER_GO)))
    add(cls, "duplicate", module(file("src/main.go", EVIL_GO)))
    add(cls, "duplicate-dir", module(dir_("src/d/"), dir_("src/d/")))
    add(cls, "dir-then-file", module(dir_("src/d/"), file("src/d", OTHER_GO)))
    add(cls, "file-then-dir", module(file("src/d", OTHER_GO), dir_("src/d/")))
    add(cls, "name-100-bytes", module(file("src/" + "a" * 93 + ".go", OTHER_GO)))
    add(cls, "prefix", module(file("extra.go", OTHER_GO, raw={"prefix": b"src/pkg"})))
    add(cls, "prefix-with-pax-path", module(pax([("path", "src/a.go")]),
                                            file("b.go", OTHER_GO, raw={"prefix": b"src/pkg"})))
    add(cls, "prefix-on-v7", module(file("extra.go", OTHER_GO, fmt="v7", raw={"prefix": b"src/pkg"})))
    add(cls, "prefix-on-gnu", module(file("src/extra.go", OTHER_GO, fmt="gnu", raw={"prefix": b"src/pkg"})))
    add(cls, "prefix-gnu-bad-atime", module(file("extra.go", OTHER_GO, fmt="gnu",
                                                 raw={"prefix": b"src/pkg", "atime": b"src/pkg"})))
    add(cls, "prefix-star-trailer", module(file("extra.go", OTHER_GO, raw={"prefix": b"src/pkg/and/a/long/prefix"
                                                                                  + b"x" * 110,
                                                                        "star_trailer": b"tar\0"})))
    add(cls, "star-prefix-131", module(file("x.go", OTHER_GO, raw={"prefix": b"src/" + b"p" * 126 + b"/",
                                                                 476: b"00000000000\0", 488: b"00000000000\0",
                                                                 "star_trailer": b"tar\0"})))
    add(cls, "star-trailer-short-prefix", module(file("extra.go", OTHER_GO, raw={"prefix": b"src/pkg",
                                                                              "star_trailer": b"tar\0"})))
    add(cls, "magic-ustar-version-spaces", module(file("src/extra.go", OTHER_GO,
                                                       raw={"version": b"  ", "prefix": b"src/p"})))
    add(cls, "magic-gnu-bad-version", module(file("extra.go", OTHER_GO, fmt="gnu",
                                                  raw={"version": b"00", "prefix": b"src/p"})))
    add(cls, "L-with-garbage-after-nul", module(gnu_long(b"L", b"src/extra.go\0src/evil.go"), file("x", OTHER_GO)))
    add(cls, "L-not-terminated", module(gnu_long(b"L", "src/extra.go", terminate=False), file("x", OTHER_GO)))
    add(cls, "L-twice", module(gnu_long(b"L", "src/evil.go"), gnu_long(b"L", "src/extra.go"), file("x", OTHER_GO)))
    add(cls, "L-at-end", module(gnu_long(b"L", "src/extra.go")))
    add(cls, "x-at-end", module(pax([("path", "src/extra.go")])))
    add(cls, "non-utf8-name", module(file(b"src/\xff\xfe.go", OTHER_GO)))
    add(cls, "non-utf8-pax-path", module(pax([("path", b"src/\xff.go")]), file("src/x.go", OTHER_GO)))
    add(cls, "non-utf8-linkname", module(symlink("src/l", b"\xffmain.go")))
    add(cls, "absolute", module(file("/src/extra.go", OTHER_GO)))
    add(cls, "dotdot", module(file("src/../src/extra.go", OTHER_GO)))
    add(cls, "control-char", module(file("src/a\nb.go", OTHER_GO)))
    add(cls, "nul-in-pax-path", module(pax([("path", "src/a\0.go")]), file("src/x.go", OTHER_GO)))
    add(cls, "empty-name", module(file("", OTHER_GO)))
    add(cls, "top-level-file", module(file("README.md", b"# hi\n"), file("Makefile", b"all:\n")))
    add(cls, "meta-inf", module(file("META-INF/statedb/couchdb/indexes/i.json", b'{"index":{"fields":["a"]}}')))
    add(cls, "case-twins", module(file("src/Main.go", OTHER_GO)))

    cls = "entry types"
    add(cls, "dirs", archive(dir_("./"), dir_("src/"), dir_("src/sub/"), *base_module(), dir_("META-INF")))
    add(cls, "dot-dir", module(dir_(".")))
    add(cls, "dir-with-data", module(entry("src/d/", OTHER_GO, typeflag=b"5")))
    add(cls, "symlink", module(symlink("src/l.go", "main.go")))
    add(cls, "symlink-dir", module(dir_("src/sub/"), symlink("src/s", "sub")))
    add(cls, "symlink-with-data", module(entry("src/l", OTHER_GO, typeflag=b"2", linkname="main.go")))
    add(cls, "symlink-absolute", module(symlink("src/l", "/etc/passwd")))
    add(cls, "symlink-escape", module(symlink("src/l", "../../x")))
    add(cls, "hardlink", module(hardlink("src/copy.go", "src/main.go")))
    add(cls, "hardlink-dot-slash", module(hardlink("src/copy.go", "./src/main.go")))
    add(cls, "hardlink-with-data", module(entry("src/copy.go", OTHER_GO, typeflag=b"1", linkname="src/main.go")))
    add(cls, "hardlink-to-later", module(hardlink("src/copy.go", "src/later.go"), file("src/later.go")))
    add(cls, "hardlink-to-self", module(hardlink("src/copy.go", "src/copy.go")))
    add(cls, "hardlink-to-dir", module(dir_("src/d/"), hardlink("src/copy", "src/d")))
    add(cls, "exec", archive(go_mod, file("src/main.go", mode=0o755), file("src/run.sh", b"#!/bin/sh\n", mode=0o700)))
    add(cls, "exec-other-only", archive(go_mod, file("src/main.go", mode=0o601)))
    add(cls, "mode-7777", archive(go_mod, file("src/main.go", mode=0o7777)))
    add(cls, "mode-zero", archive(go_mod, file("src/main.go", mode=0)))
    for flag in (b"3", b"4", b"6", b"7", b"8", b"A", b"S", b"V", b"M", b"N", b"D", b"X", b" ", b"\xff", b"K"):
        add(cls, f"typeflag-{flag.hex()}", module(entry("src/odd", OTHER_GO, typeflag=flag, fmt="gnu")))
    add(cls, "typeflag-7-ustar", module(entry("src/odd.go", OTHER_GO, typeflag=b"7")))
    add(cls, "gnu-sparse-old", module(_old_gnu_sparse()))

    cls = "archive structure"
    full = module(file("src/extra.go", OTHER_GO))
    add(cls, "no-end-blocks", module(end=b""))
    add(cls, "one-end-block", module(end=bytes(BLOCK)))
    add(cls, "zero-block-then-entry", archive(*base_module(), bytes(BLOCK), file("src/hidden.go", EVIL_GO)))
    add(cls, "end-then-entry", archive(*base_module(), END, file("src/hidden.go", EVIL_GO)))
    add(cls, "end-then-garbage", archive(*base_module(), END, b"garbage" * 100))
    add(cls, "empty-archive", END)
    add(cls, "only-zero-block", bytes(BLOCK))
    add(cls, "no-data-at-all", b"")
    add(cls, "garbage", b"this is not a tar archive\n" * 40)
    for cut in (100, 512, 700, 1024, 1100, 1536, len(full) - BLOCK - 1, len(full) - 1):
        add(cls, f"truncated-at-{cut}", full[:cut])
    add(cls, "data-cut-in-padding", archive(*base_module(), file("src/extra.go", OTHER_GO)[:BLOCK + 40], end=b""))
    add(cls, "pax-cut", archive(go_mod, pax([("path", "src/main.go")])[:BLOCK + 10], end=b""))
    return cases


def _checksum_variant(kind: str, value: bytes | None) -> bytes:
    blk = bytearray(header("src/main.go", size=len(MAIN_GO), raw={"uname": b"r\xe9\xf6t"}))
    total = checksum(bytes(blk))
    if kind == "chksum-leading-nul":
        blk[148:156] = b"\0%06o\0" % total
    elif kind == "chksum-base256":
        blk[148:156] = base256(total, 8)     # (the checksum field itself counts as spaces)
    elif kind == "chksum-signed":
        signed = total - 256 * sum(1 for b in bytes(blk[:148] + blk[156:]) if b > 127)
        blk[148:156] = b"%06o\0 " % signed
    elif kind == "chksum-no-space":
        blk[148:156] = b"%07o\0" % total
    else:
        blk[148:156] = value or b""
    return bytes(blk)


def _pax_base256_size() -> bytes:
    body = pax_record("comment", "big")
    return header("PaxHeaders.0/x", b"x", raw={"size": base256(len(body), 12)}) + pad(body)


def _old_gnu_sparse() -> bytes:
    blk = bytearray(header("src/sparse.go", b"S", size=len(OTHER_GO), fmt="gnu", fix_checksum=False))
    put(blk, 386, octal(0, 12) + octal(len(OTHER_GO), 12))        # one sparse entry: offset 0, length
    put(blk, 483, octal(len(OTHER_GO), 12))                        # real size
    return with_checksum(blk) + pad(OTHER_GO)


# -- mutations of valid archives ---------------------------------------------------------

def _tarfile(members, fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as t:
        for name, kind, data, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = extra.get("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            info.linkname = extra.get("link", "")
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


def _bases() -> dict[str, bytes]:
    """Valid archives to mutate: regular files under src/ and META-INF/ with
    plain modes, as the peer accepts them (a mutation of a package ocibuild
    refuses anyway would prove nothing), written by tarfile in each format
    and by hand with pax, ustar prefix and GNU long names. The last two add
    what ocibuild may come to refuse: directory entries, a hard link."""
    long_dir = "src/" + "/".join(["deeply_nested_package"] * 6)
    index = ("META-INF/statedb/couchdb/indexes/i.json", tarfile.REGTYPE, b'{"index":{"fields":["a"]}}', {})
    plain = [("src/go.mod", tarfile.REGTYPE, GO_MOD, {}), ("src/main.go", tarfile.REGTYPE, MAIN_GO, {}),
             ("src/pkg/util.go", tarfile.REGTYPE, OTHER_GO, {}), index]
    long = [*plain[:2], (f"{long_dir}/a_file_with_a_long_name.go", tarfile.REGTYPE, OTHER_GO, {}),
            ("src/caf\u00e9.go", tarfile.REGTYPE, OTHER_GO, {}), index]
    dirs = [("src", tarfile.DIRTYPE, None, {}), ("src/pkg", tarfile.DIRTYPE, None, {}), *plain]
    return {
        "ustar": _tarfile(plain, tarfile.USTAR_FORMAT),
        "pax": _tarfile(long, tarfile.PAX_FORMAT),
        "gnu": _tarfile(long, tarfile.GNU_FORMAT),
        "hand": archive(pax([("path", "src/go.mod"), ("mtime", "1.25")]), file("x", GO_MOD),
                        file("main.go", raw={"prefix": b"src"}), gnu_long(b"L", "src/lib/lib.go"),
                        file("lib", OTHER_GO, fmt="gnu")),
        "ustar-dirs": _tarfile(dirs, tarfile.USTAR_FORMAT),
        "ustar-hardlink": _tarfile([*plain, ("src/copy.go", tarfile.LNKTYPE, None, {"link": "src/main.go"})],
                                   tarfile.USTAR_FORMAT),
    }
# Bases every mutation starts from; ocibuild must extract these (a test checks).
PLAIN_BASES = ("ustar", "pax", "gnu", "hand")


def headers_of(raw: bytes) -> list[int]:
    """Offsets of the header blocks of a well-formed tar (extension headers included)."""
    out, pos = [], 0
    while pos + BLOCK <= len(raw) and raw[pos:pos + BLOCK] != bytes(BLOCK):
        out.append(pos)
        flag = raw[pos + 156:pos + 157]
        size = int(raw[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        if raw[pos + 124] & 0x80:
            size = int.from_bytes(raw[pos + 125:pos + 136], "big")
        if flag in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = 0
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return out


def members_of(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each member, its extension headers included."""
    heads = headers_of(raw)
    ends = heads[1:] + [_end_of_data(raw, heads)]
    spans, start = [], None
    for head, end in zip(heads, ends, strict=True):
        if start is None:
            start = head
        if raw[head + 156:head + 157] not in (b"x", b"g", b"L", b"K"):
            spans.append((start, end))
            start = None
    return spans


def _end_of_data(raw: bytes, heads: list[int]) -> int:
    if not heads:
        return 0
    pos = heads[-1]
    size = int(raw[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
    if raw[pos + 156:pos + 157] in (b"1", b"2", b"3", b"4", b"5", b"6"):
        size = 0
    return pos + BLOCK + -(-size // BLOCK) * BLOCK


_NUMBER_VALUES = [b"", b" " * 12, b"\0" * 12, b"\0" + b"7" * 6, b" 755 ", b"0755 \0", b"7777777", b"8", b"-1",
                  b"0x10", b"1e3", b"\x80" + bytes(6) + b"\x01", b"\xff" * 8, b"\xc0" + bytes(6) + b"\x10",
                  b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00", b"00000000000\0", b"0000000001\0\0"]
_NAME_VALUES = [b"src/main.go", b"./src/main.go", b"src/main.go/", b"src/", b".", b"./", b"/src/x", b"../x",
                b"src/\xff", b"", b"src/x\0y", b"src//main.go", b"META-INF", b"src/go.mod", b"x" * 100]
_FLAG_VALUES = [b"0", b"\0", b"1", b"2", b"5", b"7", b"x", b"g", b"L", b"K", b"S", b"3", b"Z"]
_MAGIC_VALUES = [(b"ustar\0", b"00"), (b"ustar ", b" \0"), (b"\0" * 6, b"\0\0"), (b"ustar\0", b"  "),
                 (b"USTAR\0", b"00")]


def _mutate_field(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    out = bytearray(raw)
    pos = rng.choice(headers_of(raw))
    field = rng.choice([*NUMERIC, "name", "name", "linkname", "typeflag", "typeflag", "magic", "prefix", "size",
                        "size", "mode"])
    if field in NUMERIC:
        value = rng.choice(_NUMBER_VALUES)
    elif field in ("name", "linkname", "prefix"):
        value = rng.choice(_NAME_VALUES)[:FIELDS[field][1]]
    elif field == "typeflag":
        value = rng.choice(_FLAG_VALUES)
    else:
        magic, version = rng.choice(_MAGIC_VALUES)
        value = magic
        out[pos + 263:pos + 265] = version
    off, width = FIELDS[field]
    value = value[:width]
    out[pos + off:pos + off + width] = value.ljust(width, b"\0")
    out[pos:pos + BLOCK] = with_checksum(out[pos:pos + BLOCK])
    return f"{field}@{pos}={value[:16]!r}", bytes(out)


def _bitflip(rng: random.Random, raw: bytes, fix: bool) -> tuple[str, bytes]:
    out = bytearray(raw)
    pos = rng.choice(headers_of(raw))
    flips = []
    for _ in range(rng.randint(1, 3)):
        bit = rng.randrange(BLOCK * 8)
        if 148 * 8 <= bit < 156 * 8 and fix:
            continue
        out[pos + bit // 8] ^= 1 << (bit % 8)
        flips.append(bit)
    if fix:
        out[pos:pos + BLOCK] = with_checksum(out[pos:pos + BLOCK])
    return f"{pos}:{flips}", bytes(out)


def _insert_extension(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    spans = members_of(raw)
    start, _ = rng.choice(spans)
    names = ["src/main.go", "src/evil.go", "./src/main.go", "src/go.mod", "", "src/", "src/main.go/", "META-INF/x",
             "src/lib/x.go", "main.go"]
    kind = rng.choice(["x-path", "x-linkpath", "x-size", "x-mixed", "L", "K", "g", "L+x", "x+x", "zero"])
    if kind == "x-path":
        ext = pax([("path", rng.choice(names))])
    elif kind == "x-linkpath":
        ext = pax([("linkpath", rng.choice(names))])
    elif kind == "x-size":
        ext = pax([("size", str(rng.choice([0, 1, 29, 31, 511, 512, 513, 1 << 40])))])
    elif kind == "x-mixed":
        recs = [(rng.choice(["path", "linkpath", "size", "mtime", "uid", "uname", "comment"]),
                 rng.choice(names + ["0", "12", "1.5", "x"])) for _ in range(rng.randint(1, 4))]
        ext = pax(recs)
    elif kind in ("L", "K"):
        ext = gnu_long(kind.encode(), rng.choice(names))
    elif kind == "g":
        ext = pax([("path", rng.choice(names))], flag=b"g")
    elif kind == "L+x":
        a, b = rng.sample(names, 2)
        parts = [gnu_long(b"L", a), pax([("path", b)])]
        rng.shuffle(parts)
        ext = b"".join(parts)
    elif kind == "x+x":
        a, b = rng.sample(names, 2)
        ext = pax([("path", a)]) + pax([("comment", b)])
    else:
        ext = bytes(BLOCK)
    return f"{kind}@{start}", raw[:start] + ext + raw[start:]


def _restructure(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    spans = members_of(raw)
    kind = rng.choice(["drop", "duplicate", "swap", "drop-block", "dup-block"])
    if kind == "drop":
        a, b = rng.choice(spans)
        return f"drop@{a}", raw[:a] + raw[b:]
    if kind == "duplicate":
        a, b = rng.choice(spans)
        return f"dup@{a}", raw[:b] + raw[a:b] + raw[b:]
    if kind == "swap" and len(spans) > 1:
        (a1, b1), (a2, b2) = sorted(rng.sample(spans, 2))
        return f"swap@{a1},{a2}", raw[:a1] + raw[a2:b2] + raw[b1:a2] + raw[a1:b1] + raw[b2:]
    block = rng.randrange(spans[-1][1] // BLOCK) * BLOCK
    if kind == "drop-block":
        return f"drop-block@{block}", raw[:block] + raw[block + BLOCK:]
    return f"dup-block@{block}", raw[:block + BLOCK] + raw[block:]


def _mutations(per_kind: int) -> list[tuple[str, str, bytes]]:
    """(name, class, code.tar.gz bytes) of seeded mutations of each base."""
    out: list[tuple[str, str, bytes]] = []
    bases = _bases()
    for kind in ("bitflip", "bitflip-raw", "field", "extension", "restructure", "truncate", "truncate-gzip"):
        for i in range(per_kind):
            rng = random.Random(f"tar-corpus/{kind}/{i}")
            base_name = rng.choice(sorted(bases))
            raw = bases[base_name]
            if kind == "bitflip":
                what, raw = _bitflip(rng, raw, fix=True)
            elif kind == "bitflip-raw":
                what, raw = _bitflip(rng, raw, fix=False)
            elif kind == "field":
                what, raw = _mutate_field(rng, raw)
            elif kind == "extension":
                what, raw = _insert_extension(rng, raw)
            elif kind == "restructure":
                what, raw = _restructure(rng, raw)
            elif kind == "truncate":
                cut = rng.randrange(members_of(raw)[-1][1] + len(END))
                what, raw = f"at {cut}", raw[:cut]
            else:
                data = gz(raw)
                cut = rng.randrange(10, len(data))
                out.append((f"mutation/{kind}/{i:03d} {base_name} at {cut}", f"mutation: {kind}", data[:cut]))
                continue
            out.append((f"mutation/{kind}/{i:03d} {base_name} {what}", f"mutation: {kind}", gz(raw)))
    return out


@functools.cache
def corpus(per_kind: int = 80) -> tuple[Case, ...]:
    """Every case: the hand-written ones, the pristine bases, then the mutations."""
    cases = [Case(name, cls, gz(raw)) for name, cls, raw in _hand_written()]
    cases += [Case(f"base/{name}", "base", gz(raw)) for name, raw in sorted(_bases().items())]
    cases += [Case(name, cls, code) for name, cls, code in _mutations(per_kind)]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return tuple(cases)
