"""An image: a manifest, its config blob and its layers — and the pure step
that makes a new image from a base, one new layer and config changes."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cached_property

from .blobs import Blob, Layer, bytes_blob
from .errors import InputError
from .model import (ANN_BASE_DIGEST, ANN_BASE_NAME, ANN_CREATED, DOCKER_LAYER,
                    DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST,
                    Descriptor, Platform, canonical_json, manifest_json,
                    parse_json, rfc3339)


@dataclass(frozen=True)
class Image:
    manifest: bytes                # exactly as stored: its digest is the image's
    config: Blob
    layers: tuple[Layer, ...]
    media_type: str = OCI_MANIFEST

    @cached_property
    def config_doc(self) -> dict:
        return parse_json(self.config.read(), self.config.where)

    @cached_property
    def manifest_doc(self) -> dict:
        return json.loads(self.manifest)

    @property
    def platform(self) -> Platform:
        c = self.config_doc
        return Platform(c.get("os", ""), c.get("architecture", ""), c.get("variant", "") or "")

    def descriptor(self, annotations: dict | None = None, with_platform: bool = True) -> Descriptor:
        plat = self.platform if with_platform and self.platform.os else None
        return Descriptor.of(self.media_type, self.manifest,
                             annotations=annotations or {}, platform=plat)

    @property
    def digest(self) -> str:
        return self.descriptor().digest

    def blobs(self) -> list[Blob]:
        """Config and layers; each distinct digest once."""
        seen, out = set(), []
        for b in (self.config, *self.layers):
            if b.descriptor.digest not in seen:
                seen.add(b.descriptor.digest)
                out.append(b)
        return out


@dataclass(frozen=True)
class Changes:
    """What `assemble` changes in the base's config. None means "keep the base's"."""
    platform: Platform
    created: int = 0
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    base_name: str | None = None   # an existing base's name ("" if unnamed); None: built-in
    history: str = "ocibuild"
    on_path: str = ""              # a directory that must be on PATH (the binary's)


# Same bytes, OCI name: one media-type family per manifest.
_OCI_EQUIVALENT = {DOCKER_LAYER: OCI_LAYER, DOCKER_LAYER_GZIP: OCI_LAYER + "+gzip"}


def assemble(base: Image, layer: Layer | None, ch: Changes) -> Image:
    """A new image: `base` + `layer` (if any) with `ch` applied. Pure: reads the
    base config, writes nothing, and depends on nothing but its arguments."""
    base_plat = base.platform
    if base.layers and base_plat.architecture and (
            base_plat.os, base_plat.architecture) != (ch.platform.os, ch.platform.architecture):
        raise InputError(f"the base image is {base_plat} but the image is {ch.platform}; "
                         "pick a base for the same platform or pass --platform")
    created = rfc3339(ch.created)
    cfg = copy.deepcopy(base.config_doc)
    cfg.update(ch.platform.to_json())
    if not ch.platform.variant:
        cfg.pop("variant", None)
    cfg["created"] = created
    run = cfg.setdefault("config", {}) or {}
    cfg["config"] = run
    if ch.entrypoint is not None:
        run["Entrypoint"] = ch.entrypoint
        if ch.cmd is None:
            run.pop("Cmd", None)        # as a Dockerfile ENTRYPOINT does
    if ch.cmd is not None:
        run["Cmd"] = ch.cmd
    env = dict(ch.env)
    if ch.on_path and "PATH" not in env:
        path = _env_value(run.get("Env") or [], "PATH") or DEFAULT_PATH
        if ch.on_path not in path.split(":"):
            env["PATH"] = f"{ch.on_path}:{path}"
    if env:
        run["Env"] = _merge_env(run.get("Env") or [], env)
    if ch.user is not None:
        run["User"] = ch.user
    if ch.workdir is not None:
        run["WorkingDir"] = ch.workdir
    if ch.labels:
        run["Labels"] = {**(run.get("Labels") or {}), **ch.labels}
    for key in [k for k, v in run.items() if v in (None, [], {})]:
        del run[key]
    rootfs = cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["type"] = "layers"
    diff_ids = list(rootfs.get("diff_ids") or [])
    history = list(cfg.get("history") or [])
    layers = list(base.layers)
    if layer is not None:
        layers.append(layer)
        diff_ids.append(layer.diff_id)
        history.append({"created": created, "created_by": ch.history})
    else:
        history.append({"created": created, "created_by": ch.history, "empty_layer": True})
    rootfs["diff_ids"] = diff_ids
    cfg["history"] = history
    config = bytes_blob(OCI_CONFIG, canonical_json(cfg), "config")

    annotations = {ANN_CREATED: created}
    if ch.base_name is not None:
        if ch.base_name:
            annotations[ANN_BASE_NAME] = ch.base_name
        annotations[ANN_BASE_DIGEST] = base.digest
    annotations.update(ch.annotations)
    descs = []
    for lay in layers:
        d = lay.descriptor
        mt = _OCI_EQUIVALENT.get(d.media_type, d.media_type)
        descs.append(Descriptor(mt, d.digest, d.size, d.annotations))
    manifest = manifest_json(config.descriptor, descs, annotations)
    return Image(manifest, config, tuple(layers))


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _env_value(env: list[str], key: str) -> str | None:
    for item in env:
        k, _, v = item.partition("=")
        if k == key:
            return v
    return None


def _merge_env(env: list[str], changes: dict[str, str]) -> list[str]:
    out, seen = [], set()
    for item in env:
        key = item.split("=", 1)[0]
        if key in changes:
            if key not in seen:
                out.append(f"{key}={changes[key]}")
                seen.add(key)
        else:
            out.append(item)
    out.extend(f"{k}={v}" for k, v in changes.items() if k not in seen)
    return out


def empty_config() -> dict:
    return {"architecture": "", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
