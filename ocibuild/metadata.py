"""`--metadata-file`: what a run made and wrote, as one JSON document a CI
job can read instead of scraping stdout. Its shape is the JSON Schema in
`ocibuild/schemas/metadata.json` (the README shows it); `schemaVersion`
changes only when a field changes meaning or goes away."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .oci.imageset import ImageSet
from .oci.reference import RegistryRef
from .outputs import Output, held_by

if TYPE_CHECKING:
    from .build import Outcome

SCHEMA_VERSION = 1


def metadata(outcome: Outcome) -> dict[str, Any]:
    found = outcome.images
    return {
        "schemaVersion": SCHEMA_VERSION,
        "digest": found.digest,
        "mediaType": found.media_type,
        "platforms": [str(p) for p in found.platforms],
        "images": [{
            "platform": str(image.platform),
            "digest": image.digest,
            "config": image.config.descriptor.digest,
            "layers": [{"digest": lay.descriptor.digest, "mediaType": lay.descriptor.media_type,
                        "size": lay.descriptor.size, "diffID": lay.diff_id} for lay in image.layers],
            "size": image.config.descriptor.size + sum(lay.descriptor.size for lay in image.layers),
            "sbom": outcome.sboms.get(image.digest),
        } for image in found.images],
        "outputs": [_output(out, found) for out in outcome.outputs],
        "builder": outcome.builder or None,
        "toolchain": outcome.toolchain or None,
        "timings": dict(outcome.timings),
    }


def _output(out: Output, found: ImageSet) -> dict[str, Any]:
    """An output: as named, the digest it holds (a single-platform output
    holds the host's image of a multi-platform set), and the full reference
    with that digest where the transport has one (a registry's)."""
    held = held_by(out, found)
    digest = held.digest
    ref = out.ref
    full = (f"{ref.host}/{ref.repo}" + (f":{ref.tag}" if ref.tag else "") + f"@{digest}"
            if isinstance(ref, RegistryRef) else str(ref))
    return {"ref": str(ref), "transport": ref.transport, "reference": full, "digest": digest,
            "platforms": [str(p) for p in held.platforms], "bytes": out.written}
