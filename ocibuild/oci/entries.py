"""What goes into a layer: normalised file entries, made from host files,
directory trees or inline data. Every host-specific detail (owner, mtime,
umask, order of readdir) is dropped here so the tar writer sees only what
the image should hold."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from ..errors import InputError
from ..fsutil import walk

FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
_KIND_NAMES = {DIR: "directory", HARDLINK: "hard link"}


def kind_name(kind: str) -> str:
    """A kind in words, for messages: "directory", "hard link", "file", ..."""
    return _KIND_NAMES.get(kind, kind)


@dataclass(frozen=True)
class Entry:
    path: str              # relative, normalised: "usr/local/bin/chaincode"
    kind: str              # FILE, DIR, SYMLINK or HARDLINK
    mode: int              # permission bits, 0o7777 at most
    uid: int = 0
    gid: int = 0
    size: int = 0          # FILE only
    link: str = ""         # SYMLINK target as written; HARDLINK: path of the target entry
    source: str | None = None   # FILE: host path to read
    data: bytes | None = None   # FILE: inline content (built-in layers)

    def sort_key(self) -> tuple:
        return tuple(self.path.split("/"))


def image_path(dest: str, what: str = "destination") -> str:
    """Normalise an absolute in-image path to the relative form used in tars,
    refusing anything that could land outside the image root."""
    if not dest.startswith("/"):
        raise InputError(f"{what} {dest!r} must be an absolute path in the image, e.g. /usr/local/bin/app")
    parts = [p for p in dest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{what} {dest!r} must not contain '..'")
    for p in parts:
        if "\0" in p:
            raise InputError(f"{what} {dest!r} contains a NUL byte")
    return "/".join(parts)


def normal_mode(st_mode: int) -> int:
    """umask-independent modes: executables 0755, other files 0644, dirs 0755."""
    if stat.S_ISDIR(st_mode):
        return 0o755
    return 0o755 if st_mode & 0o111 else 0o644


def host_entries(src: str, dest: str, uid: int = 0, gid: int = 0) -> list[Entry]:
    """Entries for a host file or directory tree placed at `dest` in the image.

    A file goes to `dest` (or inside it when `dest` ends with '/'); a directory's
    contents go under `dest`. Symlinks are kept as symlinks and never followed;
    files sharing an inode become hard links to the first one in sorted order;
    devices, fifos and sockets are refused."""
    root = image_path(dest)
    p = Path(src)
    try:
        st = p.lstat()
    except OSError as e:
        raise InputError(f"cannot read --add source {src!r}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        out = [] if root == "" else [Entry(root, DIR, 0o755, uid, gid)]
        out.extend(_walk(p, root, uid, gid))
        return out
    if dest.endswith("/"):
        root = f"{root}/{p.name}" if root else p.name
    if root == "":
        raise InputError(f"cannot place file {src!r} at the image root '/'; name a file path")
    return [_one(p, st, root, uid, gid)]


def _walk(top: Path, root: str, uid: int, gid: int) -> list[Entry]:
    out: list[Entry] = []
    inode_of: dict[str, tuple[int, int]] = {}   # multiply-linked files only
    for full, rel, st in walk(str(top), root):
        if stat.S_ISDIR(st.st_mode):
            out.append(Entry(rel, DIR, 0o755, uid, gid))
            continue
        out.append(_one(Path(full), st, rel, uid, gid))
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            inode_of[rel] = (st.st_dev, st.st_ino)
    return _hardlinks(out, inode_of)


def _one(p: Path, st: os.stat_result, rel: str, uid: int, gid: int) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, SYMLINK, 0o777, uid, gid, link=os.readlink(p))
    if stat.S_ISREG(st.st_mode):
        if not os.access(p, os.R_OK):
            raise InputError(f"cannot read --add source {str(p)!r}: permission denied")
        return Entry(rel, FILE, normal_mode(st.st_mode), uid, gid, size=st.st_size, source=str(p))
    kind = ("device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "fifo" if stat.S_ISFIFO(st.st_mode) else "socket")
    raise InputError(f"{str(p)!r} is a {kind}; only files, directories and symlinks can go in an image")


def _hardlinks(entries: list[Entry], inode_of: dict[str, tuple[int, int]]) -> list[Entry]:
    """Files sharing an inode: the first in sorted path order keeps the
    content, the others become hard links to it (whatever readdir's order)."""
    first: dict[tuple[int, int], str] = {}
    for path in sorted(inode_of, key=lambda p: tuple(p.split("/"))):
        first.setdefault(inode_of[path], path)
    out = []
    for e in entries:
        key = inode_of.get(e.path)
        if key is not None and first[key] != e.path:
            e = Entry(e.path, HARDLINK, e.mode, e.uid, e.gid, link=first[key])
        out.append(e)
    return out


def with_parents(entries: list[Entry], existing: Mapping[str, Node] | None = None) -> list[Entry]:
    """Sorted, de-duplicated entries with every missing parent directory added
    (0755, root) unless `existing` (the base's paths) already has it. Two
    entries at one path are refused unless both are directories, and so is
    anything that would turn a base directory into a file or put a file
    under a base file."""
    existing = existing or {}
    by_path: dict[str, Entry] = {}
    for e in entries:
        prev = by_path.get(e.path)
        if prev is None:
            by_path[e.path] = e
        elif not (prev.kind == DIR and e.kind == DIR):
            raise InputError(f"two sources are added at /{e.path}; give each a distinct destination")
        elif prev != e:
            raise InputError(f"directory /{e.path} is added twice with different owners")
    for path in list(by_path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            have = by_path.get(parent)
            if have is None:
                base = existing.get(parent)
                if base is None:
                    by_path[parent] = Entry(parent, DIR, 0o755)
                elif base.kind not in (DIR, SYMLINK):
                    raise InputError(f"/{parent} is a {kind_name(base.kind)} in the base image, so /{path} "
                                     "cannot be added under it")
            elif have.kind != DIR:
                raise InputError(f"/{parent} is added as a {kind_name(have.kind)} but /{path} "
                                 "needs it to be a directory")
    for e in list(by_path.values()):
        base = existing.get(e.path)
        if base is not None and base.kind == DIR:
            if e.kind != DIR:
                raise InputError(f"/{e.path} is a directory in the base image; adding a {kind_name(e.kind)} "
                                 "there would replace it: choose another destination")
            del by_path[e.path]   # keep the base's own owner and mode (e.g. /tmp's 1777)
        if e.kind == HARDLINK and by_path.get(e.link, Entry("", DIR, 0)).kind != FILE:
            raise InputError(f"hard link /{e.path} points at /{e.link}, which is not a file in the same layer")
    return sorted(by_path.values(), key=Entry.sort_key)


class Node(NamedTuple):
    """What a base image holds at a path: its kind, and a symlink's target."""
    kind: str
    link: str = ""


def resolve(tree: Mapping[str, Node], path: str, follow_last: bool = True) -> tuple[str, bool]:
    """`path` with the symlinks of `tree` followed as the kernel would inside
    the image root (the last component only if `follow_last`), and whether
    every component exists in `tree`."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    complete, hops = True, 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            done = done[:-1]
            continue
        node = tree.get("/".join(done + [part]))
        if node is None:
            complete = False
        elif node.kind == SYMLINK and (parts or follow_last):
            hops += 1
            if hops > 40:                      # a loop: as ELOOP
                return path, False
            if node.link.startswith("/"):
                done = []
            parts = [p for p in node.link.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return "/".join(done), complete


def through_symlinks(entries: list[Entry], tree: Mapping[str, Node]) -> list[Entry]:
    """Entries placed where the base's symlinks lead: a file added at /lib/x
    on a base where lib -> usr/lib goes to usr/lib/x, as a runtime would
    write it (an entry at lib/x would replace the base's symlink with a
    directory and hide what is behind it). A directory at a symlink to a
    directory means that directory."""
    if not any(n.kind == SYMLINK for n in tree.values()):
        return entries
    moved = {e.path: resolve(tree, e.path, follow_last=e.kind == DIR)[0] for e in entries}
    return [replace(e, path=moved[e.path], link=moved.get(e.link, e.link) if e.kind == HARDLINK else e.link)
            for e in entries]


def tree_of(entries: list[Entry]) -> dict[str, Node]:
    return {e.path: Node(e.kind, e.link if e.kind == SYMLINK else "") for e in entries}


def parse_mode(text: str) -> int:
    mode = int(text, 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {text} out of range")
    return mode
