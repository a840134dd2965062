"""From a request (files to add, config changes) and a base to an Image:
lay out the new layer, pick the platform, derive the image. No engine, no
network: the base comes from an opener the caller passes in (it may pull
from a registry), asked once the platform is known."""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from ..errors import BlobError, InputError
from .blobs import Layer, WorkStore
from .compression import COMPRESSIONS, Compression, decompressed, of_media_type
from .digest import CHUNK
from .elf import ElfInfo, read_elf
from .entries import DIR, FILE, SYMLINK, Entry, Node, host_entries, resolve, through_symlinks, tree_of, with_parents
from .image import ConfigChanges, Derivation, Image, derive
from .imageset import same_platform
from .model import Platform


@dataclass(frozen=True)
class Add:
    source: str
    dest: str
    platform: Platform | None = None       # only in this platform's image (None: in every one)


@dataclass(frozen=True)
class Request:
    adds: tuple[Add, ...]
    base: str = "static"                   # a built-in base's name, or an image reference
    compression: Compression = COMPRESSIONS["gzip"]
    platform: Platform | None = None       # None: from the ELF of an added binary, else the host
    created: int = 0                       # SOURCE_DATE_EPOCH, or 0
    owner: tuple[int, int] = (0, 0)
    changes: ConfigChanges = field(default_factory=ConfigChanges)


@dataclass(frozen=True)
class Base:
    """A base image, opened: the image, what it holds at each path when
    already known (built-in bases), and the name recorded in the
    annotations (None: a built-in base, none recorded)."""
    image: Image
    paths: Mapping[str, Node] | None = None
    name: str | None = None


OpenBase = Callable[[Platform | None], Base]


def assemble(req: Request, work: WorkStore, open_base: OpenBase) -> Image:
    """The image `req` describes, on the base `open_base` gives for the
    platform (None when neither --platform nor an added binary says)."""
    entries = []
    named = set()                           # files added by name, not found in an added directory
    for add in req.adds:
        made = host_entries(add.source, add.dest, *req.owner)
        if len(made) == 1 and made[0].kind == FILE and made[0].source == str(Path(add.source)):
            named.add(made[0].source)
        entries.extend(made)
    elves = _elves(entries)                 # each executable's header, read once
    wanted = _platform(req.platform, _by_platform(elves, named), _by_platform(elves, set(elves) - named))
    base = open_base(wanted)
    image = base.image
    platform = wanted or (image.platform if image.platform.architecture else Platform.host())
    layer = None
    if entries:
        base_paths = dict(base.paths) if base.paths is not None else _image_paths(image)
        entries = through_symlinks(entries, base_paths)
        _check_loaders(entries, elves, base_paths)
        layer = work.write_layer(with_parents(entries, base_paths), req.compression, req.created)
    return derive(image, layer, Derivation(platform=platform, created=req.created, changes=req.changes,
                                           base_name=base.name))


def _image_paths(image: Image) -> dict[str, Node]:
    """What the base holds at each path once its layers are stacked, as a
    runtime stacks them: each layer's whiteouts delete from those below."""
    paths: dict[str, Node] = {}
    for lay in image.layers:
        added, removed, opaque = layer_paths(lay)
        for gone in removed:
            _drop(paths, gone, keep_top=False)
        for d in opaque:
            _drop(paths, d, keep_top=True)
        paths.update(added)
    return paths


def _drop(paths: dict[str, Node], top: str, keep_top: bool) -> None:
    """Remove everything below `top` (and `top` itself unless keep_top)."""
    prefix = top + "/" if top else ""
    for p in [p for p in paths if p.startswith(prefix) or (p == top and not keep_top)]:
        if p != top or not keep_top:
            del paths[p]


def _elves(entries: list[Entry]) -> dict[str, tuple[str, ElfInfo]]:
    """Added executables that are ELF: host source → (image path, header)."""
    found = {}
    for e in entries:
        if e.kind == FILE and e.source and e.mode & 0o100:
            info = read_elf(e.source)
            if info:
                found[e.source] = (e.path, info)
    return found


def _by_platform(elves: dict[str, tuple[str, ElfInfo]], sources: set[str]) -> dict[Platform, str]:
    """Each platform of these binaries, with the image path of the first one for it."""
    found: dict[Platform, str] = {}
    for source, (path, info) in elves.items():
        if source in sources:
            found.setdefault(info.platform, path)
    return found


def _platform(given: Platform | None, named: dict[Platform, str],
              within: dict[Platform, str]) -> Platform | None:
    """--platform if given, else the one platform of the added binaries,
    else None. `named`: binaries added by name (`--add ./cc:/…`), which must
    all be for the image's platform; `within`: binaries found inside an added
    directory, which may hold others (a Go tree's testdata has 386 and arm
    binaries), and are refused only when none of them is for it."""
    if given is not None:
        wrong = next(((plat, path) for plat, path in named.items() if not same_platform(plat, given)), None)
        if wrong is None and within and not named and not any(same_platform(p, given) for p in within):
            wrong = next(iter(within.items()))
        if wrong is not None:
            raise InputError(f"/{wrong[1]} is a binary for {wrong[0]}, not for {given}, the image's platform: "
                             f"add a {given} binary (or drop {given} from --platform)")
        return given
    found = named or within
    if len(found) > 1:
        listed = ", ".join(f"/{p} is {plat}" for plat, p in found.items())
        raise InputError(f"added binaries are for different platforms ({listed}); pass --platform")
    return next(iter(found), None)


def _check_loaders(entries: list[Entry], elves: dict[str, tuple[str, ElfInfo]],
                   base_paths: Mapping[str, Node]) -> None:
    """Refuse a dynamically linked binary whose loader is in neither the base
    nor the new layer: it could never start."""
    tree = {**base_paths, **tree_of(entries)}
    for e in entries:
        info = elves[e.source][1] if e.kind == FILE and e.source in elves else None
        if info and info.dynamic and not resolve(tree, info.interpreter)[1]:
            raise InputError(
                f"/{e.path} is dynamically linked (it needs {info.interpreter}) but the base "
                "has no such loader or libraries: link it statically (CGO_ENABLED=0, or "
                "-extldflags -static), or use a base that has its libc")


def layer_paths(layer: Layer) -> tuple[dict[str, Node], set[str], set[str]]:
    """What a base layer holds at each path, and what it deletes from the
    layers below: whiteouts (`.wh.NAME`: NAME and all under it) and opaque
    directories (`.wh..wh..opq`: everything below the directory). Used to
    avoid re-emitting the base's directories, to refuse replacing them, and
    to find a binary's loader. Reading it verifies it, too."""
    out: dict[str, Node] = {}
    removed: set[str] = set()
    opaque: set[str] = set()
    try:
        with layer.open() as blob, decompressed(blob, of_media_type(layer.descriptor.media_type)) as raw, \
                tarfile.open(fileobj=raw, mode="r|") as tf:
            for m in tf:
                name = os.path.normpath(m.name).lstrip("/")
                parent, base = os.path.split(name)
                if base == ".wh..wh..opq":
                    opaque.add(parent)
                elif base.startswith(".wh."):
                    removed.add(os.path.join(parent, base[len(".wh."):]))
                else:
                    out[name] = (Node(SYMLINK, m.linkname) if m.issym() else Node(DIR) if m.isdir()
                                 else Node(FILE) if m.isfile() or m.islnk() else Node("special file"))
            while raw.read(CHUNK) or blob.read(CHUNK):   # to the end: the digest gets checked
                pass
    except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as e:
        raise BlobError(f"{layer.where} is not a readable layer ({e}); rewrite or re-fetch it") from None
    return out, removed, opaque
