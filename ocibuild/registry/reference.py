"""Registry references: `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`, with Docker's
rules for short names (`alpine` is docker.io/library/alpine:latest)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError
from ..transports import COMPONENT, TAG   # Docker's name grammar, shared

DOCKER_HUB = "docker.io"
# Docker Hub is named docker.io but served from another host, and docker
# logs in to it under this historical key.
HUB_API = "registry-1.docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"

_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$")
_REPO = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class RegistryRef:
    host: str          # as named, lowercased: "localhost:5000", "docker.io"
    repo: str          # "library/alpine"
    tag: str = ""
    digest: str = ""

    @property
    def api_host(self) -> str:
        """Where the registry API is served."""
        return HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return (f"{self.host}/{self.repo}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def parse_registry_ref(text: str, what: str = "registry reference") -> RegistryRef:
    """Parse `[docker://]HOST[:PORT]/REPO[:TAG][@sha256:HEX]`. Without a
    host (the first component has no '.' or ':' and is not localhost) the
    name is on Docker Hub; without a tag or digest the tag is latest."""
    full = text
    if text.startswith("docker://"):
        text = text[len("docker://"):]
    rest, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        raise InputError(f"malformed {what} {full!r}: {digest!r} is not a sha256 digest "
                         "(sha256: and 64 lowercase hex digits)")
    tag = ""
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG.match(tag):
            raise InputError(f"malformed {what} {full!r}: invalid tag {tag!r} "
                             "(letters, digits, '_', '.', '-'; at most 128)")
    first, sep, path = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first
                or first.startswith("[")):
        host, repo = first.lower(), path
        if not _HOST.match(host):
            raise InputError(f"malformed {what} {full!r}: invalid registry host {first!r}")
    else:
        host, repo = DOCKER_HUB, rest
    if host == "index.docker.io":
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    if not _REPO.match(repo) or len(repo) > 255:
        raise InputError(f"malformed {what} {full!r}: invalid repository {repo!r}; use lowercase "
                         "HOST[:PORT]/path/name[:tag], e.g. registry.example.com:5000/acme/cc:1.0")
    if not tag and not digest:
        tag = "latest"
    return RegistryRef(host, repo, tag, digest)
