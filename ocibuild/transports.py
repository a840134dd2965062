"""Image references in the transport syntax of containers-transports(5):
`oci:PATH[:REF]`, `oci-archive:PATH[:REF]`, `docker-archive:PATH[:NAME:TAG]`,
`docker-daemon:NAME:TAG`, `containers-storage:NAME[:TAG]`, `docker://REF`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InputError

FILE_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
ENGINE_TRANSPORTS = ("docker-daemon", "containers-storage")
REGISTRY = "docker"

_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)"
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:{_HOST}(?={COMPONENT}))?{COMPONENT}(?:/{COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REF_NAME = re.compile(r"^[A-Za-z0-9]+(?:[-._:@/+][A-Za-z0-9]+)*$")


@dataclass(frozen=True)
class Reference:
    transport: str
    path: str = ""        # file transports
    ref: str = ""         # oci: ref.name annotation; archive: "name:tag"; engines: "name:tag"

    def __str__(self) -> str:
        if self.transport == REGISTRY:
            return f"docker://{self.ref}"
        if self.transport in ENGINE_TRANSPORTS:
            return f"{self.transport}:{self.ref}"
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_reference(text: str, what: str = "reference") -> Reference:
    transport, sep, rest = text.partition(":")
    if not sep:
        raise InputError(f"malformed {what} {text!r}: use TRANSPORT:..., e.g. oci:DIR[:tag], "
                         "oci-archive:FILE, docker-archive:FILE[:name:tag], docker-daemon:name:tag")
    if transport == REGISTRY and rest.startswith("//"):
        return Reference(REGISTRY, ref=rest[2:])
    if transport in FILE_TRANSPORTS:
        path, _, ref = rest.partition(":")
        if not path:
            raise InputError(f"malformed {what} {text!r}: the path is empty")
        if transport == "docker-archive" and ref:
            ref = image_name(ref, text)
        elif ref and not _REF_NAME.match(ref):
            raise InputError(f"malformed {what} {text!r}: {ref!r} is not a valid reference name")
        return Reference(transport, path, ref)
    if transport in ENGINE_TRANSPORTS:
        return Reference(transport, ref=image_name(rest, text))
    raise InputError(f"unknown transport {transport!r} in {what} {text!r}: use one of "
                     f"{', '.join(FILE_TRANSPORTS + ENGINE_TRANSPORTS)} or docker://")


def image_name(text: str, context: str = "") -> str:
    """`name[:tag]` checked against Docker's grammar; the tag defaults to latest."""
    name, tag = text, "latest"
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        name, tag = text[:colon], text[colon + 1:]
    where = f" in {context!r}" if context else ""
    if len(name) > 255:
        raise InputError(f"invalid image name{where}: {len(name)} characters, and engines allow 255; "
                         "use a shorter name")
    if not _NAME.match(name):
        raise InputError(f"invalid image name {name!r}{where}: use lowercase "
                         "[registry/]path/name, e.g. ocibuild/chaincode")
    if not TAG.match(tag):
        raise InputError(f"invalid tag {tag!r}{where}: letters, digits, '_', '.', '-', at most 128")
    return f"{name}:{tag}"


def familiar(name: str) -> str:
    """Docker's short form of a name: `docker.io/library/x:t` → `x:t`,
    `docker.io/a/b:t` → `a/b:t`; names on other registries unchanged."""
    for host in ("docker.io/", "index.docker.io/"):
        if name.startswith(host):
            rest = name[len(host):]
            if rest.startswith("library/") and rest.count("/") == 1:
                rest = rest[len("library/"):]
            return rest
    return name
