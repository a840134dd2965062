"""Go chaincode sources, read the way a Fabric peer reads them, and the one
`go build` invocation every builder runs (so all backends give one binary)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .errors import InputError
from .oci.model import Platform
from .toolchains import Toolchain

VENDOR, READONLY, GOPATH = "vendor", "readonly", "gopath"

# Where sources sit inside a builder container (Fabric's own layout).
INPUT = "/chaincode/input"
OUTPUT = "/chaincode/output"
BINARY = "chaincode"
# Where a --go-proxy directory is mounted (read-only) in a builder container.
PROXY_MOUNT = "/ocibuild/goproxy"
# The caller's Go variables that reach the build with --network default.
NETWORK_VARS = ("GOPROXY", "GOPRIVATE", "GONOPROXY", "GONOSUMDB", "GOSUMDB", "GOINSECURE", "GOFLAGS")
_IMPORT_PATH = re.compile(r"^[A-Za-z0-9._~+-]+(?:/[A-Za-z0-9._~+-]+)*$")


@dataclass(frozen=True)
class GoSource:
    root: str           # host directory: the module root, or the GOPATH-mode package
    mode: str           # VENDOR, READONLY or GOPATH
    import_path: str    # GOPATH mode: the package's path under $GOPATH/src
    target: str = "."   # what `go build` builds from the work dir (a module's sub-package: ./cmd/cc)
    gopath_root: str | None = None   # GOPATH mode: a tree holding src/ (the package and its
                                     # dependencies, as Fabric packages bring them)

    @property
    def workdir(self) -> str:
        """The package directory inside a builder container."""
        if self.mode == GOPATH:
            return f"{INPUT}/src/{self.import_path}"
        return f"{INPUT}/src"


def detect(path: str, import_path: str | None = None) -> GoSource:
    """go.mod + vendor/ → -mod=vendor; go.mod → -mod=readonly; else GOPATH
    mode, as the peer reads a package. A go.mod above SOURCE is never
    looked for: one planted in a shared parent (/tmp) would otherwise take
    the build over; a module's sub-package is named with --package."""
    if not os.path.isdir(path):
        raise InputError(f"{path!r} is not a directory; SOURCE must be a Go module or package directory")
    root = os.path.abspath(path)
    if os.path.isfile(os.path.join(root, "go.mod")):
        mode = VENDOR if os.path.isdir(os.path.join(root, "vendor")) else READONLY
    else:
        if not any(n.endswith(".go") for n in os.listdir(root)):
            raise InputError(f"{path!r} has no go.mod and no .go files; it is not a Go package")
        mode = GOPATH
    ip = import_path or os.path.basename(root)
    if not _IMPORT_PATH.fullmatch(ip) or ".." in ip.split("/"):
        raise InputError(f"invalid Go import path {ip!r}")
    return GoSource(root, mode, ip)


def select_package(src: GoSource, package: str) -> GoSource:
    """`src` building `package` of its module: `./cmd/cc`, or its import
    path (`example.com/cc/cmd/cc`). The package must be a directory of Go
    files inside the module."""
    if src.mode == GOPATH:
        raise InputError(f"--package {package}: the source has no go.mod; a GOPATH-mode source is one "
                         "package (name it with --import-path)")
    gomod = os.path.join(src.root, "go.mod")
    module = module_path(read_gomod(gomod))
    if not module:
        raise InputError(f"{gomod} has no module line")
    if package == module or package.startswith(module + "/"):
        rel = package[len(module):].lstrip("/") or "."
    elif package == "." or package.startswith("./"):
        rel = os.path.normpath(package)
    else:
        raise InputError(f"--package {package}: not ./DIR inside the module nor an import path under its "
                         f"module path {module}")
    if rel.split("/")[0] == ".." or os.path.isabs(rel):
        raise InputError(f"--package {package}: outside the module")
    where = os.path.join(src.root, rel)
    if not os.path.isdir(where) or not any(n.endswith(".go") for n in os.listdir(where)):
        raise InputError(f"--package {package}: no Go files in {rel} of the module at {src.root}")
    return replace(src, target="." if rel == "." else "./" + rel)


def check_target(src: GoSource) -> None:
    """Refuse, before any builder starts, a module whose root holds no Go
    files when no --package was given, naming its main packages."""
    if src.mode == GOPATH or src.target != ".":
        return
    if any(n.endswith(".go") for n in os.listdir(src.root)):
        return
    mains = _main_packages(src.root)
    hint = (f"pass --package with one of its main packages: {', '.join(mains)}" if mains
            else "it has no main package (`package main`) at all")
    raise InputError(f"the module at {src.root} has no Go files at its root; {hint}")


def _main_packages(root: str, limit: int = 10) -> list[str]:
    """./DIR of up to `limit` directories with a `package main` file (not
    vendor/, testdata/ or hidden ones), nearest first."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("vendor", "testdata") and not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.endswith(".go") and not name.endswith("_test.go") and _is_main(os.path.join(dirpath, name)):
                found.append("./" + os.path.relpath(dirpath, root))
                break
        if len(found) >= limit:
            break
    return found


def _is_main(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return re.search(r"^package\s+main\b", head, re.M) is not None


def read_gomod(gomod: str) -> str:
    """A go.mod's text (its first MiB: directives sit at the top)."""
    try:
        with open(gomod, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except OSError as e:
        raise InputError(f"cannot read {gomod}: {e.strerror}") from None


def module_path(gomod: str) -> str:
    """The module path a go.mod's text declares ("" without a module line)."""
    for line in gomod.splitlines():
        line = line.split("//", 1)[0].strip()
        if not line.startswith("module") or line[6:7] not in (" ", "\t", '"', "`"):
            continue
        value = line[6:].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"`":
            value = value[1:-1]
        return value
    return ""


@dataclass(frozen=True)
class Modules:
    """Where go may fetch modules from. With the network, the caller's own
    Go variables (NETWORK_VARS, as the CLI read them); and/or a module proxy:
    `proxy_dir`, a host directory in the GOPROXY layout (any GOMODCACHE's
    cache/download is one; mounted read-only, works without the network), or
    `proxy_url`, an HTTP(S) mirror. go.sum is verified either way."""
    user_env: Mapping[str, str] = field(default_factory=dict)
    proxy_dir: str = ""
    proxy_url: str = ""

    def env(self, network: bool) -> dict[str, str]:
        """The variables for go; every builder mounts `proxy_dir` at PROXY_MOUNT."""
        env = {"GOFLAGS": ""}
        if network:
            env.update(self.user_env)
        if self.proxy_url:
            env["GOPROXY"] = self.proxy_url
        elif self.proxy_dir:
            env["GOPROXY"] = "file://" + PROXY_MOUNT
        elif not network:
            env["GOPROXY"] = "off"
        if (self.proxy_dir or self.proxy_url) and not (network and "GOSUMDB" in self.user_env):
            # No checksum database behind a private mirror or an air gap: go.sum,
            # which go still checks every module against, is the authority.
            env["GOSUMDB"] = "off"
        return env


@dataclass(frozen=True)
class GoBuild:
    """One reproducible `go build`: -trimpath, no build ID, fixed flags and
    environment, CGO off unless asked (then linked fully static)."""
    source: GoSource
    platform: Platform
    ldflags: str = ""
    tags: str = ""
    cgo: bool = False
    network: bool = False    # False: no network; modules only from vendor/ or modules.proxy_dir
    toolchain: Toolchain | None = None     # chosen by toolchains.pick; None: the builder's default
    modules: Modules = Modules()

    def argv(self, output: str) -> list[str]:
        ldflags = "-buildid="
        if self.cgo:
            ldflags += " -linkmode external -extldflags '-static'"
        if self.ldflags:
            ldflags += " " + self.ldflags
        # -buildvcs=false: a build inside a git checkout would embed the commit and a
        # "modified" flag, so the same source would give different binaries.
        argv = ["go", "build", "-trimpath", "-buildvcs=false", f"-ldflags={ldflags}"]
        if self.source.mode != GOPATH:
            argv.append(f"-mod={self.source.mode}")
        if self.tags:
            argv.append(f"-tags={self.tags}")
        return argv + ["-o", output, self.source.target]

    def env(self, gopath: str | None = None) -> dict[str, str]:
        """The Go environment; `gopath` only in GOPATH mode (else the builder's own)."""
        env = {
            "CGO_ENABLED": "1" if self.cgo else "0",
            "GOOS": self.platform.os,
            "GOARCH": self.platform.architecture,
            **self.modules.env(self.network),
            "GOTOOLCHAIN": "local",       # never fetch another toolchain (Go >= 1.21)
            "GOWORK": "off",              # no go.work from the source, its parents or TMPDIR
            "GO111MODULE": "off" if self.source.mode == GOPATH else "on",
        }
        if gopath:
            env["GOPATH"] = gopath
        if self.platform.architecture == "arm" and self.platform.variant.startswith("v"):
            env["GOARM"] = self.platform.variant[1:]
        return env


def check_confined(src: GoSource) -> None:
    """Refuse a module that would compile code from outside itself: a
    go.work at its root, or a `replace` leading to an absolute path or out
    of the module (the peer builds in a container where such paths do not
    exist either; on the host they would be the host's own files)."""
    if src.mode == GOPATH:
        return                            # GO111MODULE=off: no go.mod, no go.work
    if os.path.lexists(os.path.join(src.root, "go.work")):
        raise InputError("the module has a go.work file, which would make go build code from outside "
                         "it (refused: go.work); remove it, or vendor what it points at")
    for target in _replacements(os.path.join(src.root, "go.mod")):
        if not target.startswith(("./", "../", "/")) and target not in (".", ".."):
            continue                      # module path => module path: fetched, not a directory
        if target.startswith("/") or os.path.normpath(target).split("/")[0] == "..":
            raise InputError(f"go.mod replaces a module with the directory {target!r}, outside the module "
                             "(refused: replace outside the module); vendor it (go mod vendor) or move it "
                             "inside the module")


def _replacements(gomod: str) -> list[str]:
    """The right-hand sides (=> TARGET) of go.mod's replace directives."""
    text = read_gomod(gomod)
    out, in_block = [], False
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
                continue
        elif line.startswith("replace"):
            rest = line[len("replace"):].strip()
            if rest == "(":
                in_block = True
                continue
            line = rest
        else:
            continue
        if "=>" in line:
            target = line.split("=>", 1)[1].split()
            if target:
                out.append(target[0].strip('"`'))
    return out

