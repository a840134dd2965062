"""Opening packages the peer accepts, and finding their Go source by the
peer's rules: writer → open_package → go_source for every code.tar.gz
layout, legacy ChaincodeDeploymentSpecs (bare and signed), directories,
ccaas and k8s packages, and the tar dialects real tools write. The Go
layouts are also compiled with the host's go, the way the peer's build
script does, to show the GoSource (and its GOPATH root) is enough."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from fabric_corpus import (
    GO_MOD,
    MAIN_GO,
    cds,
    code_tar,
    d,
    f,
    gz,
    hard,
    meta_bytes,
    package,
    signed_cds,
    sym,
    tar_bytes,
)

from ocibuild.errors import InputError, PackageError
from ocibuild.fabric.common import Limits
from ocibuild.fabric.names import package_id
from ocibuild.fabric.package import DIRECTORY, LEGACY, LIFECYCLE, go_source, open_package
from ocibuild.fabric.writer import write_ccaas, write_golang, write_k8s
from ocibuild.gosource import GOPATH, READONLY, VENDOR, GoSource

FIXTURE = Path(__file__).parent / "fixtures" / "chaincode"
DEP_GO = b"package dep\n\nfunc Answer() int { return 42 }\n"
USES_DEP = b'package main\n\nimport "example.com/dep"\n\nfunc main() { println(dep.Answer()) }\n'
MODULES_TXT = b"# example.com/dep v1.0.0\n## explicit\nexample.com/dep\n"
GO_MOD_DEP = b"module example.com/cc\n\ngo 1.19\n\nrequire example.com/dep v1.0.0\n"


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    w.mkdir()
    return w


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_and_open(tmp_path, work, source, label="cc_1.0", **kw):
    out = tmp_path / "cc.tar.gz"
    pid = write_golang(str(out), str(source), label, **kw)
    pkg = open_package(str(out), str(work))
    assert pkg.kind == LIFECYCLE and pkg.package_id == pid == package_id(str(out))
    assert Path(pkg.code_dir).is_relative_to(work)
    return pkg


def peer_build(src: GoSource, out: Path) -> None:
    """Compile the way the peer's build script does for this source."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the host Go toolchain (`go`) is not installed; run scripts/setup")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "GOFLAGS": "",
           "GOPROXY": "off", "CGO_ENABLED": "0", "GOCACHE": os.environ.get("GOCACHE", "/tmp/ocibuild-test-gocache")}
    if src.mode == GOPATH:
        assert src.gopath_root
        # The builders' job: the whole tree holding src/ is the GOPATH entry.
        env.update(GO111MODULE="off", GOPATH=src.gopath_root)
        argv, cwd = [go, "build", "-o", str(out), src.import_path], src.gopath_root
    else:
        env.update(GO111MODULE="on")
        target = src.target
        argv, cwd = [go, "build", f"-mod={src.mode}", "-o", str(out), target], src.root
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(argv)} in {cwd} failed:\n{r.stderr}"
    assert out.exists()


# -- the layouts the peer accepts -----------------------------------------------

def test_module_root_in_src(tmp_path, work):
    pkg = write_and_open(tmp_path, work, FIXTURE)
    src = go_source(pkg)
    assert src == GoSource(os.path.join(pkg.code_dir, "src"), READONLY,
                                  "example.org/chaincode/assettransfer", target=".")
    assert pkg.couchdb_indexes == os.path.join(pkg.code_dir, "META-INF", "statedb", "couchdb", "indexes")
    assert os.path.isfile(os.path.join(pkg.couchdb_indexes, "indexOwner.json"))
    assert not os.path.exists(os.path.join(pkg.code_dir, "src", "META-INF"))
    peer_build(src, tmp_path / "chaincode")


def test_module_root_with_vendor(tmp_path, work):
    source = tree(tmp_path / "cc", {"go.mod": GO_MOD_DEP, "main.go": USES_DEP,
                                    "vendor/modules.txt": MODULES_TXT, "vendor/example.com/dep/dep.go": DEP_GO})
    pkg = write_and_open(tmp_path, work, source)
    src = go_source(pkg)
    assert (src.mode, src.root, src.import_path, src.target) == (
        VENDOR, os.path.join(pkg.code_dir, "src"), "example.com/cc", ".")
    peer_build(src, tmp_path / "chaincode")


def test_sub_package_of_a_module_in_src(tmp_path, work):
    # The peer CLI puts the module root in src/ and the package's import path
    # in metadata.json; the peer then runs `go build <path>` in src/.
    source = tree(tmp_path / "cc", {"go.mod": GO_MOD, "lib/lib.go": b"package lib\n",
                                    "cmd/cc/main.go": MAIN_GO,
                                    "cmd/cc/META-INF/statedb/couchdb/indexes/i.json": b'{"index":{}}'})
    pkg = write_and_open(tmp_path, work, source, path="example.com/cc/cmd/cc")
    assert pkg.path == "example.com/cc/cmd/cc"
    src = go_source(pkg)
    assert (src.mode, src.root, src.target) == (READONLY, os.path.join(pkg.code_dir, "src"), "./cmd/cc")
    assert pkg.couchdb_indexes and os.path.isfile(os.path.join(pkg.couchdb_indexes, "i.json"))
    peer_build(src, tmp_path / "chaincode")


@pytest.mark.parametrize("vendored", [False, True])
def test_module_under_src_path(tmp_path, work, vendored):
    files = {"go.mod": GO_MOD_DEP if vendored else GO_MOD, "main.go": USES_DEP if vendored else MAIN_GO}
    if vendored:
        files.update({"vendor/modules.txt": MODULES_TXT, "vendor/example.com/dep/dep.go": DEP_GO})
    source = tree(tmp_path / "cc", files)
    pkg = write_and_open(tmp_path, work, source, path="example.com/cc", layout="path")
    assert os.path.isfile(os.path.join(pkg.code_dir, "src", "example.com", "cc", "go.mod"))
    src = go_source(pkg)
    assert src == GoSource(os.path.join(pkg.code_dir, "src", "example.com", "cc"),
                                  VENDOR if vendored else READONLY, "example.com/cc")
    peer_build(src, tmp_path / "chaincode")


def test_gopath_mode_written(tmp_path, work):
    source = tree(tmp_path / "cc", {"main.go": MAIN_GO, "util/util.go": b"package util\n"})
    pkg = write_and_open(tmp_path, work, source, path="example.com/cc")
    src = go_source(pkg)
    assert src == GoSource(os.path.join(pkg.code_dir, "src", "example.com", "cc"), GOPATH,
                                  "example.com/cc", gopath_root=pkg.code_dir)
    assert src.workdir == "/chaincode/input/src/example.com/cc"
    peer_build(src, tmp_path / "chaincode")


def test_gopath_mode_with_dependencies_beside_the_package(tmp_path, work):
    # What the 1.x / GOPATH peer CLI packs: the package and its dependencies,
    # each at src/<import path>. Building needs the whole src/ tree.
    data = package(meta={"type": "golang", "path": "example.com/cc", "label": "cc"},
                   code=code_tar([f("src/example.com/cc/main.go", USES_DEP),
                                  f("src/example.com/dep/dep.go", DEP_GO)]))
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(data)
    pkg = open_package(str(path), str(work))
    src = go_source(pkg)
    assert (src.mode, src.gopath_root) == (GOPATH, pkg.code_dir)
    assert os.path.isfile(os.path.join(src.gopath_root, "src", "example.com", "dep", "dep.go"))
    peer_build(src, tmp_path / "chaincode")


def test_rules_are_checked_in_the_peers_order(tmp_path, work):
    # src/go.mod wins over src/<path>/go.mod, which wins over GOPATH mode.
    code = code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO),
                     f("src/example.com/cc/go.mod", b"module example.com/cc\n"),
                     f("src/example.com/cc/main.go", MAIN_GO)])
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(code=code))
    pkg = open_package(str(path), str(work))
    src = go_source(pkg)
    assert (src.mode, src.root) == (READONLY, os.path.join(pkg.code_dir, "src"))


# -- legacy packages ------------------------------------------------------------

@pytest.mark.parametrize("signed", [False, True])
def test_legacy_cds(tmp_path, work, signed):
    code = code_tar([f("src/example.com/cc/main.go", USES_DEP), f("src/example.com/dep/dep.go", DEP_GO),
                     f("META-INF/statedb/couchdb/indexes/i.json", b'{"index": {"fields": ["owner"]}}')])
    data = cds(code, path="example.com/cc", name="mycc", version="1.0")
    path = tmp_path / "mycc.tar.gz"          # a misleading name: the kind comes from the content
    path.write_bytes(signed_cds(data) if signed else data)
    pkg = open_package(str(path), str(work))
    assert (pkg.kind, pkg.type, pkg.name, pkg.version, pkg.path, pkg.signed) == (
        LEGACY, "golang", "mycc", "1.0", "example.com/cc", signed)
    assert pkg.ccid == "mycc:1.0" and pkg.package_id == "" and pkg.label == ""
    assert pkg.couchdb_indexes
    src = go_source(pkg)
    assert (src.mode, src.import_path, src.gopath_root) == (GOPATH, "example.com/cc", pkg.code_dir)
    peer_build(src, tmp_path / "chaincode")


def test_legacy_cds_field_order_and_unknown_fields(tmp_path, work):
    # Fields in any order, unknown fields skipped, repeated messages merged.
    from fabric_corpus import chaincode_id, field_bytes, field_varint
    code = code_tar([f("src/example.com/cc/main.go", MAIN_GO)])
    spec_a = field_bytes(2, chaincode_id(path="example.com/cc", name="old"))
    spec_b = field_varint(1, 1) + field_bytes(2, chaincode_id(name="mycc", version="2.0")) + field_varint(99, 5)
    data = field_bytes(3, code) + field_varint(7, 1) + field_bytes(1, spec_a) + field_bytes(1, spec_b)
    path = tmp_path / "x"
    path.write_bytes(data)
    pkg = open_package(str(path), str(work))
    assert (pkg.name, pkg.version, pkg.path, pkg.type) == ("mycc", "2.0", "example.com/cc", "golang")


def test_legacy_node_chaincode_is_opened_but_not_compiled(tmp_path, work):
    path = tmp_path / "node.cds"
    path.write_bytes(cds(code_tar([f("src/package.json", b"{}")]), type_code=2, path="/opt/cc"))
    pkg = open_package(str(path), str(work))
    assert pkg.type == "node"
    with pytest.raises(PackageError, match="the package is Node.js chaincode, which ocibuild does not build yet"):
        go_source(pkg)


def test_lifecycle_package_named_like_a_cds(tmp_path, work):
    path = tmp_path / "mycc.cds"
    path.write_bytes(package())
    assert open_package(str(path), str(work)).kind == LIFECYCLE


# -- directories, ccaas, k8s -------------------------------------------------------

def test_directory_is_read_as_before(tmp_path, work):
    pkg = open_package(str(FIXTURE), str(work))
    assert (pkg.kind, pkg.type, pkg.code_dir) == (DIRECTORY, "golang", str(FIXTURE))
    assert os.listdir(work) == []
    src = go_source(pkg)
    assert type(src) is GoSource and (src.root, src.mode) == (str(FIXTURE), READONLY)
    assert pkg.couchdb_indexes == str(FIXTURE / "META-INF" / "statedb" / "couchdb" / "indexes")


def test_ccaas_package(tmp_path, work):
    out = tmp_path / "ccaas.tar.gz"
    pid = write_ccaas(str(out), "asset_1.0", "asset-cc.example.com:9999")
    pkg = open_package(str(out), str(work))
    assert (pkg.type, pkg.label, pkg.package_id) == ("ccaas", "asset_1.0", pid)
    assert pkg.connection == {"address": "asset-cc.example.com:9999", "dial_timeout": "10s", "tls_required": False}
    with pytest.raises(PackageError, match="a ccaas package: .* nothing to compile"):
        go_source(pkg)


def test_k8s_package(tmp_path, work):
    out = tmp_path / "k8s.tar.gz"
    digest = "sha256:" + "0f" * 32
    pid = write_k8s(str(out), "asset_1.0", "registry.example.com/asset-cc", digest)
    pkg = open_package(str(out), str(work))
    assert (pkg.type, pkg.package_id) == ("k8s", pid)
    assert pkg.image == {"name": "registry.example.com/asset-cc", "digest": digest}


# -- tar dialects and details real tools produce -----------------------------------

@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_in_every_tar_format(tmp_path, work, fmt):
    # GNU long-name records, the ustar prefix field, pax path records.
    deep = "src/vendor/github.com/" + "/".join(["some-rather-long-directory"] * 5) + "/file.go"
    assert 100 < len(deep) < 250
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(code=code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO),
                                            f(deep, b"package x\n")], fmt), fmt=fmt))
    pkg = open_package(str(path), str(work))
    assert Path(pkg.code_dir, deep).read_bytes() == b"package x\n"


def test_tar_made_from_a_directory_with_dot_prefix_is_refused_as_the_peer_does(tmp_path, work):
    # `tar -C dir -czf code.tar.gz .` writes "./", "./src/", "./src/main.go", ...: the
    # peer's golang ValidateCodePackage wants every name to start src/ or META-INF/.
    code = code_tar([d("./"), d("./src/"), f("./src/go.mod", GO_MOD), f("./src/main.go", MAIN_GO)])
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(code=code))
    with pytest.raises(PackageError, match=r"entry '\./' is outside src/ and META-INF/.*\(outside src and META-INF\)"):
        open_package(str(path), str(work))


def test_directory_entry_after_its_files(tmp_path, work):
    code = code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO), d("src")])
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(code=code))
    open_package(str(path), str(work))


def test_multi_member_gzip_and_zero_padding(tmp_path, work):
    raw = tar_bytes([f("metadata.json", meta_bytes()), f("code.tar.gz", code_tar([f("src/go.mod", GO_MOD),
                                                                                   f("src/main.go", MAIN_GO)]))])
    data = gzip.compress(raw[:1024], mtime=0) + gzip.compress(raw[1024:], mtime=0) + bytes(512)
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(data)
    assert open_package(str(path), str(work)).label == "cc_1.0"


def test_unknown_top_level_files_are_ignored_like_the_peer(tmp_path, work):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(outer_extra=[f("README.md", b"hello")]))
    pkg = open_package(str(path), str(work))
    assert not os.path.exists(os.path.join(pkg.code_dir, "README.md"))


def test_metadata_keys_match_case_insensitively_like_go(tmp_path, work):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(meta={"Type": "GOLANG", "PATH": "example.com/cc", "Label": "cc_1.0", "extra": 1}))
    pkg = open_package(str(path), str(work))
    assert (pkg.type, pkg.path, pkg.label) == ("golang", "example.com/cc", "cc_1.0")


EXTERNAL_META = {"type": "external", "path": "example.com/cc", "label": "cc_1.0"}   # no golang rules


def test_safe_links_are_extracted(tmp_path, work):
    code = code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO), sym("src/alias.txt", "main.go"),
                     sym("src/up/link", "../main.go"), hard("src/copy.go.txt", "src/main.go"),
                     sym("src/dangling", "nowhere/at/all")])
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(meta=EXTERNAL_META, code=code))
    pkg = open_package(str(path), str(work))
    s = Path(pkg.code_dir, "src")
    assert os.readlink(s / "alias.txt") == "main.go" and (s / "alias.txt").read_bytes() == MAIN_GO
    assert (s / "up" / "link").read_bytes() == MAIN_GO
    assert os.stat(s / "copy.go.txt").st_ino == os.stat(s / "main.go").st_ino
    assert os.readlink(s / "dangling") == "nowhere/at/all"


def test_modes_are_normalised(tmp_path, work):
    old = os.umask(0o077)
    try:
        code = code_tar([f("src/go.mod", GO_MOD, mode=0o600), f("src/main.go", MAIN_GO, mode=0o6777),
                         f("src/tool.sh", b"#!/bin/sh\n", mode=0o4750)])
        path = tmp_path / "cc.tar.gz"
        path.write_bytes(package(meta=EXTERNAL_META, code=code))
        pkg = open_package(str(path), str(work))
    finally:
        os.umask(old)
    modes = {n: stat.S_IMODE(os.stat(os.path.join(pkg.code_dir, "src", n)).st_mode)
             for n in ("go.mod", "main.go", "tool.sh")}
    assert modes == {"go.mod": 0o644, "main.go": 0o755, "tool.sh": 0o755}
    assert stat.S_IMODE(os.stat(os.path.join(pkg.code_dir, "src")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(pkg.code_dir).st_mode) == 0o755


def test_tar_without_end_blocks_is_accepted_like_go(tmp_path, work):
    code = gz(tar_bytes([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO)], end=False))
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(code=code))
    open_package(str(path), str(work))


# -- go_source refusals ---------------------------------------------------------------

def _open(tmp_path, work, meta=None, members=()):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(meta=meta, code=code_tar(list(members))))
    return open_package(str(path), str(work))


def test_go_source_needs_src(tmp_path, work):
    pkg = _open(tmp_path, work, members=[f("META-INF/statedb/couchdb/indexes/i.json", b"{}")])
    with pytest.raises(PackageError, match=r"the code package has no src/ directory; .*\(missing src\)"):
        go_source(pkg)


@pytest.mark.parametrize("members, says", [
    ([f("main.go", MAIN_GO)], r"entry 'main.go' is outside src/ and META-INF/"),
    ([f("src/go.mod", GO_MOD), sym("src/alias.go", "main.go")], r"entry 'src/alias.go' is a symbolic link"),
    ([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO, mode=0o4755)], r"has mode 4755 \(setuid"),
    ([d("src/"), d("src/x", mode=0o1777)], r"has mode 1777"),
])
def test_what_the_peer_refuses_in_a_golang_package_is_refused(tmp_path, work, members, says):
    """Fabric 2.x's golang ValidateCodePackage: names under src/ or META-INF/,
    regular files and directories only, no setuid/setgid/sticky bit."""
    with pytest.raises(PackageError, match=says + r".*the peer refuses it"):
        _open(tmp_path, work, members=members)


def test_hard_links_and_executable_files_pass_the_peers_rules(tmp_path, work):
    pkg = _open(tmp_path, work, members=[f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO, mode=0o755),
                                         hard("src/copy.go.txt", "src/main.go"), d("META-INF/")])
    assert go_source(pkg).mode == READONLY


def test_nan_in_metadata_json_is_refused_as_go_refuses_it(tmp_path, work):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(meta=b'{"type":"golang","path":"example.com/cc","label":"cc_1","x":NaN}'))
    with pytest.raises(PackageError, match=r"metadata.json is not valid JSON"):
        open_package(str(path), str(work))


def test_go_source_path_outside_the_module(tmp_path, work):
    pkg = _open(tmp_path, work, meta={"type": "golang", "path": "example.com/other", "label": "cc"},
                members=[f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO)])
    with pytest.raises(PackageError, match=r"metadata path 'example.com/other' is not module 'example.com/cc'"):
        go_source(pkg)


def test_go_source_missing_sub_package(tmp_path, work):
    pkg = _open(tmp_path, work, meta={"type": "golang", "path": "example.com/cc/cmd/x", "label": "cc"},
                members=[f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO)])
    with pytest.raises(PackageError, match=r"src/cmd/x does not exist \(missing Go package\)"):
        go_source(pkg)


def test_go_source_gopath_package_missing(tmp_path, work):
    pkg = _open(tmp_path, work, members=[f("src/example.com/other/main.go", MAIN_GO)])
    with pytest.raises(PackageError, match=r"no Go package at src/example.com/cc .*GOPATH mode"):
        go_source(pkg)


def test_go_source_gopath_package_through_escaping_path(tmp_path, work):
    # src/example.com is a symlink to a directory inside the tree: followed
    # as the peer's shell would, and still inside. (A legacy 1.x package: a
    # lifecycle golang package may hold no links at all.)
    code = code_tar([d("real/cc"), f("real/cc/main.go", MAIN_GO), sym("src/example.com", "../real")])
    path = tmp_path / "cc.cds"
    path.write_bytes(cds(code, path="example.com/cc"))
    pkg = open_package(str(path), str(work))
    src = go_source(pkg)
    assert src.mode == GOPATH and os.path.realpath(src.root).startswith(os.path.realpath(pkg.code_dir))


def test_go_module_without_module_directive(tmp_path, work):
    pkg = _open(tmp_path, work, members=[f("src/go.mod", b"go 1.19\n"), f("src/main.go", MAIN_GO)])
    with pytest.raises(PackageError, match=r"src/go.mod has no module directive"):
        go_source(pkg)


# -- API edges -----------------------------------------------------------------------------

def test_missing_input(tmp_path, work):
    with pytest.raises(InputError, match="cannot read"):
        open_package(str(tmp_path / "nope.tar.gz"), str(work))


def test_missing_work_dir(tmp_path):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package())
    with pytest.raises(InputError, match="work directory"):
        open_package(str(path), str(tmp_path / "no-such-dir"))


def test_limits_must_be_positive():
    with pytest.raises(InputError, match="max_bytes must be positive"):
        Limits(max_bytes=0)


def test_two_opens_do_not_collide(tmp_path, work):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package())
    a, b = open_package(str(path), str(work)), open_package(str(path), str(work))
    assert a.code_dir != b.code_dir and a.package_id == b.package_id
