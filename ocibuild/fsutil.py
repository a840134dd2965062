"""File-system steps every reader and writer shares: the process umask read
without changing it, a quiet unlink, the write-aside-then-rename that makes
a file appear whole or not at all, and a walk of a host tree in an order
that does not depend on readdir."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator

from .errors import InputError


def umask() -> int:
    """The process umask. Read from /proc (Linux 4.7+) so no other thread
    ever sees it flipped; set-and-restore only where /proc cannot say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unlink_quietly(path: str) -> None:
    """Remove a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def publish(tmp: str, path: str, mode: int = 0o644) -> None:
    """Give the staged file `tmp` its final mode (as the umask allows) and
    rename it to `path` in one step."""
    os.chmod(tmp, mode & ~umask())
    os.replace(tmp, path)


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """`path` holds `data` afterwards, or is as it was: written aside in the
    same directory, then renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path, mode)
    except BaseException:
        unlink_quietly(tmp)
        raise


def walk(top: str, prefix: str = "",
         descend: Callable[[str, str], bool] = lambda full, name: True) -> Iterator[tuple[str, str, os.stat_result]]:
    """(host path, name relative to `top` under `prefix`, lstat) of every
    entry below `top`, each directory's names in sorted order; symlinks are
    never followed. A directory is entered when `descend(path, name)`."""
    stack = [(top, prefix)]
    while stack:
        d, rel = stack.pop()
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise InputError(f"cannot read directory {d!r}: {e.strerror}") from None
        for name in names:
            full = os.path.join(d, name)
            arc = f"{rel}/{name}" if rel else name
            try:
                lst = os.lstat(full)
            except OSError as e:
                raise InputError(f"cannot read {full!r}: {e.strerror}") from None
            yield full, arc, lst
            if stat.S_ISDIR(lst.st_mode) and descend(full, name):
                stack.append((full, arc))
