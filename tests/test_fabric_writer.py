"""Writing lifecycle packages: the layout the peer CLI writes, byte-for-byte
reproducible whatever the host (mtimes, modes, umask, creation order),
atomic, readable by other tools, and refused with a clear error when the
input cannot make a valid package."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ocibuild.fabric.writer as writer_module
from ocibuild.errors import InputError
from ocibuild.fabric.names import package_id
from ocibuild.fabric.writer import write_ccaas, write_golang, write_k8s

FIXTURE = Path(__file__).parent / "fixtures" / "chaincode"
DIGEST = "sha256:" + "ab" * 32


def members(path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """The outer entries of a package, read with the standard library."""
    with tarfile.open(path, "r:gz") as t:
        return {m.name: (m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()}


def code_members(path: Path) -> dict[str, tarfile.TarInfo]:
    code = members(path)["code.tar.gz"][1]
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as t:
        return {m.name: m for m in t.getmembers()}


def code_file(path: Path, name: str) -> bytes:
    code = members(path)["code.tar.gz"][1]
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as t:
        return t.extractfile(name).read()


def module(root: Path, extra: dict[str, bytes] | None = None) -> Path:
    files = {"go.mod": b"module example.com/cc\n\ngo 1.19\n", "main.go": b"package main\nfunc main() {}\n",
             "lib/lib.go": b"package lib\n", ".git/config": b"[core]\n", ".gitignore": b"*.out\n",
             "META-INF/statedb/couchdb/indexes/owner.json": b'{"index": {"fields": ["owner"]}}',
             "META-INF/.hidden": b"not packed\n", **(extra or {})}
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


# -- layout ---------------------------------------------------------------------

def test_golang_layout_is_the_peer_clis(tmp_path):
    out = tmp_path / "cc.tar.gz"
    pid = write_golang(str(out), str(module(tmp_path / "cc")), "cc_1.0")
    outer = members(out)
    assert list(outer) == ["metadata.json", "code.tar.gz"]
    assert outer["metadata.json"][1] == b'{"path":"example.com/cc","type":"golang","label":"cc_1.0"}'
    for info, _ in outer.values():
        assert (info.mode, info.uid, info.gid, info.mtime, info.uname, info.gname) == (0o644, 0, 0, 0, "", "")
    code = code_members(out)
    assert sorted(code) == ["META-INF", "META-INF/statedb", "META-INF/statedb/couchdb",
                            "META-INF/statedb/couchdb/indexes", "META-INF/statedb/couchdb/indexes/owner.json",
                            "src", "src/.gitignore", "src/go.mod", "src/lib", "src/lib/lib.go", "src/main.go"]
    for name, info in code.items():
        assert (info.uid, info.gid, info.mtime) == (500, 500, 0), name
        assert info.mode == (0o755 if info.isdir() else 0o644), name
    assert pid == "cc_1.0:" + hashlib.sha256(out.read_bytes()).hexdigest()


def test_gzip_headers_carry_no_time_or_name(tmp_path):
    out = tmp_path / "cc.tar.gz"
    write_golang(str(out), str(module(tmp_path / "cc")), "cc_1.0")
    for blob in (out.read_bytes(), members(out)["code.tar.gz"][1]):
        assert blob[:4] == b"\x1f\x8b\x08\x00" and blob[4:8] == bytes(4) and blob[9] == 255


def test_gopath_layout(tmp_path):
    src = tmp_path / "cc"
    (src / "vendor" / "example.com" / "dep").mkdir(parents=True)
    (src / "main.go").write_bytes(b"package main\n")
    (src / "vendor" / "example.com" / "dep" / "dep.go").write_bytes(b"package dep\n")
    out = tmp_path / "cc.tar.gz"
    write_golang(str(out), str(src), "cc", path="example.com/cc")
    assert json.loads(members(out)["metadata.json"][1]) == {
        "path": "example.com/cc", "type": "golang", "label": "cc"}
    files = [n for n, m in code_members(out).items() if m.isfile()]
    assert files == ["src/example.com/cc/main.go", "src/example.com/cc/vendor/example.com/dep/dep.go"]


def test_sub_package_takes_its_own_meta_inf(tmp_path):
    src = module(tmp_path / "cc", {"cmd/cc/main.go": b"package main\n",
                                   "cmd/cc/META-INF/statedb/couchdb/indexes/x.json": b"{}"})
    out = tmp_path / "cc.tar.gz"
    write_golang(str(out), str(src), "cc", path="example.com/cc/cmd/cc")
    names = code_members(out)
    assert "META-INF/statedb/couchdb/indexes/x.json" in names
    assert "src/cmd/cc/META-INF/statedb/couchdb/indexes/x.json" not in names
    assert "src/META-INF/statedb/couchdb/indexes/owner.json" in names        # not this package's META-INF


def test_symlinked_file_is_packed_as_its_content(tmp_path):
    src = module(tmp_path / "cc")
    (tmp_path / "shared.go").write_bytes(b"package main\n// shared\n")
    (src / "shared.go").symlink_to(tmp_path / "shared.go")
    out = tmp_path / "cc.tar.gz"
    write_golang(str(out), str(src), "cc")
    assert code_members(out)["src/shared.go"].isfile()
    assert code_file(out, "src/shared.go") == b"package main\n// shared\n"


def test_other_tools_read_the_package(tmp_path):
    if shutil.which("tar") is None:
        pytest.fail("GNU tar is needed to check interoperability")
    out = tmp_path / "cc.tar.gz"
    write_golang(str(out), str(FIXTURE), "basic_1.0")
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(dest)], check=True)
    listing = subprocess.run(["tar", "-tzf", str(dest / "code.tar.gz")], check=True, capture_output=True,
                             text=True).stdout.split()
    assert "src/main.go" in listing and "META-INF/statedb/couchdb/indexes/indexOwner.json" in listing
    assert gzip.decompress((dest / "code.tar.gz").read_bytes())


# -- reproducible --------------------------------------------------------------------

def test_same_inputs_same_bytes(tmp_path):
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    write_golang(str(a), str(FIXTURE), "basic_1.0")
    write_golang(str(b), str(FIXTURE), "basic_1.0")
    assert a.read_bytes() == b.read_bytes()


def test_host_details_do_not_matter(tmp_path):
    one = module(tmp_path / "one")
    two = tmp_path / "two"
    # Same content, created in reverse order, other mtimes and modes, other umask.
    old = os.umask(0o077)
    try:
        for p in sorted(one.rglob("*"), reverse=True):
            q = two / p.relative_to(one)
            if p.is_file():
                q.parent.mkdir(parents=True, exist_ok=True)
                q.write_bytes(p.read_bytes())
                os.chmod(q, 0o600)
                os.utime(q, (123456789, 123456789))
    finally:
        os.umask(old)
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert write_golang(str(a), str(one), "cc") == write_golang(str(b), str(two), "cc")
    assert a.read_bytes() == b.read_bytes()


def test_source_date_epoch(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.tar.gz", "b.tar.gz", "c.tar.gz"))
    write_golang(str(a), str(FIXTURE), "cc", mtime=1700000000)
    write_golang(str(b), str(FIXTURE), "cc", mtime=1700000000)
    write_golang(str(c), str(FIXTURE), "cc")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert {m.mtime for m in code_members(a).values()} == {1700000000}


_names = st.text(alphabet="abcdefgh_.-", min_size=1, max_size=6).filter(lambda s: not s.startswith("."))
_trees = st.dictionaries(st.tuples(st.sampled_from(["a", "b", "c/d"]), _names).map("/".join),
                         st.binary(max_size=64), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None)
@given(files=_trees, seed=st.integers(0, 1000))
def test_package_id_depends_only_on_content(tmp_path_factory, files, seed):
    import random
    base = tmp_path_factory.mktemp("prop")
    order = sorted(files)
    shuffled = sorted(files, key=lambda _: random.Random(seed).random())
    ids = []
    for i, names in enumerate((order, shuffled)):
        root = base / f"src{i}"
        root.mkdir()
        (root / "go.mod").write_bytes(b"module example.com/p\n")
        (root / "main.go").write_bytes(b"package main\n")
        for name in names:
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(files[name])
            os.chmod(p, 0o600 if i else 0o664)
            os.utime(p, (seed * i, seed * i))
        ids.append(write_golang(str(base / f"out{i}.tar.gz"), str(root), "p"))
    assert ids[0] == ids[1]


# -- atomic -----------------------------------------------------------------------------

def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    out = tmp_path / "cc.tar.gz"
    out.write_bytes(b"previous package")

    def broken(entries, stream, mtime=0):
        stream.write(b"partial")
        raise InputError("simulated failure half way")

    monkeypatch.setattr(writer_module, "write_tar", broken)
    with pytest.raises(InputError, match="simulated"):
        write_golang(str(out), str(FIXTURE), "cc")
    assert out.read_bytes() == b"previous package"
    assert os.listdir(tmp_path) == ["cc.tar.gz"]


def test_refused_input_writes_nothing(tmp_path):
    out = tmp_path / "cc.tar.gz"
    with pytest.raises(InputError, match="label 'bad label' is invalid"):
        write_golang(str(out), str(FIXTURE), "bad label")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("setup, kwargs, message", [
    (lambda p: (p / "main.go").write_text("package main"), {"layout": "module"}, "has no go.mod"),
    (lambda p: module(p), {"path": "example.com/other"}, "is not module 'example.com/cc'"),
    (lambda p: module(p), {"path": "example.com/cc/nope"}, "has no directory 'nope'"),
    (lambda p: (p / "main.go").write_text("package main"), {}, "needs the import path"),
    (lambda p: module(p), {"layout": "flat"}, "unknown package layout"),
    (lambda p: (p / "README").write_text("hi"), {"path": "example.com/cc"}, "holds no .go files"),
    (lambda p: module(p), {"path": "../escape"}, "is not a Go import path"),
    (lambda p: module(p), {"mtime": -1}, "must be a non-negative whole number"),
    (lambda p: (module(p), os.mkfifo(p / "pipe")), {}, "is not a regular file"),
    (lambda p: (module(p), (p / "dirlink").symlink_to(p / "lib")), {}, "is a symlink to a directory"),
    (lambda p: (module(p), (p / "gone.go").symlink_to(p / "missing")), {}, "is a symlink to nothing"),
    (lambda p: module(p, {"META-INF/statedb/couchdb/indexes/bad.json": b"{oops"}), {}, "is not a JSON object"),
])
def test_golang_refusals(tmp_path, setup, kwargs, message):
    src = tmp_path / "cc"
    src.mkdir()
    setup(src)
    with pytest.raises(InputError, match=message):
        write_golang(str(tmp_path / "out.tar.gz"), str(src), "cc", **kwargs)
    assert not (tmp_path / "out.tar.gz").exists()


def test_output_directory_must_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_golang(str(tmp_path / "no" / "cc.tar.gz"), str(FIXTURE), "cc")


def test_source_must_be_a_directory(tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        write_golang(str(tmp_path / "cc.tar.gz"), str(FIXTURE / "main.go"), "cc")


# -- ccaas and k8s ---------------------------------------------------------------------

def test_ccaas_package(tmp_path):
    out = tmp_path / "ccaas.tar.gz"
    pid = write_ccaas(str(out), "asset_1.0", "asset-cc:9999")
    outer = members(out)
    assert outer["metadata.json"][1] == b'{"type":"ccaas","label":"asset_1.0"}'
    assert json.loads(code_file(out, "connection.json")) == {
        "address": "asset-cc:9999", "dial_timeout": "10s", "tls_required": False}
    assert pid == package_id(str(out))


def test_ccaas_with_tls_and_indexes(tmp_path):
    meta = tmp_path / "META-INF" / "statedb" / "couchdb" / "indexes"
    meta.mkdir(parents=True)
    (meta / "i.json").write_text('{"index": {}}')
    out = tmp_path / "ccaas.tar.gz"
    write_ccaas(str(out), "cc", "[::1]:7052", dial_timeout="1m30s", tls_required=True, client_auth_required=True,
                root_cert="ROOT", client_cert="CERT", client_key="KEY", meta_inf=str(tmp_path / "META-INF"))
    conn = json.loads(code_file(out, "connection.json"))
    assert conn == {"address": "[::1]:7052", "dial_timeout": "1m30s", "tls_required": True,
                    "client_auth_required": True, "root_cert": "ROOT", "client_cert": "CERT", "client_key": "KEY"}
    assert "META-INF/statedb/couchdb/indexes/i.json" in code_members(out)


@pytest.mark.parametrize("kwargs, message", [
    ({"address": "no-port"}, "must be host:port"),
    ({"address": "host:99999999"}, "must be host:port"),
    ({"address": "a:1", "dial_timeout": "10"}, "must be a Go duration"),
    ({"address": "a:1", "root_cert": "X"}, "TLS is not required"),
    ({"address": "a:1", "tls_required": True, "client_auth_required": True}, "needs client_cert and client_key"),
])
def test_ccaas_refusals(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        write_ccaas(str(tmp_path / "x.tar.gz"), "cc", **kwargs)
    assert os.listdir(tmp_path) == []


def test_k8s_package(tmp_path):
    out = tmp_path / "k8s.tar.gz"
    pid = write_k8s(str(out), "asset_1.0", "registry.example.com/asset-cc", DIGEST)
    assert members(out)["metadata.json"][1] == b'{"type":"k8s","label":"asset_1.0"}'
    assert json.loads(code_file(out, "image.json")) == {"name": "registry.example.com/asset-cc", "digest": DIGEST}
    assert pid == package_id(str(out))


@pytest.mark.parametrize("name, digest, message", [
    ("example.com/cc", "sha256:abc", "must be sha256:<64 hex digits>"),
    ("example.com/cc", "sha512:" + "ab" * 64, "must be sha256"),
    ("example.com/cc@sha256:" + "ab" * 32, DIGEST, "without tag or digest"),
    ("", DIGEST, "must be a repository name"),
])
def test_k8s_refusals(tmp_path, name, digest, message):
    with pytest.raises(InputError, match=message):
        write_k8s(str(tmp_path / "x.tar.gz"), "cc", name, digest)
