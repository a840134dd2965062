"""The shape of foreign JSON documents — an index, a manifest, an image
config — checked before use: every field ocibuild reads has the type it
must have, or the document is refused with one line naming the field. The
documents come from strangers (base images, registries); nothing here
echoes their bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InputError
from .digest import is_digest
from .model import Descriptor, Platform, parse_json


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


# config.config (how the container runs): the fields ocibuild reads or writes.
_RUN_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "Env": (_is_str_list, "a list of strings"),
    "Entrypoint": (_is_str_list, "a list of strings"),
    "Cmd": (_is_str_list, "a list of strings"),
    "Labels": (_is_str_map, "an object of strings"),
    "User": (_is_str, "a string"),
    "WorkingDir": (_is_str, "a string"),
}


def descriptors(doc: dict, key: str, what: str) -> list[Descriptor]:
    """`doc[key]`: a list of descriptors (absent: none)."""
    items = doc.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise InputError(f"{what}: {key} is not a list")
    return [descriptor(item, f"{what}: {key}[{i}]") for i, item in enumerate(items)]


def descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InputError(f"{what} is not a descriptor object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InputError(f"{what} has no mediaType")
    if not is_digest(digest):
        raise InputError(f"{what} has no sha256 digest (sha256: and 64 lowercase hex digits)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{what} has no size (a whole number of bytes)")
    if obj.get("artifactType") is not None and not isinstance(obj["artifactType"], str):
        raise InputError(f"{what}: artifactType is not a string")
    for field in ("annotations", "platform"):
        if obj.get(field) is not None and not isinstance(obj[field], dict):
            raise InputError(f"{what}: {field} is not an object")
    if obj.get("annotations") and not _is_str_map(obj["annotations"]):
        raise InputError(f"{what}: annotations are not all strings")
    plat = obj.get("platform")
    if plat and not all(isinstance(plat.get(k, ""), str) for k in ("os", "architecture", "variant")):
        raise InputError(f"{what}: platform fields are not strings")
    return Descriptor.from_json(obj)


class PlatformMissing(InputError):
    """An image (or index) has nothing for a wanted platform; `have` lists what it has."""

    def __init__(self, what: str, want: Platform, have: list[str]):
        super().__init__(f"{what} has no image for {want} (it has: {', '.join(have) or 'none'}); "
                         "pass --platform")
        self.what, self.want, self.have = what, want, have


def pick_platform(index: dict, want: Platform, what: str) -> Descriptor:
    """From an index document, the manifest for `want` (any variant when
    `want` names none). Artifacts (referrers such as SBOMs) are never picked."""
    descs = [d for d in descriptors(index, "manifests", what) if not d.artifact_type]
    for d in descs:
        p = d.platform
        if p and (p.os, p.architecture) == (want.os, want.architecture) and (
                not want.variant or p.variant == want.variant):
            return d
    raise PlatformMissing(what, want, [str(d.platform) for d in descs if d.platform])


MAX_ARTIFACT = 64 << 20     # bytes in an attached document (an SBOM); more is no SBOM


def artifact_payloads(doc: dict, subject: str, artifact_type: str, blob: Callable[[Descriptor], Any],
                      what: str) -> list[bytes]:
    """The `artifact_type` payloads of an artifact manifest, if its subject is
    `subject` (else none: an index's listing does not make it so)."""
    subj = doc.get("subject")
    if not isinstance(subj, dict) or subj.get("digest") != subject:
        return []
    out = []
    for lay in descriptors(doc, "layers", what):
        if lay.media_type != artifact_type:
            continue
        if lay.size > MAX_ARTIFACT:
            raise InputError(f"{what}: the {artifact_type} {lay.digest} claims {lay.size} bytes; "
                             f"more than {MAX_ARTIFACT} is not a real one")
        out.append(blob(lay).read())
    return out


def manifest_parts(doc: dict, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """An image manifest's config descriptor and layer descriptors."""
    if "config" not in doc:
        raise InputError(f"{what} has no config")
    return descriptor(doc["config"], f"{what}: config"), descriptors(doc, "layers", what)


def config_json(data: bytes, what: str) -> dict:
    """An image config, parsed and checked."""
    cfg = parse_json(data, what)
    for key in ("architecture", "os", "variant", "created"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise InputError(f"{what}: {key} is not a string")
    run = cfg.get("config")
    if run is not None:
        if not isinstance(run, dict):
            raise InputError(f"{what}: config is not an object")
        for key, (ok, kind) in _RUN_FIELDS.items():
            if run.get(key) is not None and not ok(run[key]):
                raise InputError(f"{what}: config.{key} is not {kind}")
    rootfs = cfg.get("rootfs")
    if rootfs is not None:
        if not isinstance(rootfs, dict):
            raise InputError(f"{what}: rootfs is not an object")
        ids = rootfs.get("diff_ids")
        if ids is not None and not (isinstance(ids, list) and all(is_digest(x) for x in ids)):
            raise InputError(f"{what}: rootfs.diff_ids is not a list of sha256 digests")
    history = cfg.get("history")
    if history is not None and not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        raise InputError(f"{what}: history is not a list of objects")
    return cfg


def diff_ids(cfg: dict) -> list[str]:
    """The diff_ids of a config checked by config_json."""
    return list((cfg.get("rootfs") or {}).get("diff_ids") or [])
