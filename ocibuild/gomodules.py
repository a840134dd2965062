"""Go modules without vendor/: `--go-proxy DIR|URL|FILE` turned into where
the builder fetches modules from, and `fabric deps`, which fetches what a
module needs into a reproducible tarball in the GOPROXY layout to carry
across an air gap. A tarball is read with the package reader's rules (it
comes from elsewhere, like a package)."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping

from .errors import InputError
from .fabric.common import Limits
from .fabric.extract import Extractor, FileWindow, TarReader, extract
from .fsutil import publish, staging_prefix, sweep_stale, unlink_quietly
from .gosource import Modules

_URL = re.compile(r"https?://[^\s]+", re.ASCII)
# What a module cache's cache/download holds that a proxy does not serve
# (module paths may well contain "lock" or "sumdb": only these files).
_NOT_SERVED = re.compile(r"^sumdb/|\.(lock|ziphash|partial|tmp\d*)$")
# A pseudo-version (v0.0.0-20240101120000-abcdef123456 and its two other forms):
# never listed in @v/list, as the GOPROXY protocol says.
_PSEUDO = re.compile(r"(^|[-.])\d{14}-[0-9a-f]{12}(\+incompatible)?$")
_LOOPBACK = re.compile(r"https?://(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(/|$)", re.I)


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


def check_reachable(modules: Modules, builder: str) -> None:
    """A proxy on this machine's loopback cannot be reached from inside a
    builder container (127.0.0.1 there is the container's own): refused
    before anything starts, saying what works."""
    if builder == "host":
        return
    urls = [modules.proxy_url] if modules.proxy_url else re.split(r"[,|]", modules.user_env.get("GOPROXY", ""))
    for url in urls:
        if _LOOPBACK.match(url.strip()):
            raise InputError(f"the module proxy {url.strip()} is on this machine's loopback, which a {builder} "
                             "builder container cannot reach; serve it on an address containers reach (e.g. the "
                             "docker bridge, 172.17.0.1), pass it as a directory or a `fabric deps` tarball, or "
                             "use --builder host")


def unpack_deps(path: str, work_root: str, limits: Limits) -> str:
    """A `fabric deps` tarball extracted (by the package rules: no escapes,
    no links out, bounded) into a new directory in `work_root`; its path.
    The user's own path may be a symlink; what it names must be a file."""
    dest = os.path.join(work_root, "goproxy")
    os.mkdir(dest, 0o755)
    where = f"--go-proxy {os.path.basename(path)}"
    fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{where}: not a regular file")
        tar = TarReader(FileWindow(fd, 0, st.st_size), limits, where, lambda: limits.max_bytes)
        with Extractor(dest, limits, where) as ex:
            extract(tar, ex)
    finally:
        os.close(fd)
    if not any(n.endswith(".mod") for _, n in _files_under(dest)):
        raise InputError(f"{where} holds no module (no MODULE/@v/VERSION.mod): it is not a `fabric deps` "
                         "tarball; make one with `ocibuild fabric deps SOURCE --output FILE`")
    return dest


def _files_under(root: str) -> Iterator[tuple[str, str]]:
    """(directory, file name) for every file under `root`, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield dirpath, name


# -- fabric deps: writing the tarball -------------------------------------------

def proxy_files(download: str) -> Iterator[tuple[str, str]]:
    """(name in the proxy, file) for what a module cache's cache/download
    serves as a proxy, sorted; `@v/list` files are made afresh (below)."""
    for dirpath, name in _files_under(download):
        full = os.path.join(dirpath, name)
        rel = os.path.relpath(full, download)
        if name == "list" or _NOT_SERVED.search(rel) or not os.path.isfile(full):
            continue
        yield rel, full


def _canonical_info(full: str) -> bytes:
    """A `.info` file as {"Version", "Time"} alone: what proxies add (Origin,
    their own fields) differs between mirrors, and go needs no more."""
    try:
        with open(full, "rb") as f:
            doc = json.loads(f.read(1 << 16))
        info = {"Version": str(doc["Version"]), "Time": str(doc["Time"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{full} is not a module version's .info file") from None
    return json.dumps(info, separators=(",", ":")).encode() + b"\n"


def write_deps(download: str, output: str, mtime: int = 0) -> int:
    """The proxy tree in `download` as a tar at `output` (staged beside it
    with this process's pid, then renamed): sorted names, fixed owners,
    modes and mtimes, `.info` files canonical, and an `@v/list` per module
    listing its released versions with a zip — the same go.sum gives the
    same bytes. Returns the number of modules with a zip."""
    files = list(proxy_files(download))
    versions: dict[str, set[str]] = {}
    for rel, _ in files:
        module, sep, name = rel.rpartition("/@v/")
        if sep and name.endswith(".zip") and not _PSEUDO.search(name[:-4]):
            versions.setdefault(module, set()).add(name[:-4])
    entries = sorted([(rel, full) for rel, full in files] + [(f"{m}/@v/list", "") for m in versions])
    directory = os.path.dirname(os.path.abspath(output))
    sweep_stale(directory, "." + os.path.basename(output) + ".", ".partial")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=staging_prefix(f".{os.path.basename(output)}."),
                               suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            made: set[str] = set()
            for rel, full in entries:
                _parents(tar, rel, made, mtime)
                info = _file_info(rel, mtime)
                if rel.endswith("/@v/list"):
                    module = rel[:-len("/@v/list")]
                    data = "".join(f"{v}\n" for v in sorted(versions[module])).encode()
                elif rel.endswith(".info"):
                    data = _canonical_info(full)
                else:
                    info.size = os.path.getsize(full)
                    with open(full, "rb") as src:
                        tar.addfile(info, src)          # streamed: zips can be large
                    continue
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        publish(tmp, output)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return len(versions)


def _file_info(rel: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, mtime, 0, 0, "", ""
    return info


def _parents(tar: tarfile.TarFile, rel: str, made: set[str], mtime: int) -> None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in made:
            made.add(d)
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime, info.uname, info.gname = tarfile.DIRTYPE, 0o755, mtime, "", ""
            tar.addfile(info)

