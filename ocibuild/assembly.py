"""From a request (base, files to add, config changes) to an Image: resolve
the base, lay out the new layer, pick the platform, assemble. No engine."""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from dataclasses import dataclass, field

import zstandard

from .bases import builtin_base, builtin_names
from .blobs import Layer, WorkStore
from .digest import CHUNK
from .compression import COMPRESSIONS, Compression, decompressed, of_media_type
from .elf import ElfInfo, read_elf
from .entries import (DIR, FILE, SYMLINK, Entry, Node, host_entries, resolve, through_symlinks,
                      tree_of, with_parents)
from .errors import BlobError, InputError
from .image import Changes, Image, assemble
from .model import Platform
from .sources import open_image
from .transports import FILE_TRANSPORTS, parse_reference


@dataclass(frozen=True)
class Add:
    source: str
    dest: str


@dataclass(frozen=True)
class Request:
    adds: tuple[Add, ...]
    base: str = "static"
    compression: Compression = COMPRESSIONS["gzip"]
    platform: Platform | None = None       # None: from the ELF of an added binary, else the host
    created: int = 0                       # SOURCE_DATE_EPOCH, or 0
    owner: tuple[int, int] = (0, 0)
    changes: dict = field(default_factory=dict)   # Changes fields but platform/created/base_name
    registry: object = None                # RegistryOptions, for a docker:// base


def build(req: Request, work: WorkStore) -> Image:
    entries = []
    for add in req.adds:
        entries.extend(host_entries(add.source, add.dest, *req.owner))
    elves = _elves(entries)                 # each executable's header, read once
    platforms: dict[Platform, str] = {}     # each platform with the first binary for it
    for path, info in elves.values():
        platforms.setdefault(info.platform, path)
    platform = _platform(req.platform, platforms)
    base, base_paths, base_name = _resolve_base(req, work, platform)
    platform = platform or (base.platform if base.platform.architecture else Platform.host())
    layer = None
    if entries:
        if base_paths is None:
            base_paths = {}
            for lay in base.layers:
                base_paths.update(layer_paths(lay))
        entries = through_symlinks(entries, base_paths)
        _check_loaders(entries, elves, base_paths)
        layer = work.write_layer(with_parents(entries, base_paths), req.compression, req.created)
    ch = Changes(platform=platform, created=req.created, base_name=base_name, **req.changes)
    return assemble(base, layer, ch)


def _resolve_base(req: Request, work: WorkStore, platform: Platform | None):
    if req.base in builtin_names():
        image, paths = builtin_base(req.base, work, req.compression)
        return image, paths, None
    if req.base.startswith("docker://"):
        from .registry import RegistryOptions, pull_image   # httpx: only when used
        image = pull_image(req.base, platform, req.registry or RegistryOptions())
        return image, None, req.base[len("docker://"):]
    if req.base.split(":", 1)[0] not in FILE_TRANSPORTS:
        raise InputError(f"unknown base {req.base!r}: use {', '.join(builtin_names())}, "
                         "or oci:DIR[:ref], oci-archive:FILE[:ref], docker-archive:FILE[:name:tag], docker://REF")
    ref = parse_reference(req.base, "--base")
    image = open_image(ref, platform)
    # The base's name, not its host path: the digest must not depend on where
    # the base file sits. Unnamed, only its digest is recorded.
    return image, None, ref.ref


def _elves(entries: list[Entry]) -> dict[str, tuple[str, ElfInfo]]:
    """Added executables that are ELF: host source → (image path, header)."""
    found = {}
    for e in entries:
        if e.kind == FILE and e.source and e.mode & 0o100:
            info = read_elf(e.source)
            if info:
                found[e.source] = (e.path, info)
    return found


def _platform(given: Platform | None, found: dict[Platform, str]) -> Platform | None:
    """--platform if given (refused when every added binary says otherwise),
    else the one platform of the added binaries, else None."""
    if given is not None:
        if found and all((p.os, p.architecture) != (given.os, given.architecture) for p in found):
            plat, path = next(iter(found.items()))
            raise InputError(f"--platform {given} does not match the added binaries (/{path} is "
                             f"for {plat}); drop --platform or add {given} binaries")
        return given
    if len(found) > 1:
        listed = ", ".join(f"/{p} is {plat}" for plat, p in found.items())
        raise InputError(f"added binaries are for different platforms ({listed}); pass --platform")
    return next(iter(found), None)


def _check_loaders(entries: list[Entry], elves: dict[str, tuple[str, ElfInfo]],
                   base_paths: dict[str, Node]) -> None:
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


def layer_paths(layer: Layer) -> dict[str, Node]:
    """What a base layer holds at each path (whiteouts left out): to avoid
    re-emitting the base's directories, to refuse replacing them, and to find
    a binary's loader. Reading it verifies it, too."""
    out = {}
    try:
        with layer.open() as blob, decompressed(blob, of_media_type(layer.descriptor.media_type)) as raw, \
                tarfile.open(fileobj=raw, mode="r|") as tf:
            for m in tf:
                name = os.path.normpath(m.name).lstrip("/")
                if not os.path.basename(name).startswith(".wh."):
                    out[name] = (Node(SYMLINK, m.linkname) if m.issym() else Node(DIR) if m.isdir()
                                 else Node(FILE) if m.isfile() or m.islnk() else Node("special file"))
            while raw.read(CHUNK) or blob.read(CHUNK):   # to the end: the digest gets checked
                pass
    except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as e:
        raise BlobError(f"{layer.where} is not a readable layer ({e}); rewrite or re-fetch it") from None
    return out
