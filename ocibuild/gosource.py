"""Go chaincode sources, read the way a Fabric peer reads them, and the one
`go build` invocation every builder runs (so all backends give one binary)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import InputError
from .oci.model import Platform

VENDOR, READONLY, GOPATH = "vendor", "readonly", "gopath"

# Where sources sit inside a builder container (Fabric's own layout).
INPUT = "/chaincode/input"
OUTPUT = "/chaincode/output"
BINARY = "chaincode"
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
    """go.mod + vendor/ → -mod=vendor; go.mod → -mod=readonly; else GOPATH mode."""
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


@dataclass(frozen=True)
class GoBuild:
    """One reproducible `go build`: -trimpath, no build ID, fixed flags and
    environment, CGO off unless asked (then linked fully static)."""
    source: GoSource
    platform: Platform
    ldflags: str = ""
    tags: str = ""
    cgo: bool = False
    network: bool = False    # False: no downloads (GOPROXY=off, GOFLAGS=-mod=... only)

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
            "GOFLAGS": "",
            "GOTOOLCHAIN": "local",       # never fetch another toolchain (Go >= 1.21)
            "GOWORK": "off",              # no go.work from the source, its parents or TMPDIR
            "GO111MODULE": "off" if self.source.mode == GOPATH else "on",
        }
        if gopath:
            env["GOPATH"] = gopath
        if self.platform.architecture == "arm" and self.platform.variant.startswith("v"):
            env["GOARM"] = self.platform.variant[1:]
        if not self.network:
            env["GOPROXY"] = "off"
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
    try:
        with open(gomod, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise InputError(f"cannot read {gomod}: {e.strerror}") from None
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

