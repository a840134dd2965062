"""File-system steps every reader and writer shares: the process umask read
without changing it, a quiet unlink, the write-aside-then-rename that makes
a file appear whole or not at all, and a walk of a host tree in an order
that does not depend on readdir."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

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


WRITE_BEHIND = 32 << 20      # copied in steps of this size, each one's write-back started at once


def copy_in_kernel(src: Any, dst: Any, size: int) -> int:
    """Copy up to `size` bytes from the file `src` (from its position) to the
    file `dst` with copy_file_range, when both are plain files: no trip
    through user space. Returns the bytes copied, with `src` positioned
    after them; 0 means "use an ordinary copy loop" (not files, or a file
    system or kernel that cannot).

    Write-behind: after each step the destination's pages are handed to the
    disk (POSIX_FADV_DONTNEED starts their write-back), so the disk writes
    while the next step copies, and a closing fsync (an archive's) has
    little left to wait for. The source is left alone: a work-store file's
    pages are never written to disk if it is removed first."""
    try:
        src_fd, dst_fd = src.fileno(), dst.fileno()
        start = src.tell()
    except (AttributeError, OSError, ValueError):
        return 0
    flush = getattr(dst, "flush", None)
    if flush is not None:
        flush()
    done = 0
    try:
        at = os.lseek(dst_fd, 0, os.SEEK_CUR)
        while done < size:
            n = os.copy_file_range(src_fd, dst_fd, min(size - done, WRITE_BEHIND), start + done)
            if n == 0:
                break
            _write_behind(dst_fd, at + done, n)
            done += n
    except OSError:
        if done:
            raise
        return 0
    src.seek(start + done)
    return done


def _write_behind(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass                     # advice only


def link_into(src: str, path: str, mode: int = 0o644) -> bool:
    """Make `path` a hard link to the file `src` (given `mode` as the umask
    allows), replacing whatever is at `path`, in one rename. False when the
    file system cannot (another file system, no hard links, too many
    links): the caller copies instead."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-link-{os.getpid()}-{os.urandom(6).hex()}")
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
            return False
        raise
    try:
        publish(tmp, path, mode)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return True


def walk(top: str, prefix: str = "",
         descend: Callable[[str, str], bool] = lambda full, name: True) -> Iterator[tuple[str, str, os.stat_result]]:
    """(host path, name relative to `top` under `prefix`, lstat) of every
    entry below `top`, each directory's names in sorted order; symlinks are
    never followed. A directory is entered when `descend(path, name)`."""
    for full, arc, entry in scan(top, prefix, descend):
        try:
            lst = entry.stat(follow_symlinks=False)
        except OSError as e:
            raise InputError(f"cannot read {full!r}: {e.strerror}") from None
        yield full, arc, lst


def scan(top: str, prefix: str = "",
         descend: Callable[[str, str], bool] = lambda full, name: True) -> Iterator[tuple[str, str, os.DirEntry]]:
    """As `walk`, with each entry's `os.DirEntry` instead of its lstat: the
    caller stats only what it needs to (a directory or a symlink is known
    from the listing itself on most file systems). Directories are told by
    `is_dir(follow_symlinks=False)`: symlinks are never followed."""
    stack = [(top, prefix)]
    while stack:
        d, rel = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=_name)
        except OSError as e:
            raise InputError(f"cannot read directory {d!r}: {e.strerror}") from None
        for entry in entries:
            name = entry.name
            full = entry.path
            arc = f"{rel}/{name}" if rel else name
            yield full, arc, entry
            if entry.is_dir(follow_symlinks=False) and descend(full, name):
                stack.append((full, arc))


def _name(entry: os.DirEntry) -> str:
    return entry.name


def open_regular(root: str, rel: str) -> BinaryIO:
    """`rel` (a/b/c) below the directory `root`, opened for reading only if
    it is a regular file reached without following a symlink at any step:
    a layout from a stranger cannot point ocibuild at /etc/shadow, hang it
    on a FIFO or feed it /dev/zero. Raises FileNotFoundError, or
    NotRegularFile naming what is there instead."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = rel.split("/")
        for part in parts[:-1]:
            nxt = _open_step(part, fd, os.O_RDONLY | os.O_DIRECTORY, rel)
            os.close(fd)
            fd = nxt
        f = _open_step(parts[-1], fd, os.O_RDONLY | os.O_NONBLOCK, rel)
    finally:
        os.close(fd)
    st = os.fstat(f)
    if not stat.S_ISREG(st.st_mode):
        os.close(f)
        raise NotRegularFile(rel, "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
    flags = fcntl.fcntl(f, fcntl.F_GETFL)
    fcntl.fcntl(f, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return os.fdopen(f, "rb")


class NotRegularFile(OSError):
    def __init__(self, rel: str, what: str):
        super().__init__(f"{rel} is {what}")
        self.rel, self.what = rel, what


def _open_step(name: str, dir_fd: int, flags: int, rel: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            st = os.lstat(name, dir_fd=dir_fd)
            raise NotRegularFile(rel, "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory") from None
        raise


# -- staging names a later run can tell are stale ----------------------------------

def staging_prefix(tag: str) -> str:
    """A temporary name's prefix carrying this process's pid: `{tag}{pid}-`."""
    return f"{tag}{os.getpid()}-"


def sweep_stale(parent: str, tag: str, suffix: str = "") -> None:
    """Remove what runs that died (kill -9, a power cut) left in `parent`:
    entries named `{tag}{pid}-...{suffix}` whose pid is no longer alive.
    Best effort; a live or unknown owner's entries are left alone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(tag) and name.endswith(suffix)):
            continue
        pid_text, sep, _ = name[len(tag):].partition("-")
        if not sep or not pid_text.isascii() or not pid_text.isdigit() or not pid_dead(int(pid_text)):
            continue
        path = os.path.join(parent, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass


def pid_dead(pid: int) -> bool:
    """Is `pid` known to be gone? (Not this process; another user's live
    process counts as alive.)"""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False             # alive, another user's
    return False
