"""Image references, parsed once into typed values, in the transport syntax
of containers-transports(5):

  oci:PATH[:REF]               FileRef     (REF: the ref.name annotation)
  oci-archive:PATH[:REF]       FileRef
  docker-archive:PATH[:NAME:TAG]  FileRef  (REF: the image's name:tag)
  docker-daemon:NAME[:TAG]     EngineRef   (docker)
  containers-storage:NAME[:TAG]  EngineRef (podman)
  docker://HOST[:PORT]/REPO[:TAG][@sha256:HEX]  RegistryRef

Docker's name grammar lives here once: engine names and registry
references are checked by the same rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InputError
from .digest import is_digest

FILE_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
ENGINE_TRANSPORTS = {"docker-daemon": "docker", "containers-storage": "podman"}
REGISTRY = "docker"

DOCKER_HUB = "docker.io"
# Docker Hub is named docker.io but served from another host, and docker
# logs in to it under this historical key.
HUB_API = "registry-1.docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"

_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REF_NAME = re.compile(r"^[A-Za-z0-9]+(?:[-._:@/+][A-Za-z0-9]+)*$")
MAX_NAME = 255      # engines refuse longer repository names


@dataclass(frozen=True)
class FileRef:
    """An image in a file: `oci:`, `oci-archive:` or `docker-archive:`."""
    transport: str
    path: str
    ref: str = ""         # oci: the ref.name annotation; docker-archive: "name:tag"

    def __str__(self) -> str:
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


@dataclass(frozen=True)
class EngineRef:
    """An image in a local engine's store: `docker-daemon:` or `containers-storage:`."""
    transport: str
    name: str             # "name:tag", checked, the tag defaulted to latest

    @property
    def engine(self) -> str:
        return ENGINE_TRANSPORTS[self.transport]

    def __str__(self) -> str:
        return f"{self.transport}:{self.name}"


@dataclass(frozen=True)
class RegistryRef:
    """`docker://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`, with Docker's rules
    for short names (`alpine` is docker.io/library/alpine:latest)."""
    host: str          # as named, lowercased: "localhost:5000", "docker.io"
    repo: str          # "library/alpine"
    tag: str = ""
    digest: str = ""
    transport: str = field(default=REGISTRY, init=False, repr=False, compare=False)

    @property
    def api_host(self) -> str:
        """Where the registry API is served."""
        return HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """HOST/REPO[:TAG][@DIGEST]: the name an image pulled from here is known by."""
        return (f"{self.host}/{self.repo}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))

    def __str__(self) -> str:
        return "docker://" + self.name


Reference = FileRef | EngineRef | RegistryRef


def parse_reference(text: str, what: str = "reference") -> Reference:
    """The typed reference `text` names; InputError saying what is wrong."""
    transport, sep, rest = text.partition(":")
    if not sep:
        raise InputError(f"malformed {what} {text!r}: use TRANSPORT:..., e.g. oci:DIR[:tag], "
                         "oci-archive:FILE, docker-archive:FILE[:name:tag], docker-daemon:name:tag")
    if transport == REGISTRY and rest.startswith("//"):
        return parse_registry_ref(rest[2:], what, text)
    if transport in FILE_TRANSPORTS:
        path, _, ref = rest.partition(":")
        if not path:
            raise InputError(f"malformed {what} {text!r}: the path is empty")
        if transport == "docker-archive" and ref:
            ref = check_image_name(ref, text)
        elif ref and not _REF_NAME.fullmatch(ref):
            raise InputError(f"malformed {what} {text!r}: {ref!r} is not a valid reference name")
        return FileRef(transport, path, ref)
    if transport in ENGINE_TRANSPORTS:
        return EngineRef(transport, check_image_name(rest, text))
    raise InputError(f"unknown transport {transport!r} in {what} {text!r}: use one of "
                     f"{', '.join((*FILE_TRANSPORTS, *ENGINE_TRANSPORTS))} or docker://")


def check_image_name(text: str, context: str = "") -> str:
    """`[host[:port]/]path[:tag]` checked against Docker's grammar; returned
    as `name:tag`, the tag defaulting to latest."""
    name, tag = _split_tag(text)
    where = f" in {context!r}" if context else ""
    if len(name) > MAX_NAME:
        raise InputError(f"invalid image name{where}: {len(name)} characters, and engines allow "
                         f"{MAX_NAME}; use a shorter name")
    host, path = _split_host(name)
    if (host and not _HOST.fullmatch(host)) or not _PATH.fullmatch(path):
        raise InputError(f"invalid image name {name!r}{where}: use lowercase "
                         "[registry/]path/name, e.g. ocibuild/chaincode")
    if tag is not None and not _TAG.fullmatch(tag):
        raise InputError(f"invalid tag {tag!r}{where}: letters, digits, '_', '.', '-', at most 128")
    return f"{name}:{'latest' if tag is None else tag}"


def parse_registry_ref(text: str, what: str = "registry reference", full: str | None = None) -> RegistryRef:
    """Parse `[docker://]HOST[:PORT]/REPO[:TAG][@sha256:HEX]`. Without a
    host (the first component has no '.' or ':' and is not localhost) the
    name is on Docker Hub; without a tag or digest the tag is latest."""
    full = full or text
    if text.startswith("docker://"):
        text = text[len("docker://"):]
    rest, at, digest = text.partition("@")
    if at and not is_digest(digest):
        raise InputError(f"malformed {what} {full!r}: {digest!r} is not a sha256 digest "
                         "(sha256: and 64 lowercase hex digits)")
    rest, given = _split_tag(rest)
    tag = given or ""
    if given is not None and not _TAG.fullmatch(given):
        raise InputError(f"malformed {what} {full!r}: invalid tag {tag!r} "
                         "(letters, digits, '_', '.', '-'; at most 128)")
    host, repo = _split_host(rest)
    if host and not _HOST.fullmatch(host):
        raise InputError(f"malformed {what} {full!r}: invalid registry host {host!r}")
    host = host.lower() or DOCKER_HUB
    if host == "index.docker.io":
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    if not _PATH.fullmatch(repo) or len(repo) > MAX_NAME:
        raise InputError(f"malformed {what} {full!r}: invalid repository {repo!r}; use lowercase "
                         "HOST[:PORT]/path/name[:tag], e.g. registry.example.com:5000/acme/cc:1.0")
    if not tag and not digest:
        tag = "latest"
    return RegistryRef(host, repo, tag, digest)


def _split_tag(text: str) -> tuple[str, str | None]:
    """(name, tag); the tag is None when there is no ':' after the last '/'."""
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1:]
    return text, None


def _split_host(name: str) -> tuple[str, str]:
    """(host, path): the first component is a registry host when it has a
    '.' or ':', is localhost, has capitals, or is a bracketed IPv6 address."""
    first, sep, path = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first
                or first.startswith("[")):
        return first, path
    return "", name


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
