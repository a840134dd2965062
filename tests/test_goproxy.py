"""tests/goproxy.py, checked against the real `go` (the host's, Debian's
1.19): a proxy tree it writes is one go reads (GOPROXY=file://DIR and the
HTTP server), its go.sum hashes are the ones go computes, a main module it
writes builds unvendored with -mod=readonly and `go mod tidy` finds nothing
to change; go refuses a wrong hash and fails on a module the proxy lacks.
And the module zip rules, without go. No container engine; every go run
has a fresh GOMODCACHE and GOPATH (one GOCACHE for the file: the
downloads, not the compiles, are under test)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from goproxy import (
    ZIP_DATE,
    Module,
    chaincode_module,
    debian_module,
    debian_version,
    escape,
    example_modules,
    go_env,
    go_sum_lines,
    go_version_of,
    missing_prefix,
    module,
    module_from_dir,
    proxy_url,
    serve_http,
    write_proxy,
    zip_hash,
)

GREET, LOUD = example_modules()
# A path and a pre-release with capitals: the `!` case encoding, end to end.
CAPS = module("example.com/Caps", "v1.0.0-RC1", {
    "go.mod": "module example.com/Caps\n\ngo 1.17\n",
    "caps.go": "// Package caps has a capital in its module path.\npackage caps\n\n// Name is its name.\n"
               'const Name = "caps"\n',
}, use=("example.com/Caps", "caps.Name"))
# No go.mod: the proxy serves the one go makes up, "module PATH".
OLD = module("example.com/old", "v1.0.0", {
    "old.go": "// Package old predates modules.\npackage old\n\n// N is a number.\nconst N = 7\n",
}, use=("example.com/old", "old.N"))
EXPECTED_OUTPUT = "chaincode: caps\nchaincode: HELLO, FABRIC!\nchaincode: 7\nchaincode: true\n"


@pytest.fixture(scope="module")
def gocmp() -> Module:
    return debian_module()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, gocmp) -> Path:
    """The directory proxy holding every module above and Debian's go-cmp."""
    if not shutil.which("go"):
        pytest.fail("no `go` on PATH (scripts/setup installs golang-go)")
    return write_proxy(tmp_path_factory.mktemp("proxy"), [GREET, LOUD, CAPS, OLD, gocmp])


@pytest.fixture(scope="module")
def gocache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gocache")


@pytest.fixture
def chaincode(tmp_path, gocmp) -> Path:
    """Uses loud (which needs greet), Caps, old and go-cmp."""
    return chaincode_module(tmp_path / "chaincode", [CAPS, LOUD, OLD, gocmp], pool=[GREET])


def go(args: list[str], cwd: Path, work: Path, goproxy: str, gocache: Path,
       **extra: str) -> subprocess.CompletedProcess:
    env = {**go_env({**os.environ, "GOCACHE": str(gocache)}, work, goproxy), **extra}
    return subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def build_and_run(chaincode: Path, tmp_path: Path, goproxy: str, gocache: Path) -> str:
    exe = tmp_path / "chaincode.bin"
    p = go(["build", "-trimpath", "-o", str(exe), "."], chaincode, tmp_path / "go", goproxy, gocache)
    assert p.returncode == 0, p.stderr
    return subprocess.run([exe], capture_output=True, text=True, check=True).stdout


# --- with go ---------------------------------------------------------------------------

def test_go_sum_hashes_are_the_ones_go_computes(chaincode, tmp_path, proxy, gocache, gocmp):
    gomod, gosum = (chaincode / "go.mod").read_text(), (chaincode / "go.sum").read_text()
    p = go(["mod", "tidy"], chaincode, tmp_path / "go", proxy_url(proxy), gocache, GOFLAGS="-mod=mod -modcacherw")
    assert p.returncode == 0, p.stderr
    assert (chaincode / "go.mod").read_text() == gomod, "go mod tidy rewrote go.mod"
    assert (chaincode / "go.sum").read_text() == gosum, "go mod tidy rewrote go.sum"

    p = go(["mod", "download", "-json", "all"], chaincode, tmp_path / "go", proxy_url(proxy), gocache)
    assert p.returncode == 0, p.stderr
    downloaded = {doc["Path"]: doc for doc in _json_stream(p.stdout)}
    ours = go_sum_lines([GREET, LOUD, CAPS, OLD, gocmp])
    for m in (GREET, LOUD, CAPS, OLD, gocmp):
        d = downloaded[m.path]
        assert d["Version"] == m.version
        assert f"{m.path} {m.version} {d['Sum']}" in ours
        assert f"{m.path} {m.version}/go.mod {d['GoModSum']}" in ours
        assert Path(d["Zip"]).read_bytes() == (proxy / escape(m.path) / "@v" / f"{escape(m.version)}.zip").read_bytes()
    # go-cmp's go.mod is upstream's byte for byte: its hash is the public one.
    assert f"github.com/google/go-cmp {gocmp.version}/go.mod h1:17dUlkBOakJ0+DkrSSNjCkIjxS6bF9zb3elmeNGIjoY=" in ours


def _json_stream(text: str) -> list[dict]:
    """The concatenated JSON objects `go ... -json` prints."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while text[i:].strip():
        doc, end = dec.raw_decode(text[i:].lstrip())
        i = len(text) - len(text[i:].lstrip()) + end
        docs.append(doc)
    return docs


def test_builds_through_the_directory_proxy(chaincode, tmp_path, proxy, gocache):
    assert not (chaincode / "vendor").exists()
    assert build_and_run(chaincode, tmp_path, proxy_url(proxy), gocache) == EXPECTED_OUTPUT


def test_builds_through_the_http_proxy(chaincode, tmp_path, proxy, gocache, gocmp):
    with serve_http(proxy) as server:
        assert build_and_run(chaincode, tmp_path, server.url, gocache) == EXPECTED_OUTPUT
    for m in (GREET, LOUD, CAPS, OLD, gocmp):
        base = f"/{escape(m.path)}/@v/{escape(m.version)}"
        assert f"{base}.mod" in server.requests, server.requests
        assert f"{base}.zip" in server.requests, server.requests


@pytest.mark.parametrize("line", [0, 1], ids=["zip-hash", "go.mod-hash"])
def test_a_wrong_go_sum_hash_is_refused(chaincode, tmp_path, proxy, gocache, line):
    lines = (chaincode / "go.sum").read_text().splitlines()
    index = next(i for i, text in enumerate(lines) if text.startswith("example.com/greet ")) + line
    name, version, _ = lines[index].split()
    lines[index] = f"{name} {version} h1:{base64.b64encode(bytes(32)).decode()}"
    (chaincode / "go.sum").write_text("\n".join(lines) + "\n")
    p = go(["build", "-o", str(tmp_path / "bin"), "."], chaincode, tmp_path / "go", proxy_url(proxy), gocache)
    assert p.returncode != 0
    assert f"verifying example.com/greet@{version}: checksum mismatch" in p.stderr, p.stderr
    assert "SECURITY ERROR" in p.stderr, p.stderr


@pytest.mark.parametrize("how", ["directory", "http-404", "http-410"])
def test_a_module_missing_from_the_proxy_fails_the_build(chaincode, tmp_path, proxy, gocache, gocmp, how):
    exe = tmp_path / "bin"
    if how == "directory":
        partial = write_proxy(tmp_path / "partial", [LOUD, CAPS, OLD, gocmp])        # no greet
        p = go(["build", "-o", str(exe), "."], chaincode, tmp_path / "go", proxy_url(partial), gocache)
        says = f"reading {proxy_url(partial)}/example.com/greet/@v/v1.2.0.zip: no such file or directory"
    else:
        status = int(how[-3:])
        with serve_http(proxy, missing=["example.com/greet"], status=status) as server:
            p = go(["build", "-o", str(exe), "."], chaincode, tmp_path / "go", server.url, gocache)
        reason = "Not Found" if status == 404 else "Gone"
        says = f"reading {server.url}/example.com/greet/@v/v1.2.0.zip: {status} {reason}"
        assert server.requested("/example.com/greet/@v/v1.2.0.zip"), server.requests
    assert p.returncode != 0
    assert says in p.stderr, p.stderr
    assert not exe.exists()


# --- without go ----------------------------------------------------------------------------

def test_escape_case_encodes_paths_and_versions():
    assert escape("github.com/Azure/azure-sdk") == "github.com/!azure/azure-sdk"
    assert escape("v1.0.0-RC1") == "v1.0.0-!r!c1"
    assert missing_prefix("example.com/Caps") == "/example.com/!caps/@v/"
    assert missing_prefix("example.com/Caps@v1.0.0-RC1") == "/example.com/!caps/@v/v1.0.0-!r!c1."
    with pytest.raises(ValueError):
        escape("example.com/a!b")


def test_the_proxy_layout(tmp_path):
    root = write_proxy(tmp_path / "p", [CAPS, GREET, module("example.com/greet", "v1.10.0", {
        "go.mod": "module example.com/greet\n", "g.go": "package greet\n"})])
    d = root / "example.com" / "greet" / "@v"
    assert (d / "list").read_text() == "v1.2.0\nv1.10.0\n"                     # semver order, not text
    assert json.loads((d / "v1.2.0.info").read_text()) == {"Version": "v1.2.0", "Time": "2023-01-01T00:00:00Z"}
    assert (d / "v1.2.0.mod").read_bytes() == GREET.files["go.mod"]
    caps = root / "example.com" / "!caps" / "@v"
    assert sorted(p.name for p in caps.iterdir()) == ["list", *(f"v1.0.0-!r!c1.{x}" for x in ("info", "mod", "zip"))]
    assert not (root / "example.com" / "old").exists()
    with pytest.raises(ValueError, match="given twice"):
        write_proxy(tmp_path / "q", [GREET, GREET])


def test_zips_are_deterministic_and_follow_the_rules(tmp_path, gocmp):
    for m in (GREET, LOUD, CAPS, OLD, gocmp):
        data = m.zip_bytes()
        assert data == m.zip_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            assert names == sorted(names)
            assert all(n.startswith(m.prefix) for n in names)
            assert not any(i.is_dir() for i in infos)
            assert {i.date_time for i in infos} == {ZIP_DATE}
            assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert f"{m.path} {m.version} {zip_hash(data)}" in go_sum_lines([m])
    # The same modules written twice, elsewhere: the same bytes.
    a, b = write_proxy(tmp_path / "a", [GREET, gocmp]), write_proxy(tmp_path / "b", [gocmp, GREET])
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_a_directory_loses_what_go_leaves_out_of_a_zip(tmp_path):
    src = tmp_path / "src"
    keep = ["go.mod", "LICENSE", "a.go", "vendor/modules.txt", "internal/b.go", ".hidden/c.go", "sub dir/d.txt"]
    drop = ["vendor/example.org/dep/dep.go", ".git/config", ".hg/x", "nested/go.mod", "nested/n.go",
            "nested/deeper/m.go", ".hg_archival.txt"]
    for name in keep + drop:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(f"// {name}\n" if name != "go.mod" else "module example.com/m\n")
    (src / "link.go").symlink_to(src / "a.go")
    os.mkfifo(src / "fifo")
    m = module_from_dir("example.com/m", "v0.1.0", src)
    assert sorted(m.files) == sorted(keep)
    # From a list of files (Go's zip.Create), only a directory walk skips VCS directories.
    listed = module("example.com/m", "v0.1.0", {n: "" for n in keep + drop})
    assert listed.files.keys() == {*keep, ".git/config", ".hg/x"}


@pytest.mark.parametrize("name", ["a/../b.go", "/abs.go", "a//b.go", "./a.go", "a/", "x:y.go", "q?.go",
                                  "back\\slash.go", "trailing.", "...", "CON.txt", "lpt1", "GO.MOD",
                                  "new\nline.go"])
def test_invalid_file_names_are_refused(name):
    with pytest.raises(ValueError):
        module("example.com/m", "v0.1.0", {name: "x"})


@pytest.mark.parametrize("names", [["README", "readme"], ["a.go", "A.go/b.go"], ["Dir/a.go", "dir/b.go"]])
def test_case_fold_collisions_are_refused(names):
    with pytest.raises(ValueError, match="collides"):
        module("example.com/m", "v0.1.0", dict.fromkeys(names, "x"))


@pytest.mark.parametrize("path, version", [("example.com/m", "1.0.0"), ("example.com/m", "v1.0"),
                                           ("example.com/m", "v2.0.0"), ("example.com/m/v2", "v1.0.0"),
                                           ("Example.com/m", "v1.0.0"), ("localhost/m", "v1.0.0")])
def test_bad_module_paths_and_versions_are_refused(path, version):
    with pytest.raises(ValueError):
        module(path, version, {"a.go": "package a\n"})


def test_a_module_holds_exactly_its_zip_files():
    with pytest.raises(ValueError, match="leaves out"):
        Module("example.com/m", "v0.1.0", {"vendor/x/y.go": b""})
    with pytest.raises(ValueError, match="go.mod"):
        module("example.com/m", "v0.1.0", {"go.mod": "x" * (16 << 20 | 1)})


def test_debian_versions():
    assert go_version_of("0.5.9-1") == "v0.5.9"
    assert go_version_of("1:1.2.0~rc1+ds-2") == "v1.2.0-rc1"
    assert go_version_of("1.11.1+dfsg-1") == "v1.11.1"
    with pytest.raises(ValueError):
        go_version_of("0.0~git20200101.abcdef-1")


def test_the_debian_module(gocmp):
    assert gocmp.path == "github.com/google/go-cmp"
    assert gocmp.version == debian_version("golang-github-google-go-cmp-dev")
    assert gocmp.files["go.mod"] == Path("/usr/share/gocode/src/github.com/google/go-cmp/go.mod").read_bytes()
    assert "cmp/compare.go" in gocmp.files and not any(n.endswith("go.mod") and n != "go.mod" for n in gocmp.files)


def test_a_main_module_needs_its_whole_closure(tmp_path):
    with pytest.raises(ValueError, match="not in the pool"):
        chaincode_module(tmp_path / "a", [LOUD])
    with pytest.raises(ValueError, match="use"):
        chaincode_module(tmp_path / "b", [module("example.com/n", "v0.1.0", {"n.go": "package n\n"})])
    other = module("example.com/greet", "v1.3.0", {"go.mod": "module example.com/greet\n", "g.go": "package greet\n"},
                   use=("example.com/greet", '"x"'))
    with pytest.raises(ValueError, match="both"):
        chaincode_module(tmp_path / "c", [LOUD, other], pool=[GREET])
