"""Modules without vendor/ (issue 10, items 2 and 3), through a real module
proxy made here (tests/goproxy.py: modules the tests write and Debian's
go-cmp): `--go-proxy DIR` offline on every builder (docker, podman, rootless
podman, host: one digest), `--go-proxy URL` and the caller's GOPROXY with
`--network default`, `fabric deps` tarballs (reproducible, and read by the
package rules), a wrong go.sum refused, and `--package` for a module's
sub-package."""

from __future__ import annotations

import io
import os
import pwd
import random
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from conftest import HANG_GUARD, OCIBUILD, ROOTLESS_USER, printed_digest, run_ocibuild
from fabric_corpus import package
from goproxy import chaincode_module, debian_module, escape, example_modules, serve_http, write_proxy
from goproxy import module as goproxy_module

GREET, LOUD = example_modules()


@pytest.fixture(scope="module")
def proxy(shared) -> Path:
    return write_proxy(shared / "proxy", [GREET, LOUD, debian_module()])


@pytest.fixture
def tmp_path(shared, request) -> Path:
    """Each test's own directory, under `shared`."""
    d = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=shared))
    d.chmod(0o755)
    return d


@pytest.fixture
def module(tmp_path) -> Path:
    """An unvendored main module needing loud (so greet) and go-cmp."""
    return chaincode_module(tmp_path / "cc", [LOUD, debian_module()], pool=[GREET])


def fresh_home(tmp_path: Path) -> dict:
    """An empty HOME: the host builder's module cache starts empty, so a
    build can only succeed through the proxy."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


def build(source: Path, builder: str, out: Path, *args, env=None) -> subprocess.CompletedProcess:
    if builder != "podman-rootless":
        return run_ocibuild("build", source, "--builder", builder, "--output", f"oci-archive:{out}", *args,
                            env=env)
    pw = pwd.getpwnam(ROOTLESS_USER)
    os.chown(out.parent, pw.pw_uid, -1)
    clean = {"PATH": os.environ["PATH"], "HOME": pw.pw_dir, "USER": ROOTLESS_USER, "LANG": "C.UTF-8",
             "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}"}
    argv = ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in clean.items()],
            str(OCIBUILD), "build", str(source), "--builder", "podman", "--output", f"oci-archive:{out}",
            *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=HANG_GUARD)


def error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0, f"expected a failure: {r.stdout}{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def out_in(tmp_path: Path, name: str) -> Path:
    d = tmp_path / f"out-{name}"
    d.mkdir(mode=0o755)
    return d / "image.tar"


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["host", pytest.param("docker", marks=pytest.mark.engine),
                                     pytest.param("podman", marks=pytest.mark.engine),
                                     pytest.param("podman-rootless", marks=(pytest.mark.engine, pytest.mark.root))])
def test_an_unvendored_module_builds_offline_through_a_proxy_directory(builder, module, proxy, tmp_path,
                                                                        require_engine):
    """--network none and --go-proxy DIR: every builder gives the host's digest."""
    if builder != "host":
        require_engine(builder)
    r = build(module, builder, out_in(tmp_path, builder), "--go-proxy", proxy, env=fresh_home(tmp_path))
    digest = printed_digest(r)
    reference = build(module, "host", out_in(tmp_path, "reference"), "--go-proxy", proxy,
                      env=fresh_home(tmp_path / "reference"))
    assert printed_digest(reference) == digest, f"{builder} differs from the host builder"


def test_without_a_proxy_the_offline_build_says_what_to_do(module, tmp_path):
    line = error_line(build(module, "host", out_in(tmp_path, "x"), env=fresh_home(tmp_path)))
    assert "--go-proxy" in line and "--network default" in line, line


def test_a_wrong_go_sum_hash_is_refused(module, proxy, tmp_path):
    gosum = module / "go.sum"
    lines = gosum.read_text().splitlines()
    i = next(i for i, text in enumerate(lines) if text.startswith("example.com/greet ") and "/go.mod" not in text)
    name, version, _ = lines[i].split()
    lines[i] = f"{name} {version} h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    gosum.write_text("\n".join(lines) + "\n")
    out = out_in(tmp_path, "x")
    r = build(module, "host", out, "--go-proxy", proxy, env=fresh_home(tmp_path))
    line = error_line(r)
    assert f"{GREET.path}@{GREET.version} from the module proxy does not match go.sum (checksum mismatch)" in line, \
        line
    assert not out.exists()


def test_a_module_missing_from_the_proxy_names_it(module, proxy, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(proxy, partial)
    shutil.rmtree(partial / "example.com" / "greet")
    r = build(module, "host", out_in(tmp_path, "x"), "--go-proxy", partial, env=fresh_home(tmp_path))
    line = error_line(r)
    assert f"the module proxy has no {GREET.path}@{GREET.version} (no such file or directory)" in line, line
    assert "ocibuild fabric deps" in line, line
    with serve_http(proxy, missing=[GREET.path]) as server:
        line = error_line(build(module, "host", out_in(tmp_path, "y"), "--go-proxy", server.url, "--network",
                                "default", env=fresh_home(tmp_path / "http")))
    assert f"the module proxy has no {GREET.path}@{GREET.version} (404 Not Found)" in line, line


def test_an_unreachable_proxy_is_named(module, tmp_path):
    with socket.socket() as s:           # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        line = error_line(build(module, "host", out_in(tmp_path, "x"), "--go-proxy", url, "--network", "default",
                                env=fresh_home(tmp_path)))
    assert f"the module proxy {url} cannot be reached for " in line and "connection refused" in line, line


def test_a_proxy_url_and_the_callers_goproxy_with_the_network(module, proxy, tmp_path):
    """--go-proxy URL needs --network default; with it the build goes
    through the server (it saw the .zip requests). With no --go-proxy, the
    caller's GOPROXY reaches the builder under --network default (and
    --debug shows what was passed)."""
    with serve_http(proxy) as server:
        line = error_line(build(module, "host", out_in(tmp_path, "a"), "--go-proxy", server.url))
        assert "needs the network" in line and "--network default" in line, line
        digest = printed_digest(build(module, "host", out_in(tmp_path, "b"), "--go-proxy", server.url,
                                      "--network", "default", env=fresh_home(tmp_path)))
        assert server.requested(f"/{escape(GREET.path)}/@v/{GREET.version}.zip"), server.requests
    with serve_http(proxy) as server:
        home = fresh_home(tmp_path / "second")
        env = {**home, "GOPROXY": server.url, "GOSUMDB": "off", "GOFLAGS": "-modcacherw"}
        r = run_ocibuild("--debug", "build", module, "--builder", "host", "--network", "default",
                         "--output", f"oci-archive:{out_in(tmp_path, 'c')}", env=env)
        assert printed_digest(r) == digest
        assert f"GOPROXY={server.url}" in r.stderr and "GOSUMDB=off" in r.stderr, r.stderr
        assert server.requested(f"/{escape(LOUD.path)}/@v/{LOUD.version}.zip"), server.requests


def test_fabric_deps_writes_a_reproducible_tarball_that_builds_offline(module, proxy, tmp_path, require_engine):
    first, second = tmp_path / "deps1.tar", tmp_path / "deps2.tar"
    for out in (first, second):
        r = run_ocibuild("fabric", "deps", module, "--go-proxy", proxy, "--network", "none", "--output", out,
                         env=fresh_home(tmp_path / out.stem))
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{out}: 3 module(s)\n", r.stdout
    assert first.read_bytes() == second.read_bytes(), "the same go.sum gave different tarballs"
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert f"{GREET.path}/@v/{GREET.version}.zip" in names and f"{LOUD.path}/@v/list" in names
    assert not [n for n in names if "sumdb" in n or n.endswith((".lock", ".ziphash"))], names
    direct = printed_digest(build(module, "host", out_in(tmp_path, "dir"), "--go-proxy", proxy,
                                  env=fresh_home(tmp_path / "dir")))
    from_tar = printed_digest(build(module, "host", out_in(tmp_path, "tar"), "--go-proxy", first,
                                    env=fresh_home(tmp_path / "tar")))
    assert from_tar == direct


def _hostile_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        data = b"" if kind != tarfile.REGTYPE else b"x"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name, kind, link, rule", [
    ("../escape.zip", tarfile.REGTYPE, "", "(path traversal)"),
    ("/abs/x.mod", tarfile.REGTYPE, "", "(absolute path)"),
    ("example.com/x/@v/list", tarfile.SYMTYPE, "/etc/passwd", "(absolute symlink target)"),
    ("dev", tarfile.CHRTYPE, "", "(device and fifo entries are not allowed)"),
])
def test_a_hostile_deps_tarball_is_refused_like_a_package(module, tmp_path, name, kind, link, rule):
    bad = _hostile_tar(tmp_path / "bad.tar", name, kind, link)
    line = error_line(build(module, "host", out_in(tmp_path, "x"), "--go-proxy", bad))
    assert line.startswith("error: --go-proxy bad.tar entry ") and line.endswith(rule), line
    assert not (tmp_path / "escape.zip").exists()


def test_an_empty_tarball_is_no_deps_tarball(module, tmp_path):
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    line = error_line(build(module, "host", out_in(tmp_path, "x"), "--go-proxy", empty))
    assert "holds no module" in line and "fabric deps" in line, line


def test_fabric_deps_names_what_the_proxy_lacks(module, proxy, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(proxy, partial)
    shutil.rmtree(partial / "example.com" / "greet")
    out = tmp_path / "deps.tar"
    r = run_ocibuild("fabric", "deps", module, "--go-proxy", partial, "--network", "none", "--output", out,
                     env=fresh_home(tmp_path))
    line = error_line(r)
    assert line.startswith("error: go mod download failed on the host (exit 1): the module proxy has no "
                           f"{GREET.path}@{GREET.version}"), line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".deps.tar.")]


@pytest.mark.engine
def test_a_loopback_proxy_is_refused_for_a_container_builder_and_the_bridge_works(module, proxy, tmp_path,
                                                                                  require_engine):
    """127.0.0.1 inside a builder container is the container's own: refused
    before anything starts, for --go-proxy and for the caller's GOPROXY; the
    same proxy served on the docker bridge builds the host's digest."""
    require_engine("docker")
    for i, (args, env) in enumerate(((("--go-proxy", "http://127.0.0.1:3000"), None),
                                     ((), {"GOPROXY": "http://localhost:3000"}))):
        line = error_line(build(module, "docker", out_in(tmp_path, f"x{i}"), *args, "--network", "default",
                                env=env))
        assert "on this machine's loopback, which a docker builder container cannot reach" in line, line
    # A module version no cache has seen (the builder's module cache
    # persists): the build can only have it from the server.
    fresh = goproxy_module("example.com/fresh", f"v1.0.{random.getrandbits(30)}", {
        "go.mod": "module example.com/fresh\n\ngo 1.17\n",
        "fresh.go": "// Package fresh is new to every cache.\npackage fresh\n\n// N is a number.\nconst N = 3\n",
    }, use=("example.com/fresh", "fresh.N"))
    served = write_proxy(tmp_path / "served", [GREET, LOUD, debian_module(), fresh])
    source = chaincode_module(tmp_path / "fresh-cc", [LOUD, fresh], pool=[GREET])
    reference = printed_digest(build(source, "host", out_in(tmp_path, "ref"), "--go-proxy", served,
                                     env=fresh_home(tmp_path)))
    with serve_http(served, host="172.17.0.1") as server:
        digest = printed_digest(build(source, "docker", out_in(tmp_path, "bridge"), "--go-proxy", server.url,
                                      "--network", "default"))
        assert server.requested(f"/example.com/fresh/@v/{fresh.version}.zip"), server.requests
    assert digest == reference


def test_package_is_for_directory_builds(tmp_path):
    """A chaincode package says which Go package the peer builds (its
    metadata path); --package would build another binary than the peer."""
    pkg = tmp_path / "cc.tar.gz"
    pkg.write_bytes(package())
    line = error_line(run_ocibuild("build", pkg, "--builder", "host", "--package", "./cmd/cc",
                                   "--output", f"oci:{tmp_path / 'o'}"))
    assert "--package ./cmd/cc: a chaincode package names its Go package itself" in line, line


def test_not_a_proxy_at_all(module, tmp_path):
    line = error_line(build(module, "host", out_in(tmp_path, "x"), "--go-proxy", tmp_path / "nothing"))
    assert "--go-proxy" in line and "No such file" in line and "fabric deps" in line, line


def test_a_modules_sub_package(tmp_path):
    """--package ./cmd/cc and its import path build the same image; the
    module root alone is refused with the main packages it has; cmd/cc as
    SOURCE is not taken over by the go.mod above it (GOPATH mode, as the
    peer reads a directory without go.mod: its module import fails)."""
    m = tmp_path / "m"
    (m / "cmd" / "cc").mkdir(parents=True)
    (m / "lib").mkdir()
    (m / "go.mod").write_text("module example.com/m\n\ngo 1.19\n")
    (m / "lib" / "lib.go").write_text('package lib\n\nconst Name = "sub"\n')
    (m / "cmd" / "cc" / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/m/lib"\n)\n\nfunc main() { fmt.Println(lib.Name) }\n')
    digests = {printed_digest(build(m, "host", out_in(tmp_path, "a"), "--package", "./cmd/cc")),
               printed_digest(build(m, "host", out_in(tmp_path, "b"), "--package", "example.com/m/cmd/cc"))}
    assert len(digests) == 1, digests
    r = build(m / "cmd" / "cc", "host", out_in(tmp_path, "c"))
    assert "(gopath mode)" in r.stderr and r.returncode != 0, r.stderr
    line = error_line(build(m, "host", out_in(tmp_path, "d")))
    assert line == f"error: the module at {m} has no Go files at its root; pass --package with one of its " \
                   "main packages: ./cmd/cc", line
    line = error_line(build(m, "host", out_in(tmp_path, "e"), "--package", "./lib/../../x"))
    assert "outside the module" in line, line
