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
from .compression import COMPRESSIONS, Compression
from .elf import read_elf
from .entries import FILE, Entry, host_entries, with_parents
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


def build(req: Request, work: WorkStore) -> Image:
    entries = []
    for add in req.adds:
        entries.extend(host_entries(add.source, add.dest, *req.owner))
    platform = req.platform or _elf_platform(entries)
    base, base_paths, base_name = _resolve_base(req, work, platform)
    platform = platform or (base.platform if base.platform.architecture else Platform.host())
    layer = None
    if entries:
        if base_paths is None:
            base_paths = frozenset().union(*(layer_paths(l) for l in base.layers))
        layer = work.write_layer(with_parents(entries, base_paths), req.compression, req.created)
    ch = Changes(platform=platform, created=req.created, base_name=base_name, **req.changes)
    return assemble(base, layer, ch)


def _resolve_base(req: Request, work: WorkStore, platform: Platform | None):
    if req.base in builtin_names():
        image, paths = builtin_base(req.base, work, req.compression)
        return image, paths, ""
    if req.base.split(":", 1)[0] not in FILE_TRANSPORTS:
        raise InputError(f"unknown base {req.base!r}: use {', '.join(builtin_names())}, "
                         "or oci:DIR[:ref], oci-archive:FILE[:ref], docker-archive:FILE[:name:tag]")
    ref = parse_reference(req.base, "--base")
    image = open_image(ref, platform)
    return image, None, str(ref)


def _elf_platform(entries: list[Entry]) -> Platform | None:
    found = {}
    for e in entries:
        if e.kind == FILE and e.source and e.mode & 0o100:
            info = read_elf(e.source)
            if info:
                found.setdefault(info.platform, e.path)
    if len(found) > 1:
        listed = ", ".join(f"/{p} is {plat}" for plat, p in found.items())
        raise InputError(f"added binaries are for different platforms ({listed}); pass --platform")
    return next(iter(found), None)


def layer_paths(layer: Layer) -> frozenset[str]:
    """Paths a base layer holds (whiteouts left out), to avoid re-emitting its
    directories; reading it verifies it, too."""
    out = set()
    try:
        with layer.open_tar() as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            for m in tf:
                name = os.path.normpath(m.name).lstrip("/")
                if not os.path.basename(name).startswith(".wh."):
                    out.add(name)
    except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as e:
        raise BlobError(f"{layer.where} is not a readable layer ({e}); rewrite or re-fetch it") from None
    return frozenset(out)
