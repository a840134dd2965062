"""A real Go module proxy for the tests, made offline (test support, not a
test file).

Modules come from what exists here: files a test writes (`module`), a
directory (`module_from_dir`, with the rules of Go's module zips) and
Debian's Go library sources under /usr/share/gocode/src (`debian_module`).
`write_proxy` lays them out as the GOPROXY protocol says
(https://go.dev/ref/mod#goproxy-protocol): `MODULE/@v/list`,
`MODULE/@v/VERSION.info` (JSON: Version, Time), `.mod` and `.zip`, every
path element case-encoded (`!` + lower case for an upper-case letter);
`GOPROXY=file://DIR` reads that tree, and `serve_http` serves it over HTTP.
`go_sum_lines` computes go.sum's `h1:` hashes in Python (Go's dirhash Hash1)
and `chaincode_module` writes an unvendored main module, with a go.mod and
go.sum that `go mod tidy` leaves as they are, that builds against such a
proxy with `-mod=readonly`.

A module's files are exactly its zip's files: the rules Go applies when it
makes a module zip (golang.org/x/mod/zip) are applied when a `Module` is
made — files in vendored packages, nested modules, VCS directories,
symlinks and other irregular files are left out as Go leaves them out;
invalid paths, case-fold collisions and oversized files are refused.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import threading
import unicodedata
import urllib.parse
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TIME = "2023-01-01T00:00:00Z"           # the .info Time of every module unless told
ZIP_DATE = (1980, 1, 1, 0, 0, 0)         # every zip entry's timestamp (the earliest zip can say)
MAX_ZIP_FILE = 500 << 20                 # golang.org/x/mod/zip: MaxZipFile, MaxGoMod, MaxLICENSE
MAX_GO_MOD = 16 << 20
MAX_LICENSE = 16 << 20
GOCODE = Path("/usr/share/gocode/src")
_VCS_DIRS = {".bzr", ".git", ".hg", ".svn"}
_FILE_CHARS = set("!#$%&()+,-.=@[]^_{}~ ")
_WINDOWS_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(\+incompatible)?$")
_MODULE_PATH = re.compile(r"^[a-z0-9.-]+\.[a-z0-9.-]+(/[A-Za-z0-9._~-]+)*$")


# --- names ---------------------------------------------------------------------------

def escape(text: str) -> str:
    """A module path or version as the proxy protocol spells it: each upper-case
    letter becomes `!` and its lower case (example.com/Foo -> example.com/!foo)."""
    if "!" in text:
        raise ValueError(f"{text!r}: `!` is not allowed in a module path or version")
    return re.sub(r"[A-Z]", lambda m: "!" + m.group().lower(), text)


def _check_module(path: str, version: str) -> None:
    """A plausible module path, a canonical semantic version, and the two in
    agreement about the major version (a /vN suffix for N >= 2)."""
    dotted = any(e.startswith(".") or e.endswith(".") for e in path.split("/"))
    if dotted or path.startswith("-") or not _MODULE_PATH.match(path):
        raise ValueError(f"{path!r} is not a valid module path")
    m = _SEMVER.match(version)
    if not m:
        raise ValueError(f"{version!r} is not a canonical semantic version (vMAJOR.MINOR.PATCH[-pre])")
    major = int(m.group(1))
    suffix = re.search(r"/v(\d+)$", path)
    if suffix:
        if int(suffix.group(1)) != major or major < 2 or m.group(5):
            raise ValueError(f"{path} {version}: the version does not match the /v{suffix.group(1)} suffix")
    elif major >= 2 and not m.group(5):
        raise ValueError(f"{path} {version}: a v{major} module path ends in /v{major}")


def _check_file_path(name: str) -> None:
    """Go's module.CheckFilePath: clean, relative, slash-separated; each element
    non-empty, not all dots, no trailing dot, only letters, digits and a few
    punctuation characters, not a name Windows reserves."""
    if name != os.path.normpath(name) or name.startswith("/") or "\\" in name:
        raise ValueError(f"{name!r}: not a clean relative slash-separated path")
    for elem in name.split("/"):
        if not elem or elem.strip(".") == "" or elem.endswith("."):
            raise ValueError(f"{name!r}: invalid path element {elem!r}")
        bad = [c for c in elem if not (c.isascii() and c.isalnum() or c in _FILE_CHARS
                                       or not c.isascii() and unicodedata.category(c).startswith("L"))]
        if bad:
            raise ValueError(f"{name!r}: invalid character {bad[0]!r}")
        if elem.split(".", 1)[0].upper() in _WINDOWS_NAMES:
            raise ValueError(f"{name!r}: {elem!r} is a reserved name on Windows")


def _vendored(name: str) -> bool:
    """Go's isVendoredPackage, bug for bug (golang.org/issue/31562): a file in a
    package below vendor/ is left out, vendor/modules.txt is kept; for a nested
    vendor directory the offset Go uses is kept as well."""
    if name.startswith("vendor/"):
        rest = name[len("vendor/"):]
    elif "/vendor/" in name:
        rest = name[len("/vendor/"):]
    else:
        return False
    return "/" in rest


def select_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The files of a module zip, as Go's zip.Create chooses them: files in
    vendored packages and in nested modules (a directory holding a go.mod) and
    .hg_archival.txt left out; an invalid path, a go.mod in another case, two
    paths equal under case folding or a file over the size limits refused
    (ValueError). Sorted by name."""
    nested = {name.rpartition("/")[0] + "/" for name in files
              if "/" in name and name.rpartition("/")[2].lower() == "go.mod"}

    def in_nested(name: str) -> bool:
        parts = name.split("/")
        return any("/".join(parts[:i]) + "/" in nested for i in range(1, len(parts)))

    kept: dict[str, bytes] = {}
    seen: dict[str, tuple[str, bool]] = {}          # case-folded path -> (path, is a directory)
    total = 0
    for name in sorted(files):
        if _vendored(name) or in_nested(name) or name == ".hg_archival.txt":
            continue
        _check_file_path(name)
        if name.lower() == "go.mod" and name != "go.mod":
            raise ValueError(f"{name!r}: go.mod must be spelled in lower case")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub, is_dir = "/".join(parts[:i]), i < len(parts)
            other = seen.setdefault(sub.casefold(), (sub, is_dir))
            if other != (sub, is_dir):
                raise ValueError(f"{name!r} collides with {other[0]!r} (case-insensitive file systems)")
        data = files[name]
        total += len(data)
        limit = {"go.mod": MAX_GO_MOD, "LICENSE": MAX_LICENSE}.get(name)
        if limit is not None and len(data) > limit:
            raise ValueError(f"{name}: {len(data)} bytes, over Go's limit of {limit}")
        kept[name] = data
    if total > MAX_ZIP_FILE:
        raise ValueError(f"module too large: {total} bytes of files, Go's limit is {MAX_ZIP_FILE}")
    return kept


# --- modules -------------------------------------------------------------------------

@dataclass(frozen=True)
class Module:
    """One version of a module: its path, its version and its files (relative
    name -> bytes), exactly as they go into its zip. `use` is what a main
    package can do with it: (an import path, a Go expression of that package
    whose value main prints). Made by `module`, `module_from_dir`,
    `debian_module`; constructing one directly checks the files too."""
    path: str
    version: str
    files: Mapping[str, bytes]
    use: tuple[str, str] | None = None
    time: str = TIME

    def __post_init__(self) -> None:
        _check_module(self.path, self.version)
        if select_files(self.files).keys() != set(self.files):
            raise ValueError(f"{self.path}@{self.version}: files Go leaves out of a module zip "
                             "(vendored packages, nested modules); make it with module()")

    @property
    def prefix(self) -> str:
        """What every zip entry and dirhash name starts with: MODULE@VERSION/."""
        return f"{self.path}@{self.version}/"

    @property
    def gomod(self) -> bytes:
        """The .mod file: the module's go.mod, or the one Go makes up for a
        module without one ("module PATH\\n")."""
        return self.files["go.mod"] if "go.mod" in self.files else f"module {self.path}\n".encode()

    @property
    def requires(self) -> list[tuple[str, str]]:
        """(path, version) of every `require` in the .mod file."""
        return parse_requires(self.gomod.decode())

    def zip_bytes(self) -> bytes:
        """The module zip, deterministic: entries sorted, files only (no
        directory entries), fixed timestamp, mode 0644, deflate level 6."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in sorted(self.files.items()):
                info = zipfile.ZipInfo(self.prefix + name, date_time=ZIP_DATE)
                info.create_system = 3                       # Unix: external_attr holds the mode
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=6)
        return buf.getvalue()


def parse_requires(gomod: str) -> list[tuple[str, str]]:
    """The (path, version) pairs of a go.mod's require directives, one-line and
    block form (comments dropped; `// indirect` ones included)."""
    out, block = [], False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if block:
            if line == ")":
                block = False
            elif line:
                path, version = line.split()[:2]
                out.append((path.strip('"'), version))
        elif line in ("require (", "require("):
            block = True
        elif line.startswith("require "):
            path, version = line.split()[1:3]
            out.append((path.strip('"'), version))
    return out


def module(path: str, version: str, files: Mapping[str, str | bytes], *,
           use: tuple[str, str] | None = None, time: str = TIME) -> Module:
    """A module from files a test writes (name -> text or bytes); the files Go
    would leave out of its zip are left out."""
    data = {name: text.encode() if isinstance(text, str) else bytes(text) for name, text in files.items()}
    return Module(path, version, select_files(data), use, time)


def module_from_dir(path: str, version: str, src: str | os.PathLike, *,
                    use: tuple[str, str] | None = None, time: str = TIME) -> Module:
    """A module from a directory, as Go's zip.CreateFromDir reads one: VCS
    directories (.git, .hg, .svn, .bzr) and nested modules skipped, symlinks
    and other irregular files skipped, then the rules of `select_files`."""
    src = Path(src)
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel = here.relative_to(src).as_posix()
        if rel != "." and _vendored(rel):
            dirnames.clear()
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _VCS_DIRS and not (
            (here / d / "go.mod").is_file() and not (here / d / "go.mod").is_symlink()))
        for name in filenames:
            f = here / name
            if f.is_symlink() or not f.is_file():
                continue
            files[f.relative_to(src).as_posix()] = f.read_bytes()
    return Module(path, version, select_files(files), use, time)


def debian_version(package: str) -> str:
    """The Go version of an installed Debian package (dpkg-query), by
    `go_version_of`."""
    deb = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                         text=True, check=True).stdout.strip()
    return go_version_of(deb)


def go_version_of(deb: str) -> str:
    """A Debian version as a Go module version: the upstream part with the
    epoch, the Debian revision and a +ds/+dfsg/+repack suffix dropped, `~`
    (a pre-release) as `-` (0.5.9-1 -> v0.5.9; 1:1.2.0~rc1+ds-2 -> v1.2.0-rc1);
    ValueError if that is no semantic version (a git snapshot, say)."""
    upstream = deb.split(":", 1)[-1].rsplit("-", 1)[0] if "-" in deb else deb.split(":", 1)[-1]
    upstream = re.sub(r"\+(ds|dfsg|repack)[0-9.]*$", "", upstream)
    version = "v" + upstream.replace("~", "-")
    if not _SEMVER.match(version):
        raise ValueError(f"Debian version {deb!r}: {version!r} is not a semantic version")
    return version


# The Debian module the tests publish: small, no dependencies, its own go.mod.
DEBIAN_GO_CMP = ("github.com/google/go-cmp", "golang-github-google-go-cmp-dev",
                 ("github.com/google/go-cmp/cmp", 'cmp.Equal([]int{1, 2}, []int{1, 2})'))


def debian_module(path: str = DEBIAN_GO_CMP[0], package: str = DEBIAN_GO_CMP[1], *,
                  use: tuple[str, str] | None = DEBIAN_GO_CMP[2], version: str | None = None) -> Module:
    """A module from Debian's Go library sources (/usr/share/gocode/src/PATH,
    which must hold a go.mod), published under the Debian package's version
    (`debian_version`) unless `version` is given. Default: github.com/google/
    go-cmp from golang-github-google-go-cmp-dev (0.5.9-1 on bookworm: v0.5.9).
    Its h1: hash is not the public one: Debian's tree is not upstream's zip
    (no LICENSE or README, for one), so builds use GOSUMDB=off."""
    src = GOCODE / path
    if not (src / "go.mod").is_file():
        raise ValueError(f"{src} has no go.mod (install {package})")
    return module_from_dir(path, version or debian_version(package), src, use=use)


def example_modules() -> tuple[Module, Module]:
    """example.com/greet v1.2.0 and example.com/loud v0.3.0, which requires
    greet: a chaincode that uses loud needs greet transitively."""
    greet = module("example.com/greet", "v1.2.0", {
        "go.mod": "module example.com/greet\n\ngo 1.17\n",
        "greet.go": ("// Package greet says hello (a module the tests publish on their own proxy).\n"
                     "package greet\n\n"
                     "// Hello greets name.\n"
                     'func Hello(name string) string { return "hello, " + name }\n'),
    }, use=("example.com/greet", 'greet.Hello("fabric")'))
    loud = module("example.com/loud", "v0.3.0", {
        "go.mod": "module example.com/loud\n\ngo 1.17\n\nrequire example.com/greet v1.2.0\n",
        "loud.go": ("// Package loud greets loudly, through example.com/greet.\n"
                    "package loud\n\n"
                    'import (\n\t"strings"\n\n\t"example.com/greet"\n)\n\n'
                    "// Shout greets name in capitals.\n"
                    'func Shout(name string) string { return strings.ToUpper(greet.Hello(name)) + "!" }\n'),
    }, use=("example.com/loud", 'loud.Shout("fabric")'))
    return greet, loud


# --- hashes --------------------------------------------------------------------------

def dirhash(files: Mapping[str, bytes]) -> str:
    """Go's dirhash.Hash1: "h1:" + base64 of the sha256 of the lines
    "<sha256 hex of the file>  <name>\\n", sorted by name."""
    if any("\n" in name for name in files):
        raise ValueError("dirhash: file names with newlines are not supported")
    summary = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def zip_hash(data: bytes) -> str:
    """dirhash of a module zip's entries (Go's dirhash.HashZip)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return dirhash({i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()})


def _version_key(version: str) -> tuple:
    m = _SEMVER.match(version)
    assert m, version
    pre = m.group(4)
    # A pre-release sorts before its release; identifiers numeric before alphanumeric.
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre[1:].split(".")) if pre else ()
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids)


def go_sum_lines(modules: Iterable[Module]) -> list[str]:
    """The go.sum lines of `modules`, sorted as go writes them: for each,
    "PATH VERSION h1:..." (its files, named MODULE@VERSION/NAME) and
    "PATH VERSION/go.mod h1:..." (its .mod file alone, named go.mod)."""
    lines = []
    unique = {(m.path, m.version): m for m in modules}.values()
    for m in sorted(unique, key=lambda m: (m.path, _version_key(m.version))):
        lines.append(f"{m.path} {m.version} {dirhash({m.prefix + n: d for n, d in m.files.items()})}")
        lines.append(f"{m.path} {m.version}/go.mod {dirhash({'go.mod': m.gomod})}")
    return lines


# --- the proxy -----------------------------------------------------------------------

def write_proxy(root: str | os.PathLike, modules: Iterable[Module]) -> Path:
    """Write `modules` into `root` in the GOPROXY layout (for GOPROXY=file://ROOT
    or `serve_http`): MODULE/@v/list (every version, sorted), VERSION.info,
    VERSION.mod and VERSION.zip. Returns root (absolute)."""
    root = Path(root).resolve()
    versions: dict[str, list[Module]] = {}
    for m in modules:
        if any(o.version == m.version for o in versions.get(m.path, [])):
            raise ValueError(f"{m.path}@{m.version} given twice")
        versions.setdefault(m.path, []).append(m)
    for path, ms in versions.items():
        d = root / escape(path) / "@v"
        d.mkdir(parents=True, exist_ok=True)
        ms.sort(key=lambda m: _version_key(m.version))
        for m in ms:
            v = escape(m.version)
            (d / f"{v}.info").write_text(json.dumps({"Version": m.version, "Time": m.time}) + "\n")
            (d / f"{v}.mod").write_bytes(m.gomod)
            (d / f"{v}.zip").write_bytes(m.zip_bytes())
        (d / "list").write_text("".join(m.version + "\n" for m in ms))
    return root


@dataclass
class ProxyServer:
    """What `serve_http` yields: the GOPROXY `url`, every request's path in
    order (`requests`, URL-decoded, without the query) and the `missing`
    answers (URL path prefix -> status), which a test may change."""
    url: str
    requests: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)

    def requested(self, suffix: str) -> list[str]:
        """The requested paths ending in `suffix` (e.g. ".zip")."""
        return [p for p in list(self.requests) if p.endswith(suffix)]


def missing_prefix(what: str) -> str:
    """The URL path prefix of a module ("example.com/greet": all its files)
    or of one version ("example.com/greet@v1.2.0": .info, .mod, .zip)."""
    path, _, version = what.partition("@")
    return f"/{escape(path)}/@v/{escape(version) + '.' if version else ''}"


class _Handler(SimpleHTTPRequestHandler):
    server_state: ProxyServer
    lock: threading.Lock

    def _answer(self, head: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with self.lock:
            self.server_state.requests.append(path)
            status = next((s for p, s in self.server_state.missing.items() if path.startswith(p)), None)
        if status is not None:
            self.send_error(status)
        elif head:
            super().do_HEAD()
        else:
            super().do_GET()

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def log_message(self, format: str, *args: object) -> None:   # noqa: A002 (the stdlib's name)
        pass


@contextlib.contextmanager
def serve_http(root: str | os.PathLike, *, host: str = "127.0.0.1", missing: Iterable[str] = (),
               status: int = 404) -> Iterator[ProxyServer]:
    """Serve the proxy tree `root` over HTTP on `host`, a free port, one thread
    per request (stdlib http.server), for as long as the block runs. Each
    module or module@version in `missing` is answered `status` (404 or 410:
    what a proxy says of a module it does not have)."""
    state = ProxyServer("", missing={missing_prefix(m): status for m in missing})
    handler = type("Handler", (_Handler,), {"server_state": state, "lock": threading.Lock()})
    server = ThreadingHTTPServer((host, 0), functools.partial(handler, directory=str(Path(root).resolve())))
    server.daemon_threads = True
    state.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="goproxy", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- a main module that uses them ----------------------------------------------------

def _closure(requires: Sequence[Module], pool: Iterable[Module]) -> list[Module]:
    """`requires` and every module they need, found in `pool` (or `requires`)
    at exactly the version required (ValueError otherwise)."""
    known = {(m.path, m.version): m for m in [*pool, *requires]}
    need: dict[tuple[str, str], Module] = {}
    todo = list(requires)
    while todo:
        m = todo.pop()
        if (m.path, m.version) in need:
            continue
        other = next((o for o in need.values() if o.path == m.path), None)
        if other is not None:
            raise ValueError(f"{m.path}: both {other.version} and {m.version} needed (pass one version)")
        need[(m.path, m.version)] = m
        for dep in m.requires:
            if dep not in known:
                raise ValueError(f"{m.path}@{m.version} requires {dep[0]}@{dep[1]}, which is not in the pool")
            todo.append(known[dep])
    return list(need.values())


def _require_block(mods: list[Module], comment: str) -> str:
    if len(mods) == 1:
        return f"\nrequire {mods[0].path} {mods[0].version}{comment}\n"
    return "\nrequire (\n" + "".join(f"\t{m.path} {m.version}{comment}\n" for m in mods) + ")\n"


def chaincode_module(dest: str | os.PathLike, requires: Sequence[Module], *, pool: Iterable[Module] = (),
                     path: str = "example.com/chaincode", go: str = "1.19") -> Path:
    """Write into `dest` an unvendored main module (package main; main() prints
    "chaincode:" then each required module's `use` expression), with a go.mod
    listing `requires` as direct and what they need (looked up in `pool`) as
    `// indirect` requirements, and a go.sum for all of them: what `go mod tidy`
    would write. No vendor/. Returns dest."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not requires or any(m.use is None for m in requires):
        raise ValueError("every directly required module needs a `use` (import path, expression)")
    direct = sorted(requires, key=lambda m: m.path)
    names = {m.path for m in direct}
    indirect = sorted((m for m in _closure(requires, pool) if m.path not in names), key=lambda m: m.path)
    gomod = f"module {path}\n\ngo {go}\n" + _require_block(direct, "")
    if indirect:
        gomod += _require_block(indirect, " // indirect")
    imports = sorted({m.use[0] for m in direct if m.use})
    prints = "".join(f"\tfmt.Println(\"chaincode:\", {m.use[1]})\n" for m in direct if m.use)
    main = ("// Command chaincode stands in for Go chaincode: an unvendored main module\n"
            "// whose dependencies come from a Go module proxy.\n"
            "package main\n\n"
            "import (\n\t\"fmt\"\n\n" + "".join(f"\t\"{i}\"\n" for i in imports) + ")\n\n"
            "func main() {\n" + prints + "}\n")
    (dest / "go.mod").write_text(gomod)
    (dest / "go.sum").write_text("".join(line + "\n" for line in go_sum_lines([*direct, *indirect])))
    (dest / "main.go").write_text(main)
    return dest


def go_env(base: Mapping[str, str], work: str | os.PathLike, proxy: str) -> dict[str, str]:
    """`base` (e.g. os.environ) with a hermetic module-mode Go setup: GOPROXY
    `proxy` (file://DIR or a URL), no checksum database, no workspace, no
    toolchain download, -mod=readonly, and GOPATH, GOMODCACHE and GOCACHE
    (unless `base` has GOCACHE) fresh under `work`."""
    work = Path(work)
    env = {k: v for k, v in base.items() if not k.startswith("GO") or k == "GOCACHE"}
    env.update(GOPROXY=proxy, GOSUMDB="off", GONOSUMDB="", GOPRIVATE="", GONOPROXY="",
               GOFLAGS="-mod=readonly -modcacherw", GOTOOLCHAIN="local", GOWORK="off", GO111MODULE="on",
               GOENV="off", CGO_ENABLED="0", GOPATH=str(work / "gopath"), GOMODCACHE=str(work / "gomodcache"))
    env.setdefault("GOCACHE", str(work / "gocache"))
    return env


def proxy_url(root: str | os.PathLike) -> str:
    """GOPROXY for a directory proxy: file:///ABSOLUTE/PATH."""
    return Path(root).resolve().as_uri()
