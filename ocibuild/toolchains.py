"""Go toolchains: their versions (ordered by Go's own rules), what a module
asks for (its `go` and `toolchain` lines), where a builder finds them, and
the choice of one — made before any container starts. Builds still run with
GOTOOLCHAIN=local: a toolchain is picked here, never downloaded by go."""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import total_ordering

from .errors import InputError

# The label a builder image carries with its Go version (scripts/setup
# writes it; --builder-image archives of your own may carry it too) ...
BUILDER_LABEL = "org.ocibuild.builder.go-version"
# ... and the one an image ocibuild builds gets: the Go its binary says it was built with.
BUILT_WITH_LABEL = "org.ocibuild.go.version"
# Where host toolchains are looked for, besides `go` on PATH and Debian's
# /usr/lib/go-*: each entry a GOROOT, or a directory of GOROOTs.
TOOLCHAIN_DIRS = ("/var/cache/ocibuild/toolchains",)
_NUM = r"(0|[1-9]\d*)"          # Go refuses leading zeros
_VERSION = re.compile(rf"(?:go)?{_NUM}\.{_NUM}(?:\.{_NUM}|(rc|beta){_NUM})?", re.ASCII)
_KIND = {None: 0, "beta": 1, "rc": 2}      # 1.21 < 1.21beta1 < 1.21rc1 < 1.21.0 < 1.21.1


@total_ordering
@dataclass(frozen=True)
class GoVersion:
    """A Go version as `go.mod` and toolchains write it: 1.19, 1.21rc2,
    1.23.0 (a `go1.` prefix is accepted)."""
    major: int
    minor: int
    kind: int = 0          # 0: a language version (1.21), 1: beta, 2: rc, 3: a release (1.21.0)
    number: int = 0        # the beta/rc number or the patch

    @classmethod
    def parse(cls, text: str) -> GoVersion | None:
        m = _VERSION.fullmatch(text.strip())
        if not m:
            return None
        major, minor, patch, pre, n = m.groups()
        if patch is not None:
            return cls(int(major), int(minor), 3, int(patch))
        if pre is not None:
            return cls(int(major), int(minor), _KIND[pre], int(n))
        return cls(int(major), int(minor))

    def _key(self) -> tuple[int, int, int, int]:
        # Go's gover orders 1.N < 1.Nrc1 < 1.N.0. Before 1.21, though, a go line
        # "1.19" meant the release itself (1.19.0, what toolchains of that era
        # call themselves), so it is counted as 1.19.0 here: a go1.19.8
        # toolchain fits `go 1.19` either way; only rc toolchains differ.
        if self.kind == 0 and (self.major, self.minor) < (1, 21):
            return self.major, self.minor, 3, 0
        return self.major, self.minor, self.kind, self.number

    def __lt__(self, other: GoVersion) -> bool:
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoVersion) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def matches(self, wanted: GoVersion) -> bool:
        """`--go 1.24` matches 1.24.x; `--go 1.24.4` only itself."""
        if wanted.kind == 0:
            return (self.major, self.minor) == (wanted.major, wanted.minor)
        return self == wanted

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}"
        if self.kind == 3:
            return f"{base}.{self.number}"
        if self.kind:
            return f"{base}{'beta' if self.kind == 1 else 'rc'}{self.number}"
        return base


@dataclass(frozen=True)
class Requirement:
    """What a module's go.mod asks of the toolchain."""
    go: GoVersion | None = None          # the `go` line: the minimum (Go >= 1.21 enforces it)
    toolchain: GoVersion | None = None   # the `toolchain` line: the one the module prefers

    def __str__(self) -> str:
        if self.go is None:
            return "any Go"
        text = f"go {self.go}"
        return f"{text} (toolchain go{self.toolchain})" if self.toolchain else text


def read_requirement(gomod: str) -> Requirement:
    """The `go` and `toolchain` lines of `gomod` (a missing file: no requirement)."""
    try:
        with open(gomod, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return Requirement()
    except OSError as e:
        raise InputError(f"cannot read {gomod}: {e.strerror}") from None
    found: dict[str, GoVersion] = {}
    for raw in text.splitlines():
        words = raw.split("//", 1)[0].split()
        if len(words) == 2 and words[0] in ("go", "toolchain") and words[0] not in found:
            if words == ["toolchain", "default"]:
                continue                      # "whatever runs": no preference
            # A toolchain name may carry a suffix after the version (go1.22.1+auto, -custom).
            text = re.split(r"[-+]", words[1], maxsplit=1)[0] if words[0] == "toolchain" else words[1]
            version = GoVersion.parse(text)
            if version is None or (words[0] == "toolchain" and not words[1].startswith("go")):
                raise InputError(f"{gomod}: `{words[0]} {words[1]}` is not a Go version (as in `go 1.23.0`, "
                                 "`toolchain go1.23.4`); fix go.mod")
            found[words[0]] = version
    return Requirement(found.get("go"), found.get("toolchain"))


@dataclass(frozen=True)
class Toolchain:
    """A toolchain a builder can use: its version (None: unknown, an
    unlabelled --builder-image) and where it is (an image name, or a GOROOT)."""
    version: GoVersion | None
    where: str

    def __str__(self) -> str:
        return f"go{self.version} ({self.where})" if self.version else self.where


def pick(available: Iterable[Toolchain], need: Requirement, wanted: str, builder: str) -> Toolchain:
    """`--go wanted` when given, else the lowest toolchain that satisfies the
    module (its `toolchain` line when one does, else its `go` line). Fails,
    saying what the module needs, what there is and how to add a toolchain."""
    have = sorted(available, key=lambda t: (t.version is None, t.version or GoVersion(0, 0)))
    known = [t for t in have if t.version is not None]
    if wanted:
        want = GoVersion.parse(wanted)
        if want is None:
            raise InputError(f"--go {wanted}: not a Go version (as in 1.24 or 1.24.4)")
        chosen = [t for t in known if t.version and t.version.matches(want)]
        if not chosen:
            raise InputError(f"--go {wanted}: no such toolchain for --builder {builder}; "
                             f"{_available(known, builder)}")
        _check(chosen[-1], need, builder, known)
        return chosen[-1]
    if not have:
        raise InputError(f"no Go toolchain for --builder {builder}; {_how_to_add(builder)}")
    if need.go is None:
        return have[0]             # no go.mod (GOPATH mode): the lowest, as the peer's own builder
    preferred = max(need.go, need.toolchain) if need.toolchain else need.go
    for floor in (preferred, need.go):
        fits = [t for t in known if t.version is not None and t.version >= floor]
        if fits:
            return fits[0]
    unknown = [t for t in have if t.version is None]
    if unknown:
        return unknown[0]          # an explicit image of unknown version: the compiler will say
    newest = f"go{known[-1].version}" if known else "unknown"
    raise InputError(f"the module needs {need}, and the newest Go toolchain for --builder {builder} is "
                     f"{newest}; {_available(known, builder)}")


def _check(t: Toolchain, need: Requirement, builder: str, known: list[Toolchain]) -> None:
    if need.go is not None and t.version is not None and t.version < need.go:
        raise InputError(f"the module needs {need}, and --go chose go{t.version}; "
                         f"{_available(known, builder)}")


def _available(known: list[Toolchain], builder: str) -> str:
    listed = ", ".join(str(t) for t in known) or "none with a known version"
    return f"available: {listed}; {_how_to_add(builder)}"


def _how_to_add(builder: str) -> str:
    if builder == "host":
        return ("add one by unpacking a Go release (a GOROOT) under ~/.cache/ocibuild/toolchains or "
                "/var/cache/ocibuild/toolchains, or naming it in OCIBUILD_TOOLCHAINS (scripts/setup "
                "unpacks Debian's golang-1.24)")
    return (f"add one with --builder-image docker-archive:FILE (an image with go on PATH, labelled "
            f"{BUILDER_LABEL}=X.Y.Z), or load such an image into {builder} (scripts/setup makes "
            "go-builder:bookworm and go-builder:go1.24)")


def check_claim(toolchain: Toolchain, built_with: str | None) -> None:
    """Refuse a binary whose Go (from its build information) is not the
    version its toolchain claimed: a mislabelled builder image would
    otherwise be chosen for modules it cannot build, and its images
    recorded wrongly."""
    got = GoVersion.parse((built_with or "").split(" ")[0])      # "go1.24.4 X:boringcrypto": the version
    if toolchain.version is None or got is None or got.matches(toolchain.version):
        return
    raise InputError(f"the toolchain {toolchain.where} claims Go {toolchain.version}, but its go is {built_with}; "
                     f"fix its {BUILDER_LABEL} label (or VERSION file), or pass --builder-image/--go")


# -- the host's toolchains ------------------------------------------------------

def goroot_version(goroot: str) -> GoVersion | None:
    """A GOROOT's version, from its VERSION file (no need to run go)."""
    try:
        with open(os.path.join(goroot, "VERSION"), encoding="utf-8", errors="replace") as f:
            return GoVersion.parse(f.readline())
    except OSError:
        return None


def host_toolchains(env: Mapping[str, str]) -> list[Toolchain]:
    """Every GOROOT the host builder may use: `go` on PATH, the entries of
    OCIBUILD_TOOLCHAINS (colon-separated), ~/.cache/ocibuild/toolchains,
    /var/cache/ocibuild/toolchains and Debian's /usr/lib/go-*; one per
    version (PATH's first)."""
    roots: list[str] = []
    go = shutil.which("go", path=env.get("PATH"))
    if go:
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(go))))
    cache = env.get("XDG_CACHE_HOME") or (os.path.join(env["HOME"], ".cache") if env.get("HOME") else "")
    dirs = [d for d in env.get("OCIBUILD_TOOLCHAINS", "").split(":") if d]
    dirs += [os.path.join(cache, "ocibuild", "toolchains")] if cache else []
    dirs += [*TOOLCHAIN_DIRS, *sorted(glob.glob("/usr/lib/go-*"))]
    for d in dirs:
        if os.path.isfile(os.path.join(d, "bin", "go")):
            roots.append(d)
        elif os.path.isdir(d):
            roots += [os.path.join(d, n) for n in sorted(os.listdir(d))
                      if os.path.isfile(os.path.join(d, n, "bin", "go"))]
    out: dict[GoVersion, Toolchain] = {}
    for root in roots:
        version = goroot_version(root)
        if version is not None and version not in out:
            out[version] = Toolchain(version, os.path.realpath(root))
    return list(out.values())
