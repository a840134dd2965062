"""Diagnoses that say what to do: what went wrong, turned into one line a
user can act on.

    hint = compile_hint(job, output)      # a failed `go build`: its messages → what to do ("" if unknown)
    refuse_other_languages(directory)     # Node.js or Java chaincode: built elsewhere
    check_go_platform(platform)           # before anything is read or started
    describe_content(head)                # "a zip archive", "a text file", … for "not a package"

Every "compiler output → hint" rule lives here, each a function of the
compiler's messages (and the build), tested against what the real go
command prints. Rules are tried in order; the first that knows wins."""

from __future__ import annotations

import os
import re

from .errors import InputError
from .gosource import GOPATH, READONLY, VENDOR, GoBuild
from .oci.model import Platform

# -- a failed compile ---------------------------------------------------------

# Go 1.21 and later: "go: go.mod requires go >= 1.25 (running go 1.24.4; GOTOOLCHAIN=local)",
# "go: example.com/dep in vendor/modules.txt requires go >= 1.25 (running go 1.24.4; …)".
_REQUIRES_GO = re.compile(r"(\S+(?: in \S+)?) requires go >= (\S+) \(running go ([^;)\s]+)")
# Go before 1.21, reading a go line of the newer form: "invalid go version '1.23.0': must match format 1.23".
_GO_LINE_FORMAT = re.compile(r"invalid go version '([^']+)': must match format")
# Go before 1.21, reading a toolchain line: "go.mod:5: unknown directive: toolchain".
_TOOLCHAIN_LINE = "unknown directive: toolchain"
# Go before 1.21, after a failed compile of a module whose go line is newer than itself.
_MODULE_REQUIRES = re.compile(r"note: module requires Go (\S+)")
_POSITION = re.compile(r"\.go:\d+(?::\d+)?: ")

_MISSING_SUM = (
    re.compile(r"missing go\.sum entry for module providing package (\S+)"),
    re.compile(r"verifying (\S+?)(?:/go\.mod)?: missing go\.sum entry"),
    re.compile(r"(\S+?)@\S+: missing go\.sum entry"),
)
_GOPATH_MISSING = re.compile(r'cannot find package "([^"]+)" in any of:')
# vendor/modules.txt disagrees with go.mod; a package it lists is missing (Go 1.19: `cannot find
# package "." in:` and the vendor directory; later Go: `import lookup disabled by -mod=vendor`).
_VENDOR_STALE = ("inconsistent vendoring", "import lookup disabled by -mod=vendor", 'cannot find package "." in:')
_NO_NETWORK = ("GOPROXY=off", "module lookup disabled", "cannot find module")
# A module proxy without the module: "example.com/greet@v1.2.0: reading
# file:///p/example.com/greet/@v/v1.2.0.zip: no such file or directory" (or 404 Not Found, 410 Gone).
_PROXY_LACKS = re.compile(r"(\S+@\S+): reading (?:file|https?)://\S+: (no such file or directory|404 Not Found|"
                          r"410 Gone)")
# One that cannot be reached: 'example.com/loud@v0.3.0: Get "http://127.0.0.1:9/...": dial tcp
# 127.0.0.1:9: connect: connection refused'.
# go.sum disagrees with what was downloaded: "verifying example.com/greet@v1.2.0: checksum mismatch".
_MISMATCH = re.compile(r"verifying (\S+?)(/go\.mod)?: checksum mismatch")
_PROXY_DOWN = re.compile(r'(\S+@\S+): Get "(https?://[^/"]+)[^"]*": (?:dial tcp \S+: )?([^\n]+)')


def compile_hint(job: GoBuild, output: str) -> str:
    """What to do about a failed `go build` whose messages are `output`;
    "" when no rule knows the cause (the caller then points at the first
    file:line the compiler named)."""
    return (toolchain_hint(output) or go_sum_hint(output) or stale_vendor_hint(job, output)
            or gopath_package_hint(job, output) or proxy_hint(output) or needs_network_hint(job, output))


def _newer_go(need: str) -> str:
    return f"pass --go {need} or newer, or a --builder-image with Go {need} or newer"


def toolchain_hint(output: str) -> str:
    """The module (or a dependency) needs a newer Go than the builder's,
    which fetches no other toolchain (GOTOOLCHAIN=local)."""
    m = _REQUIRES_GO.search(output)
    if m:
        who, need, running = m.groups()
        who = "the module's go.mod" if who == "go.mod" else who
        return f"{who} requires Go {need}, and the builder's Go is {running}: {_newer_go(need)}"
    m = _GO_LINE_FORMAT.search(output)
    if m:
        need = m.group(1)
        return (f"go.mod requires Go {need}, and the builder's Go (older than 1.21) cannot even read its "
                f"`go {need}` line: {_newer_go(need)}")
    if _TOOLCHAIN_LINE in output:
        return ("go.mod has a `toolchain` line, so it requires Go 1.21 or newer, and the builder's Go (older than "
                "1.21) cannot read it: pass --go with at least the version of its `go` line, or a newer "
                "--builder-image")
    m = _MODULE_REQUIRES.search(output)
    if m:
        need = m.group(1)
        first = first_position(output.splitlines())
        at = f" (first error: {first})" if first else ""
        return (f"the compile failed{at}, and the module requires Go {need} while the builder's Go is older: "
                f"{_newer_go(need)}")
    return ""


def go_sum_hint(output: str) -> str:
    """go.sum lacks a dependency's checksum: `go build -mod=readonly`
    never writes go.sum, so no network helps; `go mod tidy` does."""
    if "missing go.sum entry" not in output:
        return ""
    dep = next((m.group(1) for r in _MISSING_SUM if (m := r.search(output))), "")
    lacks = dep.split("@")[0] if dep else "entries"
    return (f"go.sum lacks {lacks}: run `go mod tidy` in the module to complete go.sum, then build (or package) "
            "it again")


def stale_vendor_hint(job: GoBuild, output: str) -> str:
    """vendor/ does not match go.mod (a dependency added or changed since
    `go mod vendor` last ran, or a vendored package missing)."""
    if job.source.mode != VENDOR or not any(s in output for s in _VENDOR_STALE):
        return ""
    return ("vendor/ does not match go.mod (a dependency is missing or out of date there): run `go mod vendor` "
            "in the module again")


def gopath_package_hint(job: GoBuild, output: str) -> str:
    """GOPATH mode (no go.mod) found an import nowhere: neither in the
    source nor in the builder's GOPATH."""
    m = _GOPATH_MISSING.search(output)
    if job.source.mode != GOPATH or not m:
        return ""
    return (f'GOPATH mode (no go.mod) finds no package "{m.group(1)}" in the source or the builder\'s '
            "GOPATH: add a go.mod (`go mod init`, `go mod tidy`) and run `go mod vendor`, or, with a go.mod, "
            "pass --go-proxy DIR|URL")


def proxy_hint(output: str) -> str:
    """The module proxy lacks a module, serves other bytes than go.sum
    recorded, or cannot be reached."""
    if m := _MISMATCH.search(output):
        return (f"{m[1]}{m[2] or ''} from the module proxy does not match go.sum (checksum mismatch): the proxy "
                "serves other bytes than the module's authors published, or go.sum is wrong; refused — check "
                "the mirror, or the go.sum line")
    if m := _PROXY_LACKS.search(output):
        return (f"the module proxy has no {m[1]} ({m[2]}): add it to the proxy; on a connected machine "
                "`ocibuild fabric deps SOURCE --output deps.tar` fetches everything a module needs")
    if m := _PROXY_DOWN.search(output):
        return (f"the module proxy {m[2]} cannot be reached for {m[1]} ({m[3].strip()}): check --go-proxy "
                "or GOPROXY, or build from a proxy directory or a `fabric deps` tarball")
    return ""


def needs_network_hint(job: GoBuild, output: str) -> str:
    """The module needs dependencies that are neither vendored nor in the
    module cache, and the build has no network to fetch them."""
    if job.source.mode == READONLY and not job.network and any(s in output for s in _NO_NETWORK):
        return ("the module needs dependencies that are not vendored, and the build has no network: run "
                "`go mod vendor` in the module, pass --network default, or pass --go-proxy DIR|URL")
    return ""


def first_position(lines: list[str]) -> str:
    """The first compiler message naming a file:line, on one line, without
    the trailing colon of a message continued on the next lines
    (`cannot find package "x" in any of:`)."""
    line = next((line.strip() for line in lines if _POSITION.search(line)), "")
    return line.rstrip(":").rstrip()


# -- chaincode in another language --------------------------------------------

# A file at the top of a directory that says which language's chaincode it is.
_OTHER_LANGUAGES = (("package.json", "Node.js"), ("pom.xml", "Java"), ("build.gradle", "Java"),
                    ("build.gradle.kts", "Java"), ("settings.gradle", "Java"), ("settings.gradle.kts", "Java"))
# Fabric's chaincode types whose code ocibuild cannot compile.
LANGUAGE_OF_TYPE = {"node": "Node.js", "java": "Java"}


def other_language(language: str) -> str:
    """`{language} chaincode, which …`: what to do with chaincode ocibuild
    does not build."""
    return (f"{language} chaincode, which ocibuild does not build yet; build its image elsewhere and use "
            "`ocibuild fabric package --type ccaas --address HOST:PORT` or "
            "`--type k8s --image-name NAME --image REF`")


def refuse_other_languages(path: str) -> None:
    """Refuse a directory that is no Go module or package but holds a
    Node.js or Java project (package.json, pom.xml, build.gradle)."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return                          # the Go source reader words it
    if "go.mod" in names or any(n.endswith(".go") for n in names):
        return
    for marker, language in _OTHER_LANGUAGES:
        if marker in names:
            raise InputError(f"{path!r} has {marker} and no Go code: that is {other_language(language)}")


# -- a file that is no package ------------------------------------------------

_MAGIC = ((b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"),
          (b"BZh", "bzip2-compressed"), (b"\xfd7zXZ\x00", "xz-compressed"),
          (b"\x28\xb5\x2f\xfd", "zstd-compressed"), (b"\x7fELF", "a program (ELF)"),
          (b"%PDF-", "a PDF document"))


def describe_content(head: bytes) -> str:
    """What the first bytes of a file say it is ("a zip archive", "a text
    file"), or "" when they say nothing known."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[257:262] == b"ustar":
        return "an uncompressed tar archive"
    for cut in range(4):                # the last character may be cut short
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
            return "a JSON text file" if text.lstrip()[:1] in ("{", "[") else "a text file"
        break
    return ""


# -- platforms ------------------------------------------------------------------

# GOARCH values Go builds for GOOS=linux, and the variants each takes
# (arm: GOARM; amd64: GOAMD64 levels, all running v1 code; arm64: v8).
GO_LINUX_ARCHES = ("386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le",
                   "ppc64", "ppc64le", "riscv64", "s390x")
GO_VARIANTS = {"arm": ("v5", "v6", "v7"), "amd64": ("v1", "v2", "v3", "v4"), "arm64": ("v8",)}


def _choices() -> str:
    out = []
    for arch in GO_LINUX_ARCHES:
        variants = GO_VARIANTS.get(arch)
        out.append(f"linux/{arch}" + (f"[/{'|'.join(variants)}]" if variants else ""))
    return ", ".join(out)


def check_linux(platform: Platform) -> Platform:
    """Refuse an image platform that is not Linux: ocibuild's bases are
    Linux, and Fabric runs chaincode in Linux containers."""
    if platform.os != "linux":
        raise InputError(f"platform {platform} is not Linux: ocibuild makes Linux images only (its bases are "
                         f"Linux, and Fabric runs chaincode in Linux containers); --platform takes one of "
                         f"{_choices()}")
    return platform


def check_go_platform(platform: Platform) -> Platform:
    """Refuse, before anything is read or started, a platform Go cannot
    build Linux chaincode for: not Linux, an unknown GOARCH, or a variant
    the architecture does not have."""
    check_linux(platform)
    arch, variant = platform.architecture, platform.variant
    if arch not in GO_LINUX_ARCHES:
        raise InputError(f"platform {platform}: Go cannot build for linux/{arch} (no such GOARCH); "
                         f"--platform takes one of {_choices()}")
    if variant and variant not in GO_VARIANTS.get(arch, ()):
        has = f"variants {', '.join(GO_VARIANTS[arch])}" if arch in GO_VARIANTS else "no variants"
        raise InputError(f"platform {platform}: linux/{arch} has {has}; --platform takes one of {_choices()}")
    return platform
