"""Diagnoses that say what to do (issue 10, item 5): every rule of
ocibuild/diagnoses.py, and the messages refusing what is no Go chaincode.

The compiler rules are fed the REAL go command's messages: small modules
are written to tmp_path and compiled with the very `go build` line every
builder runs (GoBuild.argv/env: -mod=readonly or vendor, GOPROXY=off,
GOTOOLCHAIN=local, GO111MODULE as the mode says), with each Go toolchain
found here — the host's `go` (Debian's 1.19) always; others when installed
(/usr/lib/go-1.*/bin/go, /var/cache/ocibuild/**/bin/go, or the paths in
OCIBUILD_TEST_GO, colon-separated), e.g. Debian trixie's 1.24, whose
messages differ. Then end to end: `ocibuild -q build DIR --builder host`
prints one `error:` line with the hint. No engine is needed."""

from __future__ import annotations

import glob
import gzip
import io
import lzma
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from fabric_corpus import cds, code_tar, f, field_bytes, field_varint, package, tar_bytes
from goproxy import chaincode_module, example_modules, go_sum_lines, proxy_url, write_proxy

from ocibuild.diagnoses import (
    GO_LINUX_ARCHES,
    GO_VARIANTS,
    check_go_platform,
    compile_hint,
    first_position,
    go_sum_hint,
    gopath_package_hint,
    needs_network_hint,
    stale_vendor_hint,
    toolchain_hint,
)
from ocibuild.errors import InputError
from ocibuild.fabric.package import go_source, open_package
from ocibuild.gosource import GOPATH, READONLY, VENDOR, GoBuild, detect
from ocibuild.oci.model import Platform

GREET = example_modules()[0]          # example.com/greet v1.2.0, on no proxy the build can reach
HINT_LINE = re.compile(r"error: go build failed on the host \(exit \d+\): (.+)")


# --- the toolchains ------------------------------------------------------------------

@dataclass(frozen=True)
class Go:
    path: str
    version: str                      # "1.19.8"; "" when it would not run

    @property
    def minor(self) -> int:
        parts = self.version.split(".")
        return int(parts[1]) if len(parts) > 1 else 0

    def __str__(self) -> str:
        return f"go{self.version or '-missing'}"


def _version(go: str) -> str:
    try:
        r = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "GOROOT"})
    except OSError:
        return ""
    return r.stdout.strip().removeprefix("go") if r.returncode == 0 else ""


def _toolchains() -> list[Go]:
    """The host's go first (even when missing: its tests then fail, never
    skip), then every other Go found, one per version."""
    found = [Go(shutil.which("go") or "go", _version(shutil.which("go") or "go"))]
    candidates = sorted(glob.glob("/usr/lib/go-1.*/bin/go"))
    candidates += sorted(glob.glob("/var/cache/ocibuild/**/bin/go", recursive=True))
    candidates += sorted(glob.glob(os.path.expanduser("~/.cache/ocibuild/toolchains/*/bin/go")))
    candidates += [os.path.join(p, "bin", "go") for p in os.environ.get("OCIBUILD_TOOLCHAINS", "").split(os.pathsep)
                   if p]
    candidates += [p for p in os.environ.get("OCIBUILD_TEST_GO", "").split(os.pathsep) if p]
    for path in candidates:
        version = _version(path) if os.access(path, os.X_OK) else ""
        if version and all(version != g.version for g in found):
            found.append(Go(path, version))
    return found


TOOLCHAINS = _toolchains()
HOST_GO = TOOLCHAINS[0]
NEWEST = max(TOOLCHAINS, key=lambda g: g.minor)


def _need(go: Go) -> str:
    """A `go` line newer than the toolchain: fabric-samples' 1.23.0, or the next release."""
    return "1.23.0" if go.minor < 23 else f"1.{go.minor + 1}.0"


@pytest.fixture
def gorun(tmp_path):
    """gorun(go, job, gopath=None) -> the combined output of the failed
    `go build` that ocibuild's builders run for `job`, run by `go` with an
    empty module cache (tmp_path/modcache, unless already filled)."""
    def run(go: Go, job: GoBuild, gopath: Path | None = None) -> str:
        if not go.version:
            pytest.fail(f"the Go toolchain {go.path} does not run; install golang-go (scripts/setup)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GO") or k == "GOCACHE"}
        env.update(job.env(str(gopath) if gopath else None), GOMODCACHE=str(tmp_path / "modcache"),
                   GOSUMDB="off", GOENV="off")
        env.setdefault("GOPATH", str(tmp_path / "gopath-unused"))
        argv = job.argv(str(tmp_path / "chaincode.bin"))
        argv[0] = go.path
        cwd = job.source.root
        r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode != 0, f"{go}: the build was meant to fail, and did not:\n{r.stdout}{r.stderr}"
        return r.stdout + r.stderr
    return run


def job_for(root: Path, import_path: str | None = None, network: bool = False) -> GoBuild:
    return GoBuild(detect(str(root), import_path), Platform("linux", "amd64"), network=network)


def fill_modcache(tmp_path: Path, *modules) -> None:
    """Download `modules` into tmp_path/modcache from a file:// proxy, with the host's go."""
    proxy = write_proxy(tmp_path / "proxy", modules)
    cc = tmp_path / "download"
    chaincode_module(cc, list(modules))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO") or k == "GOCACHE"}
    env.update(GOPROXY=proxy_url(proxy), GOSUMDB="off", GOFLAGS="-modcacherw", GOTOOLCHAIN="local",
               GO111MODULE="on", GOMODCACHE=str(tmp_path / "modcache"), GOPATH=str(tmp_path / "gopath-unused"))
    for m in modules:
        r = subprocess.run([HOST_GO.path, "mod", "download", f"{m.path}@{m.version}"], cwd=cc, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr


# --- fixtures: small modules that fail for one known reason ----------------------------

def unvendored(tmp_path: Path) -> Path:
    """A module needing example.com/greet, neither vendored nor in the module cache; a complete go.sum."""
    return chaincode_module(tmp_path / "cc", [GREET])


def no_go_sum(tmp_path: Path) -> Path:
    root = unvendored(tmp_path)
    (root / "go.sum").unlink()
    return root


def go_sum_without_go_mod_hash(tmp_path: Path) -> Path:
    """The module is in the cache, but go.sum has only its zip's hash, not its go.mod's."""
    fill_modcache(tmp_path, GREET)
    root = unvendored(tmp_path)
    (root / "go.sum").write_text("".join(line + "\n" for line in go_sum_lines([GREET]) if "/go.mod " not in line))
    return root


def gopath_package(tmp_path: Path) -> tuple[Path, Path]:
    """GOPATH mode (no go.mod): a package importing example.com/greet, found nowhere. (package dir, GOPATH)."""
    gopath = tmp_path / "gopath"
    pkg = gopath / "src" / "example.com" / "cc"
    pkg.mkdir(parents=True)
    (pkg / "main.go").write_text('package main\n\nimport "example.com/greet"\n\n'
                                 'func main() { println(greet.Hello("x")) }\n')
    return pkg, gopath


def stale_vendor(tmp_path: Path, kind: str) -> Path:
    """A vendored module whose vendor/ is out of step with go.mod: modules.txt
    without the requirement ("inconsistent"), or listing a package vendor/ lacks ("missing")."""
    root = unvendored(tmp_path)
    (root / "vendor").mkdir()
    listed = f"# {GREET.path} {GREET.version}\n## explicit\n{GREET.path}\n" if kind == "missing" else ""
    (root / "vendor" / "modules.txt").write_text(listed)
    return root


def newer_module(tmp_path: Path, gomod: str, main: str = "package main\n\nfunc main() {}\n",
                 vendored: dict[str, str] | None = None) -> Path:
    root = tmp_path / "cc"
    root.mkdir()
    (root / "go.mod").write_text(gomod)
    (root / "main.go").write_text(main)
    for name, text in (vendored or {}).items():
        (root / "vendor" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "vendor" / name).write_text(text)
    return root


# --- a missing go.sum entry -> go mod tidy -------------------------------------------

@pytest.mark.parametrize("go", TOOLCHAINS, ids=str)
@pytest.mark.parametrize("make", [no_go_sum, go_sum_without_go_mod_hash], ids=["no-go-sum", "no-go-mod-hash"])
def test_missing_go_sum_entry_says_go_mod_tidy(go, make, tmp_path, gorun):
    root = make(tmp_path)
    out = gorun(go, job_for(root))
    assert "missing go.sum entry" in out, out
    hint = compile_hint(job_for(root), out)
    assert hint == go_sum_hint(out) != ""
    assert "`go mod tidy`" in hint and "example.com/greet" in hint, hint
    # Not the network's fault: with -mod=readonly, no download ever fills go.sum.
    assert "not vendored" not in hint and "--network" not in hint, hint


# --- GOPATH mode finds a package nowhere -> go.mod + vendor, or --go-proxy ------------

@pytest.mark.parametrize("go", TOOLCHAINS, ids=str)
def test_gopath_package_found_nowhere_says_add_a_go_mod(go, tmp_path, gorun):
    pkg, gopath = gopath_package(tmp_path)
    job = job_for(pkg, "example.com/cc")
    assert job.source.mode == GOPATH
    out = gorun(go, job, gopath)
    assert 'cannot find package "example.com/greet" in any of:' in out, out
    hint = compile_hint(job, out)
    assert hint == gopath_package_hint(job, out) != ""
    assert '"example.com/greet"' in hint and "go.mod" in hint and "`go mod vendor`" in hint, hint
    assert "--go-proxy" in hint and "in any of" not in hint, hint


@pytest.mark.parametrize("go", TOOLCHAINS, ids=str)
def test_first_position_drops_the_colon_of_a_continued_message(go, tmp_path, gorun):
    # `…in any of:` continues on indented lines: the one-line message must not read `…in any of:;`.
    pkg, gopath = gopath_package(tmp_path)
    out = gorun(go, job_for(pkg, "example.com/cc"), gopath)
    position = first_position(out.splitlines())
    assert position.startswith("main.go:3:8: cannot find package"), position
    assert not position.endswith(":"), position


# --- vendor/ out of step with go.mod -> go mod vendor again ----------------------------

@pytest.mark.parametrize("go", TOOLCHAINS, ids=str)
@pytest.mark.parametrize("kind", ["inconsistent", "missing"])
def test_stale_vendor_says_go_mod_vendor(go, kind, tmp_path, gorun):
    root = stale_vendor(tmp_path, kind)
    job = job_for(root)
    assert job.source.mode == VENDOR
    out = gorun(go, job)
    hint = compile_hint(job, out)
    assert hint == stale_vendor_hint(job, out) != "", out
    assert "vendor/ does not match go.mod" in hint and "`go mod vendor`" in hint, hint
    assert ":;" not in hint and not first_position(out.splitlines()).endswith(":")


# --- no network for unvendored dependencies ---------------------------------------------

@pytest.mark.parametrize("go", TOOLCHAINS, ids=str)
def test_unvendored_module_without_network(go, tmp_path, gorun):
    root = unvendored(tmp_path)
    job = job_for(root)
    assert job.source.mode == READONLY
    out = gorun(go, job)
    assert "module lookup disabled by GOPROXY=off" in out, out
    hint = compile_hint(job, out)
    assert hint == needs_network_hint(job, out) != ""
    for words in ("`go mod vendor`", "--network default", "--go-proxy DIR|URL"):
        assert words in hint, hint
    # With the network on, the same words are no network problem.
    assert needs_network_hint(job_for(root, network=True), out) == ""


# --- a `go` line newer than the toolchain -> --go or a newer --builder-image ----------

def _go_line(tmp_path: Path, go: Go) -> Path:
    return newer_module(tmp_path, f"module example.com/cc\n\ngo {_need(go)}\n")


def _toolchain_line(tmp_path: Path, go: Go) -> Path:
    return newer_module(tmp_path, "module example.com/cc\n\ngo 1.21\n\ntoolchain go1.21.5\n")


def _failed_newer_compile(tmp_path: Path, go: Go) -> Path:
    # Range over an int (Go 1.22): an old toolchain fails, and notes the module's go line.
    return newer_module(tmp_path, "module example.com/cc\n\ngo 1.23\n",
                        "package main\n\nfunc main() {\n\tfor i := range 3 {\n\t\tprintln(i)\n\t}\n}\n")


def _newer_dependency(tmp_path: Path, go: Go) -> Path:
    dep = f"1.{go.minor + 1}"
    return newer_module(tmp_path, f"module example.com/cc\n\ngo 1.{go.minor}\n\nrequire example.com/dep v1.0.0\n",
                        'package main\n\nimport "example.com/dep"\n\nfunc main() { dep.X() }\n',
                        {"modules.txt": f"# example.com/dep v1.0.0\n## explicit; go {dep}\nexample.com/dep\n",
                         "example.com/dep/dep.go": "package dep\n\nfunc X() {}\n"})


def _toolchain_cases():
    """(toolchain, fixture, words the hint must hold): what each Go says differs.
    Before 1.21 a newer go line is unreadable or only noted; from 1.21 on it is refused."""
    for go in TOOLCHAINS:
        need = _need(go)
        if go.minor < 21:
            yield pytest.param(go, _go_line, (need, "older than 1.21"), id=f"go-line-{go}")
            yield pytest.param(go, _toolchain_line, ("`toolchain` line", "1.21"), id=f"toolchain-line-{go}")
            yield pytest.param(go, _failed_newer_compile, ("requires Go 1.23", "first error: ./main.go:4:"),
                               id=f"failed-compile-{go}")
        else:
            yield pytest.param(go, _go_line, (f"go.mod requires Go {need}", f"Go is {go.version}"),
                               id=f"go-line-{go}")
            yield pytest.param(go, _newer_dependency, (f"example.com/dep in vendor/modules.txt requires Go "
                                                       f"1.{go.minor + 1}", f"Go is {go.version}"),
                               id=f"dependency-{go}")


@pytest.mark.parametrize("go, make, words", list(_toolchain_cases()))
def test_go_newer_than_the_toolchain_says_pass_go(go, make, words, tmp_path, gorun):
    root = make(tmp_path, go)
    job = job_for(root)
    out = gorun(go, job)
    hint = compile_hint(job, out)
    assert hint == toolchain_hint(out) != "", out
    for w in (*words, "--go ", "--builder-image"):
        assert w in hint, f"{w!r} not in {hint!r}"


# --- end to end: one error line from `ocibuild -q build DIR --builder host` -------------

def _e2e_cases():
    yield pytest.param(no_go_sum, ("go.sum lacks example.com/greet", "`go mod tidy`"), id="missing-go-sum")
    yield pytest.param(lambda t: gopath_package(t)[0], ("GOPATH mode", '"example.com/greet"', "`go mod vendor`",
                                                         "--go-proxy"), id="gopath")
    yield pytest.param(lambda t: stale_vendor(t, "missing"), ("vendor/ does not match go.mod",), id="stale-vendor")
    yield pytest.param(unvendored, ("`go mod vendor`", "--network default", "--go-proxy"), id="no-network")
    yield pytest.param(_too_new_for_every_toolchain, ("requires Go", "--go ", "--builder-image"),
                       id="go-newer-than-the-toolchain")


def _too_new_for_every_toolchain(tmp_path: Path) -> Path:
    """A module whose go line (1.N.0, N the newest minor here) Go before 1.21
    cannot read, with a vendored dependency that needs 1.(N+1): whichever
    toolchain the host builder runs (its go on PATH, or the lowest that fits
    the go line), the compile fails for want of a newer Go."""
    n = NEWEST.minor
    return newer_module(tmp_path, f"module example.com/cc\n\ngo 1.{n}.0\n\nrequire example.com/dep v1.0.0\n",
                        'package main\n\nimport "example.com/dep"\n\nfunc main() { dep.X() }\n',
                        {"modules.txt": f"# example.com/dep v1.0.0\n## explicit; go 1.{n + 1}\nexample.com/dep\n",
                         "example.com/dep/dep.go": "package dep\n\nfunc X() {}\n"})


@pytest.mark.parametrize("make, words", list(_e2e_cases()))
def test_build_prints_one_line_saying_what_to_do(make, words, ocibuild, tmp_path):
    src = make(tmp_path)
    r = ocibuild("-q", "build", "--builder", "host", src, "--output", f"oci:{tmp_path / 'out'}",
                 env={"GOMODCACHE": str(tmp_path / "modcache")})
    assert r.returncode == 4 and r.stdout == "", r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and HINT_LINE.fullmatch(lines[0]), r.stderr
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert ":;" not in lines[0] and "see the compiler messages" not in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_build_without_a_hint_names_the_first_position(ocibuild, tmp_path):
    # A compile error no rule knows: the line points at where it is.
    src = newer_module(tmp_path, "module example.com/cc\n\ngo 1.19\n", "package main\n\nfunc main() { x := 1 }\n")
    r = ocibuild("-q", "build", "--builder", "host", src, "--output", f"oci:{tmp_path / 'out'}")
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and re.search(r" at (\./)?main\.go:3:\d+: ", lines[0]), r.stderr
    assert "see the compiler messages" in lines[0] or "without -q" in lines[0], lines[0]


# --- Node.js and Java chaincode -----------------------------------------------------

WHAT_TO_DO = ("which ocibuild does not build yet", "build its image elsewhere",
              "`ocibuild fabric package --type ccaas", "`--type k8s --image-name NAME --image REF`")


@pytest.mark.parametrize("marker, language", [("package.json", "Node.js"), ("pom.xml", "Java"),
                                              ("build.gradle", "Java"), ("build.gradle.kts", "Java")])
def test_node_or_java_directory_says_build_it_elsewhere(marker, language, ocibuild, tmp_path):
    src = tmp_path / "cc"
    (src / "lib").mkdir(parents=True)
    (src / marker).write_text("{}\n")
    (src / "lib" / "chaincode.js").write_text("module.exports = {};\n")
    r = ocibuild("-q", "build", "--builder", "host", src, "--output", f"oci:{tmp_path / 'out'}")
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and len(lines) == 1, r.stderr
    for w in (marker, f"that is {language} chaincode", *WHAT_TO_DO):
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert "not a Go package" not in lines[0]


def test_a_go_module_with_a_package_json_is_still_go(tmp_path, work):
    # The check is only for a directory that is no Go module or package.
    src = tmp_path / "cc"
    src.mkdir()
    (src / "go.mod").write_text("module example.com/cc\n\ngo 1.19\n")
    (src / "main.go").write_text("package main\n\nfunc main() {}\n")
    (src / "package.json").write_text("{}\n")
    assert go_source(open_package(str(src), str(work))).mode == READONLY
    (src / "go.mod").unlink()
    assert go_source(open_package(str(src), str(work)), "example.com/cc").mode == GOPATH
    (src / "main.go").unlink()
    with pytest.raises(InputError, match="Node.js chaincode"):
        go_source(open_package(str(src), str(work)))


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    w.mkdir()
    return w


def _node_lifecycle() -> bytes:
    return package(meta={"type": "node", "path": "", "label": "cc_1"},
                   code=code_tar([f("src/package.json", b"{}"), f("src/index.js", b"")]))


def _java_lifecycle() -> bytes:
    return package(meta={"type": "java", "path": "", "label": "cc_1"},
                   code=code_tar([f("src/build.gradle", b""), f("src/src/main/java/C.java", b"")]))


@pytest.mark.parametrize("data, language", [
    (_node_lifecycle, "Node.js"), (_java_lifecycle, "Java"),
    (lambda: cds(code_tar([f("src/package.json", b"{}")]), type_code=2, path="/opt/cc"), "Node.js"),
    (lambda: cds(code_tar([f("src/build.gradle", b"")]), type_code=4, path="/opt/cc"), "Java"),
], ids=["lifecycle-node", "lifecycle-java", "cds-node", "cds-java"])
def test_node_or_java_package_says_build_it_elsewhere(data, language, ocibuild, tmp_path):
    pkg = tmp_path / "cc.pkg"
    pkg.write_bytes(data())
    r = ocibuild("-q", "build", "--builder", "host", pkg, "--output", f"oci:{tmp_path / 'out'}")
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and len(lines) == 1, r.stderr
    for w in (f"the package is {language} chaincode", *WHAT_TO_DO, "(unsupported type)"):
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


# --- files that are no chaincode package ---------------------------------------------

def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", '{"type": "golang", "path": "example.com/cc", "label": "cc_1"}')
    return buf.getvalue()


def _protobuf() -> bytes:
    # Well-formed protobuf, but of another message: fields decode, no chaincode_spec or code_package.
    return field_bytes(1, field_varint(1, 5) + field_bytes(2, b"header-hash")) + field_bytes(2, b"data" * 20)


def _xz() -> bytes:
    return lzma.compress(b"not a package\n" * 20)


NOT_PACKAGES = {
    "random-bytes": (lambda: bytes((i * 7919 + 13) % 251 for i in range(4096)), ""),
    "zip": (_zip, "(it is a zip archive)"),
    "text": (lambda: b"hello, I am a text file\n" * 5, "(it is a text file)"),
    "json": (lambda: b'{"type": "golang", "label": "cc_1"}\n', "(it is a JSON text file)"),
    "protobuf": (_protobuf, ""),
    "xz": (_xz, "(it is xz-compressed; a package is gzip-compressed)"),
}
INTERNALS = ("wire type", "varint", "field number", "chaincode_spec", "code_package", "Traceback", "runs past")


@pytest.mark.parametrize("name", list(NOT_PACKAGES))
@pytest.mark.parametrize("command", ["build", "package-id"])
def test_a_file_that_is_no_package_is_called_so(name, command, ocibuild, tmp_path):
    data, it_is = NOT_PACKAGES[name]
    pkg = tmp_path / "thing.bin"
    pkg.write_bytes(data())
    args = (("build", "--builder", "host", pkg, "--output", f"oci:{tmp_path / 'out'}") if command == "build"
            else ("fabric", "package-id", pkg))
    r = ocibuild("-q", *args)
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and r.stdout == "" and len(lines) == 1, r
    line = lines[0]
    assert line.startswith("error: ") and "is not a chaincode package" in line, line
    assert "gzip-compressed tar holding metadata.json and code.tar.gz" in line, line
    if command == "build":
        assert "ChaincodeDeploymentSpec (`peer chaincode package`)" in line, line
    assert it_is in line, line
    for internal in INTERNALS:
        assert internal not in line, f"{internal!r} in {line!r}"


@pytest.mark.parametrize("data, words", [
    (lambda: gzip.compress(b"just some text, gzip-compressed\n"), ("it is gzip-compressed, but not a tar archive",)),
    (lambda: gzip.compress(tar_bytes([f("main.go", b"package main\n")])),
     ("has no metadata.json, so it is not a chaincode package",)),
], ids=["gzip-not-tar", "tar-without-metadata"])
@pytest.mark.parametrize("command", ["build", "package-id"])
def test_a_gzip_file_that_is_no_package_is_called_so(data, words, command, ocibuild, tmp_path):
    pkg = tmp_path / "thing.tar.gz"
    pkg.write_bytes(data())
    args = (("build", "--builder", "host", pkg, "--output", f"oci:{tmp_path / 'out'}") if command == "build"
            else ("fabric", "package-id", pkg))
    r = ocibuild("-q", *args)
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and len(lines) == 1, r
    for w in (*words, "gzip-compressed tar holding metadata.json and code.tar.gz"):
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


def test_a_damaged_legacy_package_is_called_damaged(ocibuild, tmp_path):
    pkg = tmp_path / "cc.cds"
    pkg.write_bytes(cds(code_tar([f("src/main.go", b"package main\n")]))[:-10])
    r = ocibuild("-q", "build", "--builder", "host", pkg, "--output", f"oci:{tmp_path / 'out'}")
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "ChaincodeDeploymentSpec (of 'mycc'), but is damaged or cut short" in lines[0], r
    assert "(damaged package)" in lines[0]


def test_package_id_of_a_legacy_package_says_it_has_none(ocibuild, tmp_path):
    pkg = tmp_path / "cc.cds"
    pkg.write_bytes(cds(code_tar([f("src/main.go", b"package main\n")]), name="mycc", version="2.0"))
    r = ocibuild("-q", "fabric", "package-id", pkg)
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and len(lines) == 1, r
    for w in ("is a Fabric 1.x package", "which has no package ID", "'mycc:2.0'"):
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


# --- platforms, checked before anything is read or started ---------------------------------

@pytest.mark.parametrize("platform, words", [
    ("linux/arm65", ("Go cannot build for linux/arm65",)),
    ("windows/amd64", ("is not Linux", "Linux images only")),
    ("darwin/arm64", ("is not Linux",)),
    ("linux/arm/v8", ("linux/arm has variants v5, v6, v7",)),
    ("linux/386/v2", ("linux/386 has no variants",)),
])
@pytest.mark.parametrize("builder", ["host", "docker"])
def test_build_refuses_a_platform_before_anything_starts(platform, words, builder, ocibuild, tmp_path):
    # Not quiet: any progress (opening the source, choosing or starting a builder) would show.
    # The source does not even exist, and docker is not on PATH: the platform is refused first.
    r = ocibuild("build", "--builder", builder, "--platform", platform, tmp_path / "no-such-source",
                 "--output", f"oci:{tmp_path / 'out'}", env={"PATH": "/nonexistent"} if builder == "docker" else None)
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and r.stdout == "" and len(lines) == 1, r.stderr
    for w in (f"platform {platform}", *words, "--platform takes one of linux/386, linux/amd64[/v1|v2|v3|v4], "
              "linux/arm[/v5|v6|v7], linux/arm64[/v8], linux/loong64"):
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


def test_build_refuses_a_windows_platform_for_a_real_source(ocibuild, tmp_path):
    # Before this check, GOOS=windows built a PE binary onto the Linux base without a word.
    src = newer_module(tmp_path, "module example.com/cc\n\ngo 1.19\n")
    r = ocibuild("build", "--builder", "host", "--platform", "windows/amd64", src, "--output",
                 f"oci:{tmp_path / 'out'}")
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and len(lines) == 1 and "is not Linux" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_assemble_refuses_a_platform_that_is_not_linux(ocibuild, tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    r = ocibuild("-q", "assemble", "--platform", "windows/amd64", "--add", f"{script}:/run.sh",
                 "--output", f"oci:{tmp_path / 'out'}")
    lines = r.stderr.splitlines()
    assert r.returncode == 3 and len(lines) == 1 and "platform windows/amd64 is not Linux" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("go", TOOLCHAINS, ids=str)
def test_the_platform_table_is_what_go_builds_for_linux(go):
    # The table is Go's own: `go tool dist list`, GOOS=linux, for every toolchain here.
    if not go.version:
        pytest.fail(f"the Go toolchain {go.path} does not run")
    r = subprocess.run([go.path, "tool", "dist", "list"], capture_output=True, text=True, timeout=60)
    arches = {line.split("/")[1] for line in r.stdout.split() if line.startswith("linux/")}
    assert arches == set(GO_LINUX_ARCHES), sorted(arches ^ set(GO_LINUX_ARCHES))


def test_every_platform_in_the_table_is_accepted():
    for arch in GO_LINUX_ARCHES:
        for variant in ("", *GO_VARIANTS.get(arch, ())):
            p = Platform.parse("/".join(x for x in ("linux", arch, variant) if x))
            assert check_go_platform(p) == p
    with pytest.raises(InputError, match="linux/arm64 has variants v8"):
        check_go_platform(Platform.parse("linux/arm64/v9"))
