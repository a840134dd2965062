"""Bases: the built-in ones defined as data in `layers/`, and existing images
named by a transport reference.

A built-in definition (`layers/NAME.json`) holds a description, the image
config, inline `entries` (files by their lines, directories, symlinks) and
`archives`: data files shipped beside it (`layers/PACKAGE.tar.xz`, made from
a Debian package by scripts/update-bases) whose sha256 and size, and those of
the tar inside, are recorded in the definition and checked on every load. An
archive may hold only regular files, directories and symlinks, owned 0:0,
with plain permission bits, at normalised relative paths, symlinks staying
inside the image root. `extends` names a definition whose entries, archives
and config come first (the config unless given again)."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import posixpath
import tarfile
from importlib import resources
from importlib.resources.abc import Traversable

from ..errors import BlobError, InputError, OcibuildError
from .blobs import Layer, WorkStore, bytes_blob
from .compression import Compression
from .entries import DIR, FILE, SYMLINK, Entry, Node, image_path, parse_mode, tree_of, with_parents
from .image import Image, empty_config
from .model import OCI_CONFIG, canonical_json, manifest_json, rfc3339

_PACKAGE = "ocibuild.builtin_layers"
_MERGED = ("entries", "archives")


def _data() -> Traversable:
    """The folder of the definitions and their data files (a function, so
    that tests can point it at a copy)."""
    return resources.files(_PACKAGE)


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in _data().iterdir() if p.name.endswith(".json"))


def builtin_definition(name: str) -> dict:
    """The definition of built-in base `name`, with what it extends merged in."""
    if name not in builtin_names():
        raise InputError(f"unknown base {name!r}: use one of {', '.join(builtin_names())}, "
                         "or a reference such as oci:DIR[:ref] or docker-archive:FILE")
    return _resolved(name, ())


def _resolved(name: str, seen: tuple[str, ...]) -> dict:
    if name in seen or name not in builtin_names():
        raise ValueError(f"built-in base {seen[-1]} extends {name!r}, which is "
                         f"{'itself or a base extending it' if name in seen else 'not a built-in base'}")
    defn = json.loads(_data().joinpath(f"{name}.json").read_text("utf-8"))
    parent = defn.pop("extends", None)
    if parent is None:
        return defn
    out = _resolved(parent, (*seen, name))
    for key in _MERGED:
        out[key] = [*out.get(key, []), *defn.pop(key, [])]
    out.update(defn)
    return out


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
    for spec in defn.get("archives", []):
        out.extend(archive_entries(spec))
    return with_parents(out)


# --- archives: data files shipped with the definitions ------------------------

def archive_entries(spec: dict, data: bytes | None = None) -> list[Entry]:
    """The entries of the archive `spec` names (its content read from the
    package unless `data` is given), after checking the file's and the tar's
    sha256 and size against `spec` and every member against the rules."""
    name = str(spec["file"])
    if "/" in name or name.startswith("."):
        raise ValueError(f"built-in archive name {name!r} is not a plain file name")
    where = f"built-in base data {name}"
    if data is None:
        data = _data().joinpath(name).read_bytes()
    _check_digest(data, spec["sha256"], spec["size"], where)
    tar = _unxz(data, spec["tar_size"], where)
    _check_digest(tar, spec["tar_sha256"], spec["tar_size"], f"the tar in {where}")
    return tar_entries(tar, where)


def _check_digest(data: bytes, sha256: str, size: int, where: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256 or len(data) != size:
        raise BlobError(f"{where} is damaged: sha256 {got} ({len(data)} bytes), its definition says "
                        f"{sha256} ({size} bytes); reinstall ocibuild")


def _unxz(data: bytes, size: int, where: str) -> bytes:
    """xz-decompressed `data`, reading no more than `size` + 1 bytes out."""
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = d.decompress(data, max_length=size + 1)
    except lzma.LZMAError as e:
        raise BlobError(f"{where} is not xz data: {e}") from None
    if len(out) != size or not d.eof or d.unused_data:
        raise BlobError(f"{where} does not hold exactly the {size}-byte tar its definition says")
    return out


def tar_entries(tar: bytes, where: str) -> list[Entry]:
    """Entries of an uncompressed archive tar, refusing anything but regular
    files, directories and symlinks at normalised paths, owned 0:0, with no
    setuid/setgid/sticky bits, each path once, symlinks inside the root."""
    out: list[Entry] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
            for m in tf:
                _check_member(m, seen, where)
                if m.type == tarfile.DIRTYPE:
                    out.append(Entry(m.name, DIR, m.mode))
                elif m.type == tarfile.SYMTYPE:
                    out.append(Entry(m.name, SYMLINK, 0o777, link=m.linkname))
                else:
                    f = tf.extractfile(m)
                    content = f.read() if f is not None else b""
                    out.append(Entry(m.name, FILE, m.mode, size=len(content), data=content))
    except tarfile.TarError as e:
        raise OcibuildError(f"{where} is not a readable tar: {e}") from None
    return out


def _check_member(m: tarfile.TarInfo, seen: set[str], where: str) -> None:
    def refuse(why: str) -> OcibuildError:
        return OcibuildError(f"{where}: entry {m.name!r} refused: {why}")

    parts = m.name.split("/")
    if "\0" in m.name or any(p in ("", ".", "..") for p in parts):
        raise refuse("not a normalised relative path")
    if m.name in seen:
        raise refuse("the path comes twice")
    seen.add(m.name)
    if m.type not in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE):
        raise refuse("only regular files, directories and symlinks may be in it")
    if m.pax_headers:
        raise refuse("extended (pax) headers")
    if (m.uid, m.gid) != (0, 0):
        raise refuse(f"owner {m.uid}:{m.gid}, not 0:0")
    if m.type != tarfile.SYMTYPE and m.mode & ~0o777:
        raise refuse(f"mode {m.mode:o} has setuid, setgid or sticky bits")
    if m.type == tarfile.SYMTYPE:
        if not m.linkname or m.linkname.startswith("/") or "\0" in m.linkname:
            raise refuse(f"symlink target {m.linkname!r} is not a relative path")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname))
        if target == ".." or target.startswith("../"):
            raise refuse(f"symlink target {m.linkname!r} leads outside the image root")


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
        packages = [f"{a['debian']['package']} {a['debian']['version']}" for a in defn.get("archives", [])]
        made = f"ocibuild built-in base {name}" + (f" (Debian {', '.join(packages)})" if packages else "")
        cfg["history"] = [{"created": rfc3339(0), "created_by": made}]
    config = bytes_blob(OCI_CONFIG, canonical_json(cfg), "config")
    manifest = manifest_json(config.descriptor, [lay.descriptor for lay in layers])
    return Image(manifest, config, layers), tree_of(entries)
