"""An image: a manifest, its config blob and its layers — and the pure step
that makes a new image from a base, one new layer and config changes."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cached_property

from ..errors import InputError
from .blobs import Blob, Layer, bytes_blob
from .documents import config_json
from .model import (
    ANN_BASE_DIGEST,
    ANN_BASE_NAME,
    ANN_CREATED,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    canonical_json,
    manifest_json,
    rfc3339,
)


@dataclass(frozen=True)
class Image:
    manifest: bytes                # exactly as stored: its digest is the image's
    config: Blob
    layers: tuple[Layer, ...]
    media_type: str = OCI_MANIFEST

    @cached_property
    def config_doc(self) -> dict:
        return config_json(self.config.read(), self.config.where)

    @cached_property
    def manifest_doc(self) -> dict:
        return json.loads(self.manifest)

    @property
    def platform(self) -> Platform:
        c = self.config_doc
        return Platform(c.get("os", ""), c.get("architecture", ""), c.get("variant", "") or "")

    def descriptor(self, annotations: dict | None = None) -> Descriptor:
        plat = self.platform if self.platform.os else None
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
class ConfigChanges:
    """What the user (or a convention, e.g. Fabric's) changes in the base's
    config and the manifest's annotations. None means "keep the base's"."""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    on_path: str = ""              # a directory that must be on PATH (the binary's)

    def over(self, defaults: ConfigChanges) -> ConfigChanges:
        """These changes with `defaults` filling what they leave unset; in
        env, labels and annotations the keys given here win."""
        return ConfigChanges(
            entrypoint=self.entrypoint if self.entrypoint is not None else defaults.entrypoint,
            cmd=self.cmd if self.cmd is not None else defaults.cmd,
            env={**defaults.env, **self.env},
            user=self.user if self.user is not None else defaults.user,
            workdir=self.workdir if self.workdir is not None else defaults.workdir,
            labels={**defaults.labels, **self.labels},
            annotations={**defaults.annotations, **self.annotations},
            on_path=self.on_path or defaults.on_path)


@dataclass(frozen=True)
class Derivation:
    """Everything but the base and the layer that decides the new image."""
    platform: Platform
    created: int = 0               # SOURCE_DATE_EPOCH
    changes: ConfigChanges = ConfigChanges()
    base_name: str | None = None   # an existing base's name ("" if unnamed); None: built-in
    history: str = "ocibuild"


# Same bytes, OCI name: one media-type family per manifest.
_OCI_EQUIVALENT = {DOCKER_LAYER: OCI_LAYER, DOCKER_LAYER_GZIP: OCI_LAYER + "+gzip"}


def derive(base: Image, layer: Layer | None, d: Derivation) -> Image:
    """A new image: `base` + `layer` (if any) as `d` says. Pure: reads the
    base config, writes nothing, and depends on nothing but its arguments."""
    base_plat = base.platform
    if base.layers and base_plat.architecture and (
            base_plat.os, base_plat.architecture) != (d.platform.os, d.platform.architecture):
        raise InputError(f"the base image is {base_plat} but the image is {d.platform}; "
                         "pick a base for the same platform or pass --platform")
    created = rfc3339(d.created)
    cfg = copy.deepcopy(base.config_doc)
    cfg.update(d.platform.to_json())
    if not d.platform.variant:
        cfg.pop("variant", None)
    cfg["created"] = created
    cfg["config"] = _run_config(cfg.get("config") or {}, d.changes)
    layers = (*base.layers, layer) if layer is not None else base.layers
    cfg["rootfs"] = _rootfs(cfg.get("rootfs") or {}, layer)
    cfg["history"] = _history(cfg.get("history") or [], layer, created, d.history)
    config = bytes_blob(OCI_CONFIG, canonical_json(cfg), "config")
    manifest = manifest_json(config.descriptor, [_oci_descriptor(lay) for lay in layers],
                             _annotations(base, d, created))
    return Image(manifest, config, tuple(layers))


def _run_config(run: dict, ch: ConfigChanges) -> dict:
    """The `config` object (how the container runs) with `ch` applied."""
    run = dict(run)
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
    return {k: v for k, v in run.items() if v not in (None, [], {})}


def _rootfs(rootfs: dict, layer: Layer | None) -> dict:
    diff_ids = list(rootfs.get("diff_ids") or [])
    if layer is not None:
        diff_ids.append(layer.diff_id)
    return {**rootfs, "type": "layers", "diff_ids": diff_ids}


def _history(history: list, layer: Layer | None, created: str, created_by: str) -> list:
    entry: dict[str, str | bool] = {"created": created, "created_by": created_by}
    if layer is None:
        entry["empty_layer"] = True
    return [*history, entry]


def _annotations(base: Image, d: Derivation, created: str) -> dict:
    out = {ANN_CREATED: created}
    if d.base_name is not None:
        if d.base_name:
            out[ANN_BASE_NAME] = d.base_name
        out[ANN_BASE_DIGEST] = base.digest
    out.update(d.changes.annotations)
    return out


def _oci_descriptor(layer: Layer) -> Descriptor:
    d = layer.descriptor
    return Descriptor(_OCI_EQUIVALENT.get(d.media_type, d.media_type), d.digest, d.size, d.annotations)


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
