"""OCI descriptors, platforms, manifests, indexes and configs, with the one
canonical JSON encoding used for every document ocibuild writes."""

from __future__ import annotations

import json
import platform as _host
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..errors import InputError
from .digest import check_digest, sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

REF_NAME = "org.opencontainers.image.ref.name"
ANN_CREATED = "org.opencontainers.image.created"
ANN_BASE_NAME = "org.opencontainers.image.base.name"
ANN_BASE_DIGEST = "org.opencontainers.image.base.digest"
CONTAINERD_NAME = "io.containerd.image.name"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"    # OCI 1.1: the config of an artifact manifest


def canonical_json(obj) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8: one encoding, one digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict = field(default_factory=dict, compare=False)
    platform: Platform | None = None
    artifact_type: str = ""            # OCI 1.1: what an artifact manifest holds (an SBOM, ...)

    def __post_init__(self):
        check_digest(self.digest)
        if self.size < 0:
            raise ValueError("negative size")

    @classmethod
    def of(cls, media_type: str, data: bytes, **kw) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data), **kw)

    def to_json(self) -> dict:
        out = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, obj: dict) -> Descriptor:
        try:
            plat = obj.get("platform")
            return cls(
                media_type=str(obj["mediaType"]),
                digest=str(obj["digest"]),
                size=int(obj["size"]),
                annotations=dict(obj.get("annotations") or {}),
                platform=Platform.from_json(plat) if plat else None,
                artifact_type=str(obj.get("artifactType") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"malformed descriptor ({type(e).__name__}); the image is damaged") from None


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm",
                 "i386": "386", "i686": "386", "ppc64le": "ppc64le",
                 "s390x": "s390x", "riscv64": "riscv64"}
_PLATFORM = re.compile(r"^([a-z0-9]+)/([a-z0-9_]+)(?:/([a-z0-9]+))?$")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        m = _PLATFORM.fullmatch(text)
        if not m:
            raise InputError(
                f"malformed platform {text!r}: use os/arch[/variant], e.g. linux/amd64")
        return cls(m.group(1), m.group(2), m.group(3) or "")

    @classmethod
    def host(cls) -> Platform:
        machine = _host.machine().lower()
        arch = _ARCH_ALIASES.get(machine, machine)
        return cls("linux", arch, "v7" if machine == "armv7l" else "")

    @classmethod
    def from_json(cls, obj: dict) -> Platform:
        return cls(str(obj.get("os", "")), str(obj.get("architecture", "")),
                   str(obj.get("variant", "") or ""))

    def to_json(self) -> dict:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def manifest_json(config: Descriptor, layers: list[Descriptor],
                  annotations: dict | None = None) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


def index_json(manifests: list[Descriptor], annotations: dict | None = None) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX,
           "manifests": [d.to_json() for d in manifests]}
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


def parse_json(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply to be an OCI document") from None
    if not isinstance(obj, dict):
        raise InputError(f"{what} is not a JSON object")
    return obj
