"""What one run writes: one image, or an OCI index of per-platform images,
and the artifacts attached to them as OCI 1.1 referrers (the SBOMs): an
artifact manifest whose `subject` is the image it describes.

Pure: documents and blobs in memory or in the work store; every output
reads what it needs from here."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cached_property

from ..errors import InputError
from .blobs import Blob, bytes_blob
from .image import Image
from .model import (
    ANN_CREATED,
    EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    canonical_json,
    index_json,
    rfc3339,
)

EMPTY_JSON = b"{}"          # the empty config every artifact manifest points at (image-spec 1.1)


@dataclass(frozen=True)
class Referrer:
    """An artifact manifest attached to `subject` (OCI 1.1 referrers)."""
    manifest: bytes
    blobs: tuple[Blob, ...]            # its config (the empty JSON) and its payload
    artifact_type: str
    subject: Descriptor

    @cached_property
    def descriptor(self) -> Descriptor:
        annotations = json.loads(self.manifest).get("annotations") or {}
        return Descriptor.of(OCI_MANIFEST, self.manifest, annotations=annotations,
                             artifact_type=self.artifact_type)

    @property
    def digest(self) -> str:
        return self.descriptor.digest


def referrer(subject: Descriptor, artifact_type: str, payload: bytes, created: int) -> Referrer:
    """`payload` (of media type `artifact_type`) as an artifact manifest whose
    subject is `subject`. Deterministic: same payload, subject and time, same digest."""
    empty = Descriptor.of(EMPTY_CONFIG, EMPTY_JSON)
    layer = bytes_blob(artifact_type, payload, f"{artifact_type} for {subject.digest}")
    doc = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        # The empty descriptor carries its two bytes inline, as the spec suggests.
        "config": {**empty.to_json(), "data": base64.b64encode(EMPTY_JSON).decode()},
        "layers": [layer.descriptor.to_json()],
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json(),
        "annotations": {ANN_CREATED: rfc3339(created)},
    }
    config = Blob(empty, bytes_blob(EMPTY_CONFIG, EMPTY_JSON).opener, "empty config", trusted=True)
    return Referrer(canonical_json(doc), (config, layer), artifact_type, subject)


@dataclass(frozen=True)
class ImageSet:
    """One image, or several (one per platform) under `index`; and referrers."""
    images: tuple[Image, ...]
    index: bytes | None = None
    referrers: tuple[Referrer, ...] = ()

    @property
    def media_type(self) -> str:
        return OCI_INDEX if self.index is not None else self.images[0].media_type

    @property
    def manifest(self) -> bytes:
        """The top document: the index, or the one image's manifest."""
        return self.index if self.index is not None else self.images[0].manifest

    def descriptor(self, annotations: dict | None = None) -> Descriptor:
        if self.index is None:
            return self.images[0].descriptor(annotations)
        return Descriptor.of(OCI_INDEX, self.index, annotations=annotations or {})

    @property
    def digest(self) -> str:
        return self.descriptor().digest

    @property
    def platforms(self) -> list[Platform]:
        return [i.platform for i in self.images]

    def manifests(self) -> list[Blob]:
        """Every manifest as a blob: the images', the referrers', then the index
        (a registry needs what a document points at before the document)."""
        out = [bytes_blob(i.media_type, i.manifest, "manifest") for i in self.images]
        out += [bytes_blob(OCI_MANIFEST, r.manifest, "referrer manifest") for r in self.referrers]
        if self.index is not None:
            out.append(bytes_blob(OCI_INDEX, self.index, "index"))
        return out

    def blobs(self) -> list[Blob]:
        """Configs, layers and referrer payloads; each distinct digest once."""
        seen, out = set(), []
        for b in (*(b for i in self.images for b in i.blobs()), *(b for r in self.referrers for b in r.blobs)):
            if b.descriptor.digest not in seen:
                seen.add(b.descriptor.digest)
                out.append(b)
        return out

    def only(self, platform: Platform) -> ImageSet:
        """The image for `platform` alone (os and architecture match), without referrers."""
        for image in self.images:
            if same_platform(image.platform, platform):
                return ImageSet((image,))
        raise InputError(f"the image has no {platform} variant (it has: "
                         f"{', '.join(str(p) for p in self.platforms)})")

    def with_referrers(self, referrers: tuple[Referrer, ...]) -> ImageSet:
        return ImageSet(self.images, self.index, referrers)


def image_set(images: list[Image], annotations: dict | None = None) -> ImageSet:
    """One image as itself; several under an OCI index (in the order given,
    each with its platform), carrying `annotations`."""
    if len(images) == 1:
        return ImageSet((images[0],))
    return ImageSet(tuple(images), index_json([i.descriptor() for i in images], annotations))


def same_platform(a: Platform, b: Platform) -> bool:
    """What a runtime matches: os and architecture (a variant is a refinement)."""
    return (a.os, a.architecture) == (b.os, b.architecture)
