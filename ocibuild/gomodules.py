"""Go modules without vendor/: `--go-proxy DIR|URL|FILE` turned into where
the builder fetches modules from, and `fabric deps`, which fetches what a
module needs into a reproducible tarball in the GOPROXY layout to carry
across an air gap. A tarball is read with the package reader's rules (it
comes from elsewhere, like a package)."""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping

from .errors import InputError
from .fabric.common import Limits
from .fabric.extract import Extractor, FileWindow, TarReader, extract
from .fsutil import publish, staging_prefix, sweep_stale, unlink_quietly, walk
from .gosource import Modules
from .oci.entries import FILE, Entry, with_parents
from .oci.tarwriter import write_tar

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
    if not any(rel.endswith(".mod") and stat.S_ISREG(lst.st_mode) for _, rel, lst in walk(dest)):
        raise InputError(f"{where} holds no module (no MODULE/@v/VERSION.mod): it is not a `fabric deps` "
                         "tarball; make one with `ocibuild fabric deps SOURCE --output FILE`")
    return dest


# -- fabric deps: writing the tarball -------------------------------------------

def proxy_files(download: str) -> Iterator[tuple[str, str]]:
    """(name in the proxy, file) for what a module cache's cache/download
    serves as a proxy, sorted; `@v/list` files are made afresh (below)."""
    if not os.path.isdir(download):
        return                                    # no modules at all: an empty proxy
    for full, rel, lst in walk(download):
        if not stat.S_ISREG(lst.st_mode) or rel.rpartition("/")[2] == "list" or _NOT_SERVED.search(rel):
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
    with this process's pid, then renamed), by the deterministic tar writer:
    sorted names, owner 0, modes 0644/0755, one mtime, `.info` files
    canonical, and an `@v/list` per module listing its released versions
    with a zip — the same go.sum gives the same bytes. Returns the number of
    modules with a zip."""
    entries: list[Entry] = []
    versions: dict[str, set[str]] = {}
    for rel, full in proxy_files(download):
        module, sep, name = rel.rpartition("/@v/")
        if sep and name.endswith(".zip") and not _PSEUDO.search(name[:-4]):
            versions.setdefault(module, set()).add(name[:-4])
        if rel.endswith(".info"):
            info = _canonical_info(full)
            entries.append(Entry(rel, FILE, 0o644, size=len(info), data=info))
        else:                                     # streamed from the file: zips can be large
            entries.append(Entry(rel, FILE, 0o644, size=os.path.getsize(full), source=full))
    for module, vs in versions.items():
        listing = "".join(f"{v}\n" for v in sorted(vs)).encode()
        entries.append(Entry(f"{module}/@v/list", FILE, 0o644, size=len(listing), data=listing))
    directory = os.path.dirname(os.path.abspath(output))
    sweep_stale(directory, "." + os.path.basename(output) + ".", ".partial")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=staging_prefix(f".{os.path.basename(output)}."),
                               suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            write_tar(with_parents(entries), f, mtime)
        publish(tmp, output)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return len(versions)
