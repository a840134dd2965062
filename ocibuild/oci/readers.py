"""Reading existing images: `oci:` layouts, `oci-archive:` and `docker-archive:`
tars. Nothing is extracted: blobs are read in place (a tar member by its
offset) and verified against their digest and size as they are read."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO, Protocol

from ..errors import BlobError, InputError
from ..fsutil import NotRegularFile, open_regular
from . import documents
from .blobs import Blob, Layer, bytes_blob
from .compression import sniff
from .digest import CHUNK, HEX, HashingWriter, copy_stream, hex_of, sha256_digest
from .documents import config_json, descriptors, manifest_parts, pick_platform
from .image import Image
from .model import (
    CONTAINERD_NAME,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    REF_NAME,
    Descriptor,
    Platform,
    manifest_json,
    parse_json,
)
from .reference import FileRef, check_image_name, familiar

MAX_DOCUMENT = 4 << 20   # bytes in an index, manifest or config (the registry's own manifest limit)
MAX_INDEX_DEPTH = 4       # an index of indexes is rare; deeper is an attack, not an image
_BLOB_PATH = re.compile(rf"^blobs/sha256/({HEX})$")
_OLD_CONFIG = re.compile(rf"^({HEX})\.json$")         # old `docker save`: <hex>.json


class _Slice(io.RawIOBase):
    """Bytes [offset, offset+size) of a file, as a stream of their own."""

    def __init__(self, path: str, offset: int, size: int):
        self._f = open(path, "rb")  # noqa: SIM115 -- the stream owns it; close() closes it
        self._f.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        got = self._f.readinto(memoryview(buf)[:n])
        self._left -= got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


class _Files(Protocol):
    """The named files of a layout: a directory's, or a tar's members."""
    def open(self, name: str) -> BinaryIO: ...

    def size(self, name: str) -> int: ...

    def has(self, name: str) -> bool: ...


class _DirFiles:
    """A layout directory's files: regular files only, never through a symlink."""

    def __init__(self, root: str, what: str):
        self.root, self.what = root, what

    def open(self, name: str) -> BinaryIO:
        try:
            return open_regular(self.root, name)
        except FileNotFoundError:
            raise BlobError(f"{name} is missing from {self.what}") from None
        except NotRegularFile as e:
            raise InputError(f"{name} in {self.what} is {e.what}; a layout holds its files itself, "
                             "as regular files") from None
        except OSError as e:
            raise InputError(f"cannot read {name} in {self.what}: {e.strerror}") from None

    def size(self, name: str) -> int:
        with self.open(name) as f:
            return os.fstat(f.fileno()).st_size

    def has(self, name: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(os.path.join(self.root, name)).st_mode)
        except OSError:
            return False


class _TarFiles:
    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        self._members: dict[str, tuple[int, int]] = {}
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{what} is not a regular file (a FIFO, device or directory); "
                                 "name an archive file")
            size = st.st_size
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    if m.isfile():
                        self._members[os.path.normpath(m.name).lstrip("/")] = (m.offset_data, m.size)
                end = tf.offset
            # tarfile takes a cut-off archive's end for the real one: check that
            # every member and the two end blocks are really there.
            if any(off + n > size for off, n in self._members.values()) or end + 1024 > size:
                raise InputError(f"{what} is truncated ({size} bytes); copy it again")
        except FileNotFoundError:
            raise InputError(f"{what}: no such file") from None
        except (tarfile.TarError, EOFError) as e:
            if "unexpected end of data" in str(e):       # cut off inside a member header
                raise InputError(f"{what} is truncated ({os.path.getsize(path)} bytes); copy it again") from None
            raise InputError(f"{what} is not a readable tar archive ({e}); check the file") from None
        except OSError as e:
            raise InputError(f"cannot read {what}: {e.strerror}") from None

    def open(self, name: str) -> BinaryIO:
        try:
            off, size = self._members[name]
        except KeyError:
            raise BlobError(f"{name} is missing from {self.what}") from None
        return io.BufferedReader(_Slice(self.path, off, size), CHUNK)

    def size(self, name: str) -> int:
        return self._members[name][1]

    def has(self, name: str) -> bool:
        return name in self._members


def _files(ref: FileRef) -> _Files:
    what = f"{ref.transport}:{ref.path}"
    if ref.transport == "oci":
        if not os.path.isdir(ref.path):
            raise InputError(f"{what}: no such directory")
        return _DirFiles(ref.path, what)
    return _TarFiles(ref.path, what)


def attached(ref: FileRef, subject: str, artifact_type: str) -> list[bytes]:
    """The payloads of the `artifact_type` artifacts attached to `subject` in
    the layout (or archive) `ref`: the referrers its index.json lists."""
    what = f"{ref.transport}:{ref.path}"
    files = _files(ref)
    if not files.has("index.json"):
        return []
    index = parse_json(_document(files, "index.json", what), f"index.json of {what}")
    found = []
    for d in descriptors(index, "manifests", f"index.json of {what}"):
        if d.artifact_type == artifact_type:
            doc = parse_json(_blob(files, d, "manifest", what).read(), f"manifest {d.digest} in {what}")
            found += documents.artifact_payloads(doc, subject, artifact_type,
                                                 lambda lay: _blob(files, lay, "artifact", what), what)
    return found


def open_image(ref: FileRef, platform: Platform | None = None) -> Image:
    """The image in the file `ref` names. From an index, the manifest for
    `platform` (default: the host's)."""
    what = f"{ref.transport}:{ref.path}"
    files = _files(ref)
    if ref.transport == "docker-archive":
        # A modern archive (docker 25+ save, ocibuild) holds the OCI layout too:
        # read that, so the image keeps its own manifest and digest.
        desc = _docker_archive_descriptor(files, ref.ref)
        if desc is not None:
            return _manifest(files, desc, what, platform)
        return _docker_archive(files, ref.ref, what)
    return _layout(files, ref.ref, what, platform)


def archive_identity(ref: FileRef) -> tuple[str, str | None]:
    """(config digest, name) of the image in `ref`, reading the archive's
    member table once and as little else as possible: of an old `docker
    save` archive only manifest.json and the config, never its layers. The
    config digest is what docker and podman call the image ID; the name is
    a docker-archive's NAME:TAG (given, else its first RepoTag), or None."""
    what = f"{ref.transport}:{ref.path}"
    if ref.transport != "docker-archive":
        return open_image(ref).config.descriptor.digest, None
    files = _TarFiles(ref.path, what)
    desc = _docker_archive_descriptor(files, ref.ref)
    if desc is not None:
        config = _manifest(files, desc, what, None).config.descriptor.digest
    else:
        config = sha256_digest(_document(files, _config_member(_docker_entry(files, ref.ref, what), what), what))
    if ref.ref:
        return config, ref.ref
    tags = _docker_entry(files, "", what).get("RepoTags") or []
    return config, check_image_name(str(tags[0]), what) if tags else None


def _docker_archive_descriptor(files, name: str) -> Descriptor | None:
    if not (files.has("oci-layout") and files.has("index.json")):
        return None
    try:
        index = json.loads(_document(files, "index.json", "docker archive"))
        descs = [Descriptor.from_json(d) for d in index.get("manifests") or []]
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError, InputError):
        return None
    if not name:
        return descs[0] if len(descs) == 1 else None
    for d in descs:
        full = d.annotations.get(CONTAINERD_NAME)
        if full and familiar(full) == familiar(name):
            return d
    return None


def _blob(files, desc: Descriptor, kind: str, what: str) -> Blob:
    if kind in ("manifest", "config") and desc.size > MAX_DOCUMENT:
        raise InputError(f"the {kind} {desc.digest} in {what} claims {desc.size} bytes; "
                         f"more than {MAX_DOCUMENT} is not a real {kind}")
    name = "blobs/sha256/" + hex_of(desc.digest)
    return Blob(desc, lambda: files.open(name), f"{kind} {desc.digest} in {what}")


def _layout(files, ref: str, what: str, platform: Platform | None) -> Image:
    if not files.has("oci-layout"):
        raise InputError(f"{what} is not an OCI layout (no oci-layout file)")
    index = parse_json(_document(files, "index.json", what), f"index.json of {what}")
    descs = descriptors(index, "manifests", f"index.json of {what}")
    if ref:
        picked = [d for d in descs if d.annotations.get(REF_NAME) == ref]
        if not picked:
            names = sorted({str(d.annotations[REF_NAME]) for d in descs if REF_NAME in d.annotations})
            raise InputError(f"{what} has no image named {ref!r}"
                             + (f"; it has {', '.join(names)}" if names else "; it has no named images"))
        desc = picked[-1]
    elif len(images := [d for d in descs if not d.artifact_type]) == 1:
        desc = images[0]           # the image: its referrers (SBOMs) are listed beside it
    else:
        descs = images
        names = sorted({d.annotations.get(REF_NAME, d.digest) for d in descs})
        raise InputError(f"{what} holds {len(descs)} images; name one with :REF ({', '.join(names) or 'none'})")
    return _manifest(files, desc, what, platform)


def _manifest(files, desc: Descriptor, what: str, platform: Platform | None, depth: int = 0) -> Image:
    data = _blob(files, desc, "manifest", what).read()
    if desc.media_type in INDEX_TYPES:
        if depth >= MAX_INDEX_DEPTH:
            raise InputError(f"{what} nests indexes more than {MAX_INDEX_DEPTH} deep; it is not a usable image")
        index = parse_json(data, f"index {desc.digest} in {what}")
        return _manifest(files, pick_platform(index, platform or Platform.host(), what), what, platform,
                         depth + 1)
    if desc.media_type not in MANIFEST_TYPES:
        raise InputError(f"{desc.digest} in {what} is a {desc.media_type}, not an image manifest")
    doc = parse_json(data, f"manifest {desc.digest} in {what}")
    config_desc, layer_descs = manifest_parts(doc, f"manifest {desc.digest} in {what}")
    config = _blob(files, config_desc, "config", what)
    diff_ids = documents.diff_ids(config_json(config.read(), config.where))
    if len(diff_ids) != len(layer_descs):
        raise InputError(f"image {desc.digest} in {what} has {len(layer_descs)} layers "
                         f"but {len(diff_ids)} diff_ids in its config")
    layers = tuple(Layer(d, _blob(files, d, "layer", what).opener, f"layer {d.digest} in {what}",
                         diff_id=diff_id) for d, diff_id in zip(layer_descs, diff_ids, strict=True))
    return Image(data, config, layers, desc.media_type)


def _docker_entry(files: _Files, ref: str, what: str) -> dict:
    """The manifest.json entry for `ref` (a name:tag, matched as docker
    matches names: docker.io/library/x is x), or the only one."""
    try:
        entries = json.loads(_document(files, "manifest.json", what))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"manifest.json of {what} is not valid JSON") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"manifest.json of {what} lists no image")
    if ref:
        picked = [e for e in entries
                  if familiar(ref) in {familiar(str(t)) for t in e.get("RepoTags") or []}]
        if not picked:
            tags = sorted(str(t) for e in entries for t in e.get("RepoTags") or [])
            raise InputError(f"{what} has no image tagged {ref!r}; it has {', '.join(tags) or 'no tags'}")
        return picked[0]
    if len(entries) == 1:
        return entries[0]
    raise InputError(f"{what} holds {len(entries)} images; name one with :NAME:TAG")


def _document(files: _Files, name: str, what: str) -> bytes:
    """A small JSON file of a layout or archive, refused when larger than
    any real one (containerd's own limit is of the same order)."""
    with files.open(name) as f:
        data = f.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise InputError(f"{name} of {what} is larger than {MAX_DOCUMENT} bytes; it is not an OCI document")
    return data


def _config_member(entry: dict, what: str) -> str:
    name = entry.get("Config")
    if not isinstance(name, str) or not name:
        raise InputError(f"manifest.json of {what} names no config for its image")
    return name


def _docker_archive(files: _Files, ref: str, what: str) -> Image:
    entry = _docker_entry(files, ref, what)
    member = _config_member(entry, what)
    cfg_bytes = _document(files, member, what)
    config = bytes_blob(OCI_CONFIG, cfg_bytes, f"config in {what}")
    _check_named(member, config.descriptor.digest, what)
    diff_ids = documents.diff_ids(config_json(cfg_bytes, config.where))
    paths = entry.get("Layers") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise InputError(f"manifest.json of {what}: Layers is not a list of member names")
    if len(diff_ids) != len(paths):
        raise InputError(f"{what} lists {len(paths)} layers but its config has {len(diff_ids)} diff_ids")
    layers = []
    for path, diff_id in zip(paths, diff_ids, strict=True):
        digest = _digest_of_member(files, path, what)
        with files.open(path) as f:
            comp = sniff(f.read(4))
        mt = OCI_LAYER if comp == "none" else f"{OCI_LAYER}+{comp}"
        if comp == "none" and digest != diff_id:
            raise BlobError(f"layer {path} in {what} is corrupt: it hashes to {digest}, "
                            f"but the config says {diff_id}")
        d = Descriptor(mt, digest, files.size(path))
        layers.append(Layer(d, _opener(files, path), f"layer {path} in {what}", diff_id=diff_id))
    manifest = manifest_json(config.descriptor, [lay.descriptor for lay in layers])
    return Image(manifest, config, tuple(layers))


def _opener(files: _Files, name: str) -> Callable[[], BinaryIO]:
    return lambda: files.open(name)


def _check_named(path: str, digest: str, what: str) -> None:
    m = _BLOB_PATH.match(path) or _OLD_CONFIG.match(path)
    if m and "sha256:" + m.group(1) != digest:
        raise BlobError(f"{path} in {what} is corrupt: its content hashes to {digest}")


def _digest_of_member(files: _Files, path: str, what: str) -> str:
    """Content-addressed members carry their digest in the name (checked when
    read); others (old `docker save`) are hashed here."""
    m = _BLOB_PATH.match(path)
    if m:
        return "sha256:" + m.group(1)
    h = HashingWriter()
    with files.open(path) as f:
        copy_stream(f, h)
    return h.digest
