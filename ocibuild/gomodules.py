"""Go modules without vendor/: `--go-proxy DIR|URL|FILE` turned into where
the builder fetches modules from, and `fabric deps`, which fetches what a
module needs into a reproducible tarball in the GOPROXY layout to carry
across an air gap. A tarball is read with the package reader's rules (it
comes from elsewhere, like a package)."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator, Mapping

from .errors import InputError
from .fabric.common import Limits
from .fabric.extract import Extractor, FileWindow, TarReader, extract
from .fsutil import publish, staging_prefix
from .gosource import Modules

_URL = re.compile(r"https?://[^\s]+", re.ASCII)
# What a module cache's cache/download holds that a proxy does not serve.
_NOT_SERVED = re.compile(r"(^|/)(sumdb|lock)(/|$)|\.(lock|ziphash|partial|tmp\d*)$")


def modules_from(spec: str, network: bool, user_env: Mapping[str, str], work_root: str,
                 limits: Limits) -> Modules:
    """The modules a build may use: `spec` is --go-proxy ("" for none)."""
    env = dict(user_env) if network else {}
    if not spec:
        return Modules(env)
    if _URL.fullmatch(spec):
        if not network:
            raise InputError(f"--go-proxy {spec}: a proxy URL needs the network; add --network default, "
                             "or pass a proxy directory or a `fabric deps` tarball")
        return Modules(env, proxy_url=spec)
    try:
        st = os.stat(spec)
    except OSError as e:
        raise InputError(f"--go-proxy {spec}: {e.strerror}; pass a module proxy directory (GOPROXY "
                         "layout, e.g. a GOMODCACHE's cache/download), a `fabric deps` tarball, or an "
                         "http(s) URL") from None
    if stat.S_ISDIR(st.st_mode):
        return Modules(env, proxy_dir=os.path.abspath(spec))
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"--go-proxy {spec}: not a directory or a regular file")
    return Modules(env, proxy_dir=unpack_deps(spec, work_root, limits))


def unpack_deps(path: str, work_root: str, limits: Limits) -> str:
    """A `fabric deps` tarball extracted (by the package rules: no escapes,
    no links out, bounded) into a new directory in `work_root`; its path."""
    dest = os.path.join(work_root, "goproxy")
    os.mkdir(dest, 0o755)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        where = f"--go-proxy {os.path.basename(path)}"
        window = FileWindow(fd, 0, os.fstat(fd).st_size)
        tar = TarReader(window, limits, where, lambda: limits.max_bytes)
        with Extractor(dest, limits, where) as ex:
            extract(tar, ex)
    finally:
        os.close(fd)
    return dest


# -- fabric deps: writing the tarball -------------------------------------------

def proxy_files(download: str) -> Iterator[tuple[str, str]]:
    """(name in the proxy, file) for what a module cache's cache/download
    serves as a proxy, sorted; `@v/list` files are made afresh (below)."""
    for dirpath, dirnames, filenames in os.walk(download):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, download)
            if name == "list" or _NOT_SERVED.search(rel) or not os.path.isfile(full):
                continue
            yield rel, full


def write_deps(download: str, output: str, mtime: int = 0) -> int:
    """The proxy tree in `download` as a tar at `output` (staged, then
    renamed): sorted names, fixed owners, modes and mtimes, and an `@v/list`
    per module listing the versions present — the same files give the same
    bytes. Returns the number of modules."""
    files = list(proxy_files(download))
    versions: dict[str, set[str]] = {}
    for rel, _ in files:
        module, sep, name = rel.rpartition("/@v/")
        if sep and name.endswith(".mod"):
            versions.setdefault(module, set()).add(name[:-4])
    entries = sorted([(rel, full, None) for rel, full in files] +
                     [(f"{m}/@v/list", "", "".join(f"{v}\n" for v in sorted(vs)).encode())
                      for m, vs in versions.items()])
    directory = os.path.dirname(os.path.abspath(output))
    tmp = os.path.join(directory, f".{staging_prefix(os.path.basename(output) + '.')}partial")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            made: set[str] = set()
            for rel, full, data in entries:
                _parents(tar, rel, made, mtime)
                info = tarfile.TarInfo(rel)
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, mtime, 0, 0, "", ""
                if data is None:
                    with open(full, "rb") as f:
                        data = f.read()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        publish(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(versions)


def _parents(tar: tarfile.TarFile, rel: str, made: set[str], mtime: int) -> None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in made:
            made.add(d)
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime, info.uname, info.gname = tarfile.DIRTYPE, 0o755, mtime, "", ""
            tar.addfile(info)

