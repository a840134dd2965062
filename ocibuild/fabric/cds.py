"""Legacy (Fabric 1.x) chaincode packages: a protobuf ChaincodeDeploymentSpec,
or the same wrapped by `peer chaincode package -s` in a signed Envelope.

Only the few fields ocibuild needs are decoded, by hand, from the file
(the code package is never loaded into memory: its offset and length are
returned). Field numbers, from fabric-protos:

    ChaincodeDeploymentSpec { ChaincodeSpec chaincode_spec = 1; bytes code_package = 3; }
    ChaincodeSpec   { Type type = 1; ChaincodeID chaincode_id = 2; ChaincodeInput input = 3; int32 timeout = 4; }
    ChaincodeID     { string path = 1; string name = 2; string version = 3; }
    ChaincodeSpec.Type { UNDEFINED = 0; GOLANG = 1; NODE = 2; CAR = 3; JAVA = 4; }
    common.Envelope { bytes payload = 1; bytes signature = 2; }
    common.Payload  { Header header = 1; bytes data = 2; }
    SignedChaincodeDeploymentSpec { bytes chaincode_deployment_spec = 1; bytes instantiation_policy = 2; ... }

Decoding is stricter than protobuf's: a known field with the wrong wire
type is an error (real specs never have one), which also tells a bare CDS
from a signed Envelope without guessing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CDS_TYPE_CODES = {1: "golang", 2: "node", 3: "car", 4: "java"}
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class ProtoError(Exception):
    """Not the protobuf message expected (internal: the caller words the
    error). `chaincode` is the chaincode name when a chaincode_spec was read
    before the failure: then the file is a ChaincodeDeploymentSpec, damaged
    or cut short, rather than something else altogether."""

    def __init__(self, message: str, chaincode: str = ""):
        super().__init__(message)
        self.chaincode = chaincode


class Source:
    """Bytes to decode: an open file (read with pread) or bytes in memory."""

    def __init__(self, fd: int | None = None, data: bytes | None = None):
        self.fd, self.data = fd, data

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset:offset + n]
        assert self.fd is not None
        return os.pread(self.fd, n, offset)


def _varint(src: Source, pos: int, end: int) -> tuple[int, int]:
    raw = src.read(pos, min(10, end - pos))
    value = shift = 0
    for i, b in enumerate(raw):
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if value >> 64:
                raise ProtoError("varint overflows 64 bits")
            return value, pos + i + 1
        shift += 7
    raise ProtoError("truncated or over-long varint")


MAX_FIELDS = 10_000      # real specs have a handful; bounds the work on hostile input


def fields(src: Source, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message in [start, end): an int
    for varints, (offset, end) for length-delimited fields, None otherwise."""
    pos = start
    count = 0
    while pos < end:
        count += 1
        if count > MAX_FIELDS:
            raise ProtoError(f"more than {MAX_FIELDS} fields in one message")
        tag, pos = _varint(src, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > (1 << 29) - 1:
            raise ProtoError(f"invalid field number {number}")
        if wire == VARINT:
            value, pos = _varint(src, pos, end)
            yield number, wire, value
        elif wire == LEN:
            length, pos = _varint(src, pos, end)
            if length > end - pos:
                raise ProtoError("a field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (I64, I32):
            pos += 8 if wire == I64 else 4
            if pos > end:
                raise ProtoError("a fixed-size field runs past the end of its message")
            yield number, wire, None
        else:
            raise ProtoError(f"unsupported wire type {wire}")


def _expect(wire: int, want: int, what: str) -> None:
    if wire != want:
        raise ProtoError(f"{what} has wire type {wire}, not {want}")


def _string(src: Source, span: tuple[int, int], what: str, limit: int) -> str:
    start, end = span
    if end - start > limit:
        raise ProtoError(f"{what} is longer than {limit} bytes")
    try:
        return src.read(start, end - start).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"{what} is not valid UTF-8") from None


@dataclass
class Deployment:
    """What a CDS holds that ocibuild needs."""
    type_code: int
    path: str
    name: str
    version: str
    code: tuple[int, int]     # offset and end of code_package in the file

    @property
    def type(self) -> str:
        return CDS_TYPE_CODES.get(self.type_code, "")


def parse_cds(src: Source, start: int, end: int, limit: int) -> Deployment:
    """A ChaincodeDeploymentSpec in [start, end); raises ProtoError."""
    spec: dict = {"type": 0, "path": "", "name": "", "version": ""}
    seen_spec = False
    code = None
    try:
        for number, wire, value in fields(src, start, end):
            if number == 1:
                _expect(wire, LEN, "chaincode_spec")
                s, e = value
                if e - s > limit:
                    raise ProtoError(f"chaincode_spec is longer than {limit} bytes")
                _parse_spec(Source(data=src.read(s, e - s)), 0, e - s, spec, limit)
                seen_spec = True
            elif number == 3:
                _expect(wire, LEN, "code_package")
                code = value
        if not seen_spec:
            raise ProtoError("no chaincode_spec")
        if code is None or code[0] == code[1]:
            raise ProtoError("no code_package")
    except ProtoError as e:
        if seen_spec and spec["name"]:
            e.chaincode = spec["name"]
        raise
    return Deployment(spec["type"], spec["path"], spec["name"], spec["version"], code)


def _parse_spec(src: Source, start: int, end: int, spec: dict, limit: int) -> None:
    # Repeated occurrences of a message field merge, as protobuf specifies.
    for number, wire, value in fields(src, start, end):
        if number == 1:
            _expect(wire, VARINT, "chaincode_spec.type")
            spec["type"] = value
        elif number == 2:
            _expect(wire, LEN, "chaincode_spec.chaincode_id")
            for n2, w2, v2 in fields(src, *value):
                key = {1: "path", 2: "name", 3: "version"}.get(n2)
                if key:
                    _expect(w2, LEN, f"chaincode_id.{key}")
                    spec[key] = _string(src, v2, f"chaincode_id.{key}", limit)
        elif number == 3:
            _expect(wire, LEN, "chaincode_spec.input")
        elif number == 4:
            _expect(wire, VARINT, "chaincode_spec.timeout")


def parse_signed(src: Source, start: int, end: int, limit: int) -> Deployment:
    """Envelope → Payload.data → SignedChaincodeDeploymentSpec → CDS."""
    payload = _only(src, start, end, 1, "Envelope.payload")
    data = _only(src, *payload, 2, "Payload.data")
    cds = _only(src, *data, 1, "SignedChaincodeDeploymentSpec.chaincode_deployment_spec")
    return parse_cds(src, *cds, limit)


def _only(src: Source, start: int, end: int, want: int, what: str) -> tuple[int, int]:
    found = None
    for number, wire, value in fields(src, start, end):
        if number == want:
            _expect(wire, LEN, what)
            found = value
        elif number in (1, 2) and wire != LEN:
            raise ProtoError(f"field {number} beside {what} has wire type {wire}")
    if found is None:
        raise ProtoError(f"no {what}")
    return found


def parse(fd: int, length: int, limit: int) -> tuple[Deployment, bool]:
    """The deployment in a legacy package file: (deployment, signed?).
    Raises ProtoError with the bare-CDS reason when it is neither (the
    signed one's when only that read a chaincode_spec)."""
    src = Source(fd=fd)
    try:
        return parse_cds(src, 0, length, limit), False
    except ProtoError as first:
        try:
            return parse_signed(src, 0, length, limit), True
        except ProtoError as second:
            raise (second if second.chaincode and not first.chaincode else first) from None
