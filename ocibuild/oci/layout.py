"""The OCI image layout, as a directory or as one tar: its files, blob
writes that are idempotent and atomic, and the locked update of index.json."""

from __future__ import annotations

import fcntl
import io
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import OutputError
from ..fsutil import atomic_write, copy_in_kernel, link_into, publish, unlink_quietly
from .blobs import Blob
from .digest import CHUNK, copy_stream, file_digest, hex_of
from .image import Image
from .imageset import ImageSet
from .model import CONTAINERD_NAME, OCI_INDEX, REF_NAME, Descriptor, canonical_json, index_json, parse_json
from .tarwriter import DIR, end_archive, write_member

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = canonical_json({"imageLayoutVersion": "1.0.0"})


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + hex_of(digest)


@dataclass(frozen=True)
class LayoutFile:
    """A file of a layout or archive, read on demand (verified for blobs)."""
    name: str
    size: int
    open: Callable[[], BinaryIO]


def image_blobs(images: ImageSet) -> list[Blob]:
    """Every blob of a layout holding `images`: manifests (and index), configs, layers, referrers."""
    return [*images.manifests(), *images.blobs()]


def index_entries(images: ImageSet, annotations: dict) -> list[Descriptor]:
    """What index.json lists for `images`: the image (or index), named by
    `annotations`, then its referrers, unnamed, with their artifactType
    (how OCI 1.1 tools find an SBOM in a layout)."""
    return [images.descriptor(annotations), *(r.descriptor for r in images.referrers)]


def layout_files(images: ImageSet, index_annotations: dict) -> list[LayoutFile]:
    """Every file of a layout holding just these images, in archive order."""
    index = index_json(index_entries(images, index_annotations))
    out = [LayoutFile(LAYOUT_FILE, len(LAYOUT_VERSION), _const(LAYOUT_VERSION)),
           LayoutFile("index.json", len(index), _const(index))]
    for b in image_blobs(images):
        out.append(LayoutFile(blob_name(b.descriptor.digest), b.descriptor.size, b.open))
    return out


def docker_archive_files(image: Image, name: str) -> list[LayoutFile]:
    """The files of a docker-archive: the OCI layout (with the name as
    `docker save` records it) plus the `manifest.json` that `docker load`
    reads (docker 20.10, podman and skopeo all load it). One image, no
    referrers: engines load a single platform and keep no artifacts."""
    files = layout_files(ImageSet((image,)), index_annotations(name, docker=True))
    doc = canonical_json([{
        "Config": blob_name(image.config.descriptor.digest),
        "RepoTags": [name] if name else [],
        "Layers": [blob_name(lay.descriptor.digest) for lay in image.layers],
    }])
    files.append(LayoutFile("manifest.json", len(doc), _const(doc)))
    return files


def index_annotations(name: str, docker: bool) -> dict:
    """How an image's name is recorded in index.json."""
    if not name:
        return {}
    if docker:   # as `docker save` does: containerd's full name, the tag as ref.name
        return {CONTAINERD_NAME: name, REF_NAME: name.rsplit(":", 1)[1]}
    return {REF_NAME: name}


def _const(data: bytes):
    return lambda: io.BytesIO(data)


def write_archive(out: BinaryIO, files: list[LayoutFile], mtime: int) -> None:
    """A tar of `files` with the blobs/ directories; sorted, so deterministic."""
    write_member(out, "blobs", 0, None, mtime, DIR)
    write_member(out, "blobs/sha256", 0, None, mtime, DIR)
    seen = set()
    for m in sorted(files, key=lambda m: m.name):
        if m.name in seen:
            continue
        seen.add(m.name)
        with m.open() as stream:
            write_member(out, m.name, m.size, stream, mtime)
    end_archive(out)


def put_blob(root: str, blob: Blob) -> bool:
    """Write `blob` into the layout at `root` unless it is there intact;
    renamed into place. True if written.

    A blob this run made (in the work store, hashed as it was written) is
    hard-linked when the layout is on the same file system: its bytes are
    written once, not written and then copied. Otherwise it is copied in
    the kernel (copy_file_range), and a foreign blob is verified while it
    is copied."""
    path = os.path.join(root, blob_name(blob.descriptor.digest))
    if has_blob(root, blob.descriptor):
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if blob.trusted and blob.local and link_into(blob.local, path):
        return True
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb", buffering=CHUNK) as f, blob.open() as src:
            if blob.trusted:
                copy_in_kernel(src, f, blob.descriptor.size)
            copy_stream(src, f)         # the rest: all of it when not copied in the kernel
        publish(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return True


def has_blob(root: str, desc: Descriptor) -> bool:
    """True when the layout at `root` holds `desc`'s blob intact: the right
    size and digest (a same-size damaged copy is rewritten, not kept)."""
    path = os.path.join(root, blob_name(desc.digest))
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.path.getsize(path) != desc.size:
            return False
    except OSError:
        return False
    return file_digest(path) == desc.digest


@contextmanager
def locked(root: str) -> Iterator[None]:
    """The layout's writers' lock (flock on its directory)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_to_index(root: str, descs: list[Descriptor]) -> None:
    """Add `descs` to root/index.json, moving a ref name from any other
    image. Serialised by a lock on the layout directory, replaced atomically,
    so concurrent writers each keep their image."""
    with locked(root):
        _add_to_index(root, descs)


def merge_into(root: str, staged: str, blobs: list[Blob], descs: list[Descriptor]) -> None:
    """Commit an image staged in `staged` into the existing layout `root`,
    under its lock: move the staged blobs in, put any other blob of the
    image that is no longer there (another writer's failed commit may have
    taken it away), then add `desc` to the index. If anything fails, the
    blobs this commit moved in are taken out again: the layout is as it was."""
    sha = os.path.join(staged, "blobs", "sha256")
    dest = os.path.join(root, "blobs", "sha256")
    moved: list[str] = []
    with locked(root):
        try:
            os.makedirs(dest, exist_ok=True)
            for name in sorted(os.listdir(sha)) if os.path.isdir(sha) else []:
                target = os.path.join(dest, name)
                new = not os.path.exists(target)      # else damaged (so staged again) or just arrived
                os.replace(os.path.join(sha, name), target)
                if new:
                    moved.append(target)
            for blob in blobs:
                path = os.path.join(root, blob_name(blob.descriptor.digest))
                if not os.path.exists(path) and put_blob(root, blob):
                    moved.append(path)
            _add_to_index(root, descs)
        except BaseException:
            for path in moved:
                unlink_quietly(path)
            raise


def _add_to_index(root: str, descs: list[Descriptor]) -> None:
    path = os.path.join(root, "index.json")
    doc = read_index(root)
    names = {d.annotations[REF_NAME] for d in descs if REF_NAME in d.annotations}
    new = {(d.digest, canonical_json(d.annotations)) for d in descs}
    kept = []
    for d in doc.get("manifests") or []:
        ann = d.get("annotations") or {}
        if ann.get(REF_NAME) in names or (d.get("digest"), canonical_json(ann)) in new:
            continue
        kept.append(d)
    kept.extend(d.to_json() for d in descs)
    doc["manifests"] = kept
    atomic_write(path, canonical_json(doc))
    if not os.path.exists(os.path.join(root, LAYOUT_FILE)):
        atomic_write(os.path.join(root, LAYOUT_FILE), LAYOUT_VERSION)


def read_index(root: str) -> dict:
    """root/index.json, checked; an empty index when there is none yet."""
    path = os.path.join(root, "index.json")
    try:
        with open(path, "rb") as f:
            doc = parse_json(f.read(), path)
    except FileNotFoundError:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if not isinstance(doc.get("manifests", []), list):
        raise OutputError(f"{path} is not an OCI index (manifests is not a list); repair or remove it")
    return doc


def is_layout(root: str) -> bool:
    return os.path.isfile(os.path.join(root, LAYOUT_FILE))


def check_layout_dir(root: str) -> None:
    if os.path.isdir(root):
        names = [n for n in os.listdir(root)
                 if not (n.startswith(".ocibuild-") and n.endswith(".partial"))]  # writers' staging
        if names and not is_layout(root):
            raise OutputError(f"{root} exists and is not an OCI layout; name a new or empty "
                              "directory, or an existing layout")
        for sub in ("blobs", "blobs/sha256", "index.json", LAYOUT_FILE):
            if os.path.islink(os.path.join(root, sub)):
                # Written through, it would put files wherever the link points.
                raise OutputError(f"{root}/{sub} is a symlink; ocibuild writes into a layout's own "
                                  "directories only: replace the link with the directory or file")
    elif os.path.exists(root):
        raise OutputError(f"{root} exists and is not a directory")
