"""Bases: the built-in ones defined as data in `layers/`, and existing images
named by a transport reference."""

from __future__ import annotations

import json
from importlib import resources

from ..errors import InputError
from .blobs import Layer, WorkStore, bytes_blob
from .compression import Compression
from .entries import DIR, FILE, SYMLINK, Entry, Node, image_path, parse_mode, tree_of, with_parents
from .image import Image, empty_config
from .model import OCI_CONFIG, canonical_json, manifest_json, rfc3339

_PACKAGE = "ocibuild.builtin_layers"


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(_PACKAGE).iterdir()
                  if p.name.endswith(".json"))


def builtin_definition(name: str) -> dict:
    if name not in builtin_names():
        raise InputError(f"unknown base {name!r}: use one of {', '.join(builtin_names())}, "
                         "or a reference such as oci:DIR[:ref] or docker-archive:FILE")
    return json.loads(resources.files(_PACKAGE).joinpath(f"{name}.json").read_text("utf-8"))


def builtin_entries(defn: dict) -> list[Entry]:
    out = []
    for item in defn["entries"]:
        kind = item["type"]
        path = image_path(item["path"])
        mode = parse_mode(item["mode"])
        uid, gid = int(item.get("uid", 0)), int(item.get("gid", 0))
        if kind == FILE:
            data = ("\n".join(item["lines"]) + "\n").encode("utf-8")
            out.append(Entry(path, FILE, mode, uid, gid, size=len(data), data=data))
        elif kind == DIR:
            out.append(Entry(path, DIR, mode, uid, gid))
        elif kind == SYMLINK:
            out.append(Entry(path, SYMLINK, 0o777, uid, gid, link=item["target"]))
        else:
            raise ValueError(f"built-in layer entry of unknown type {kind!r}")
    return with_parents(out)


def builtin_base(name: str, store: WorkStore, comp: Compression) -> tuple[Image, dict[str, Node]]:
    """The built-in base `name` and the set of paths it holds. Its layer is
    fixed (mtime 0), so its diff_id never changes; see the golden test."""
    defn = builtin_definition(name)
    entries = builtin_entries(defn)
    cfg = empty_config()
    cfg["config"] = dict(defn.get("config") or {})
    layers: tuple[Layer, ...] = ()
    if entries:
        layer = store.write_layer(entries, comp, mtime=0)
        layers = (layer,)
        cfg["rootfs"]["diff_ids"] = [layer.diff_id]
        cfg["history"] = [{"created": rfc3339(0), "created_by": f"ocibuild built-in base {name}"}]
    config = bytes_blob(OCI_CONFIG, canonical_json(cfg), "config")
    manifest = manifest_json(config.descriptor, [lay.descriptor for lay in layers])
    return Image(manifest, config, layers), tree_of(entries)

