"""Building chaincode packages, good and hostile, in the tests: tar members
made with the standard library's tarfile (which will happily write '..',
absolute names, devices and links), gzip, the lifecycle package around
them, and a protobuf encoder for legacy ChaincodeDeploymentSpecs written
independently of the decoder under test."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib

GOOD_META = {"type": "golang", "path": "example.com/cc", "label": "cc_1.0"}
MAIN_GO = b"package main\n\nfunc main() {}\n"
GO_MOD = b"module example.com/cc\n\ngo 1.19\n"


# -- tar members -------------------------------------------------------------

def f(name: str, data: bytes = b"x", mode: int = 0o644, size: int | None = None):
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    info.mode = mode
    return info, data


def d(name: str, mode: int = 0o755):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, None


def sym(name: str, target: str):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def hard(name: str, target: str):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def special(name: str, kind: bytes):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def tar_bytes(members, fmt=tarfile.PAX_FORMAT, end: bool = True) -> bytes:
    """A tar of `members` ((TarInfo, data) pairs) exactly as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as t:
        for info, data in members:
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and data is not None:
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    raw = buf.getvalue()
    if not end:                       # tarfile always ends the archive; cut the end blocks
        raw = raw[:_end_of_members(raw)]
    return raw


def _end_of_members(raw: bytes) -> int:
    pos = 0
    while pos + 512 <= len(raw) and raw[pos:pos + 512] != bytes(512):
        size = int(raw[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        pos += 512 + -(-size // 512) * 512
    return pos


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def code_tar(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    return gz(tar_bytes(members, fmt))


def meta_bytes(meta=None) -> bytes:
    if isinstance(meta, bytes):
        return meta
    return json.dumps(GOOD_META if meta is None else meta).encode()


def package(meta=None, code: bytes | None = None, outer_extra=(), outer_first=(),
            fmt=tarfile.PAX_FORMAT) -> bytes:
    """A lifecycle package: metadata.json, code.tar.gz (a small module by
    default), then `outer_extra` members; `outer_first` members go first."""
    if code is None:
        code = code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO)])
    members = [*outer_first, f("metadata.json", meta_bytes(meta)), f("code.tar.gz", code), *outer_extra]
    return gz(tar_bytes(members, fmt))


def zeros_gzip(total: int, chunk: int = 64 << 20) -> bytes:
    """`total` zero bytes as a multi-member gzip stream, made cheaply: one
    member of `chunk` zeros compressed once, repeated (a valid gzip stream
    whose inflated size is `total`)."""
    assert total % chunk == 0 or total < chunk
    if total < chunk:
        return gz(bytes(total))
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = c.compress(bytes(chunk)) + c.flush()
    return member * (total // chunk)


# -- protobuf (an encoder, independent of ocibuild's decoder) ---------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def chaincode_id(path="", name="", version="") -> bytes:
    out = b""
    for number, value in ((1, path), (2, name), (3, version)):
        if value:
            out += field_bytes(number, value.encode())
    return out


def cds(code: bytes, type_code=1, path="example.com/cc", name="mycc", version="1.0",
        args=(b"init",)) -> bytes:
    """ChaincodeDeploymentSpec{chaincode_spec=1{type=1, chaincode_id=2{path=1,
    name=2, version=3}, input=3{args=1...}, timeout=4}, code_package=3}."""
    spec = b""
    if type_code:
        spec += field_varint(1, type_code)
    spec += field_bytes(2, chaincode_id(path, name, version))
    spec += field_bytes(3, b"".join(field_bytes(1, a) for a in args))
    spec += field_varint(4, 30)
    return field_bytes(1, spec) + field_bytes(3, code)


def signed_cds(cds_bytes: bytes) -> bytes:
    """Envelope{payload=1: Payload{header=1, data=2: SignedChaincodeDeploymentSpec{
    chaincode_deployment_spec=1, instantiation_policy=2, owner_endorsements=3}}, signature=2}."""
    header = field_bytes(1, b"channel-header") + field_bytes(2, b"signature-header")
    signed = field_bytes(1, cds_bytes) + field_bytes(2, b"policy") + field_bytes(3, b"endorsement")
    payload = field_bytes(1, header) + field_bytes(2, signed)
    return field_bytes(1, payload) + field_bytes(2, b"signature")
