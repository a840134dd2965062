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
from ..fsutil import scan

FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
_KIND_NAMES = {DIR: "directory", HARDLINK: "hard link"}


def kind_name(kind: str) -> str:
    """A kind in words, for messages: "directory", "hard link", "file", ..."""
    return _KIND_NAMES.get(kind, kind)


@dataclass(frozen=True, slots=True)     # slots: a tree of 100 000 files is 100 000 of these
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


def path_order(e: Entry) -> str:
    """The same order as `Entry.sort_key` (component by component: "a/b"
    before "a-b"), as one string: '/' becomes NUL, which sorts before any
    character a path component can hold."""
    return e.path.replace("/", "\0")


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
        out.extend(_walk(str(p), root, uid, gid))
        return out
    if dest.endswith("/"):
        root = f"{root}/{p.name}" if root else p.name
    if root == "":
        raise InputError(f"cannot place file {src!r} at the image root '/'; name a file path")
    return [_one(str(p), st, root, uid, gid)]


def _walk(top: str, root: str, uid: int, gid: int) -> list[Entry]:
    """The tree below `top`: directories and symlinks known from the
    directory listing alone, files (and anything else) lstat'ed."""
    out: list[Entry] = []
    inode_of: dict[str, tuple[int, int]] = {}   # multiply-linked files only
    for full, rel, de in scan(top, root):
        if de.is_dir(follow_symlinks=False):
            out.append(Entry(rel, DIR, 0o755, uid, gid))
            continue
        if de.is_symlink():
            out.append(Entry(rel, SYMLINK, 0o777, uid, gid, 0, _readlink(full)))
            continue
        try:
            st = de.stat(follow_symlinks=False)
        except OSError as e:
            raise InputError(f"cannot read {full!r}: {e.strerror}") from None
        out.append(_one(full, st, rel, uid, gid))
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            inode_of[rel] = (st.st_dev, st.st_ino)
    return _hardlinks(out, inode_of) if inode_of else out


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError as e:
        raise InputError(f"cannot read {path!r}: {e.strerror}") from None


def _one(p: str, st: os.stat_result, rel: str, uid: int, gid: int) -> Entry:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if not os.access(p, os.R_OK):
            raise InputError(f"cannot read --add source {p!r}: permission denied")
        return Entry(rel, FILE, normal_mode(mode), uid, gid, st.st_size, "", p)
    if stat.S_ISLNK(mode):
        return Entry(rel, SYMLINK, 0o777, uid, gid, 0, _readlink(p))
    kind = ("device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "fifo" if stat.S_ISFIFO(mode) else "socket")
    raise InputError(f"{p!r} is a {kind}; only files, directories and symlinks can go in an image")


def _hardlinks(entries: list[Entry], inode_of: dict[str, tuple[int, int]]) -> list[Entry]:
    """Files sharing an inode: the first in sorted path order keeps the
    content, the others become hard links to it (whatever readdir's order)."""
    first: dict[tuple[int, int], str] = {}
    for path in sorted(inode_of, key=lambda p: p.replace("/", "\0")):
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
            continue
        if not (prev.kind == DIR and e.kind == DIR):
            raise InputError(f"two sources are added at /{e.path}; give each a distinct destination")
        if prev != e:
            raise InputError(f"directory /{e.path} is added twice with different owners")
    _add_parents(by_path, existing)
    for e in list(by_path.values()):
        base = existing.get(e.path) if existing else None
        if base is not None and base.kind == DIR:
            if e.kind != DIR:
                raise InputError(f"/{e.path} is a directory in the base image; adding a {kind_name(e.kind)} "
                                 "there would replace it: choose another destination")
            del by_path[e.path]   # keep the base's own owner and mode (e.g. /tmp's 1777)
        if e.kind == HARDLINK and by_path.get(e.link, Entry("", DIR, 0)).kind != FILE:
            raise InputError(f"hard link /{e.path} points at /{e.link}, which is not a file in the same layer")
    return sorted(by_path.values(), key=path_order)


def _add_parents(by_path: dict[str, Entry], existing: Mapping[str, Node]) -> None:
    """Every missing parent directory of `by_path`'s entries added to it,
    unless the base has it; refused under a file of either. Parents are
    checked from the top down; one that passed (a directory here, or a
    directory or symlink in the base) passes again, and so did all its own
    parents: a path whose parent passed needs no more checks."""
    passed: set[str] = set()
    for path in list(by_path):
        cut = path.rfind("/")
        if cut < 0 or path[:cut] in passed:
            continue
        parent = ""
        for part in path.split("/")[:-1]:
            parent = f"{parent}/{part}" if parent else part
            if parent in passed:
                continue
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
            passed.add(parent)


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
    parents: dict[str, str] = {}          # a directory's path → where it resolves to (one resolve each)

    def moved(path: str, follow_last: bool) -> str:
        cut = path.rfind("/")
        if cut < 0:
            return resolve(tree, path, follow_last)[0]
        parent = path[:cut]
        where = parents.get(parent)
        if where is None:
            where = parents[parent] = resolve(tree, parent)[0]
        there = f"{where}/{path[cut + 1:]}" if where else path[cut + 1:]
        node = tree.get(there)
        if follow_last and node is not None and node.kind == SYMLINK:
            return resolve(tree, path, True)[0]     # the last component is a symlink too: the whole walk
        return there

    to = {e.path: moved(e.path, e.kind == DIR) for e in entries}
    out = []
    for e in entries:
        path = to[e.path]
        link = to.get(e.link, e.link) if e.kind == HARDLINK else e.link
        out.append(e if path == e.path and link == e.link else replace(e, path=path, link=link))
    return out


_PLAIN_NODES = {kind: Node(kind) for kind in (FILE, DIR, HARDLINK)}   # shared: a Node is immutable


def tree_of(entries: list[Entry]) -> dict[str, Node]:
    plain = _PLAIN_NODES
    return {e.path: Node(SYMLINK, e.link) if e.kind == SYMLINK else plain.get(e.kind) or Node(e.kind)
            for e in entries}


def parse_mode(text: str) -> int:
    mode = int(text, 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {text} out of range")
    return mode
