"""ocibuild as a Fabric peer's external builder (issue 11): the four
executables `fabric install-builder` writes, driven as a peer drives them —
its arguments, a scrubbed environment (`env -i PATH=… TMPDIR=…`, not even
HOME) — on docker, rootful podman and rootless podman.

The package is the sample chaincode packaged by `ocibuild fabric package`
and extracted as the peer extracts it (SOURCE_DIR: code.tar.gz's tree;
METADATA_DIR: metadata.json). `build` must give the image `ocibuild build
PKG` gives (same config digest and layers; only the package-id annotation
missing); `run` starts it as the peer's Docker launcher does, here against
a small peer speaking the sample chaincode's JSON-lines protocol."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, HANG_GUARD, OCIBUILD, ROOTLESS_USER, run_ocibuild, wait_for

ENGINES = [pytest.param("docker", marks=pytest.mark.engine), pytest.param("podman", marks=pytest.mark.engine),
           pytest.param("podman-rootless", marks=(pytest.mark.engine, pytest.mark.root))]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL = "basic_1.0"


@pytest.fixture(scope="module")
def package(shared) -> Path:
    pkg = shared / "basic.tar.gz"
    r = run_ocibuild("fabric", "package", FIXTURES / "chaincode", "--label", LABEL, "--output", pkg)
    assert r.returncode == 0, r.stderr
    pkg.chmod(0o644)
    return pkg


class Peer:
    """The peer's side of the sample chaincode's protocol: accept, read the
    REGISTER line, answer, keep the stream open until `close()`."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.registered: list[dict] = []
        self.conns: list[socket.socket] = []
        self.answer = b'{"type":"REGISTERED"}\n'
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            line = conn.makefile("rb").readline()
            if line:
                self.registered.append(json.loads(line))
                conn.sendall(self.answer)

    def close(self):
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.sock.close()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


class Builder:
    """An installed builder and one package as the peer hands it over."""

    def __init__(self, root: Path, engine: str, package: Path):
        self.engine = engine
        self.rootless = engine == "podman-rootless"
        self.root = root
        self.dir = root / "builder"
        for d in ("src", "meta", "bld", "release", "runmeta", "tmp"):
            (root / d).mkdir()
        # As the peer does: metadata.json to METADATA_DIR, code.tar.gz's tree to SOURCE_DIR.
        subprocess.run(["tar", "-xzf", str(package), "-C", str(root / "meta"), "metadata.json"], check=True)
        subprocess.run(["tar", "-xzf", str(package), "-C", str(root / "tmp"), "code.tar.gz"], check=True)
        subprocess.run(["tar", "-xzf", str(root / "tmp" / "code.tar.gz"), "-C", str(root / "src")], check=True)
        (root / "tmp" / "code.tar.gz").unlink()
        if self.rootless:
            uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
            for path in [root, *root.rglob("*")]:
                os.lchown(path, uid, uid)
        r = self.as_user([str(OCIBUILD), "fabric", "install-builder", str(self.dir), "--engine",
                          "podman" if self.rootless else engine, "--builder", "podman" if self.rootless else engine])
        assert r.returncode == 0, r.stderr
        self.core_yaml = r.stdout

    def as_user(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=HANG_GUARD, cwd="/", **kw)

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` with the peer's scrubbed environment, as the rootless user when so."""
        scrubbed = ["env", "-i", f"PATH={PATH}", f"TMPDIR={self.root / 'tmp'}"]
        return (["runuser", "-u", ROOTLESS_USER, "--"] if self.rootless else []) + scrubbed + argv

    def step(self, name: str, *args) -> subprocess.CompletedProcess:
        return self.as_user([str(self.dir / "bin" / name), *map(str, args)])

    def build(self) -> subprocess.CompletedProcess:
        return self.step("build", self.root / "src", self.root / "meta", self.root / "bld")

    def chaincode_json(self, **fields) -> None:
        path = self.root / "runmeta" / "chaincode.json"
        path.write_text(json.dumps(fields))
        if self.rootless:
            os.chown(path, pwd.getpwnam(ROOTLESS_USER).pw_uid, -1)

    @property
    def record(self) -> dict:
        return json.loads((self.root / "bld" / "ocibuild-image.json").read_text())

    def engine_argv(self, *args) -> list[str]:
        base = ["podman"] if self.engine.startswith("podman") else ["docker"]
        return self.argv([*base, *args])


@pytest.fixture
def builder_for(shared, package, require_engine, request):
    def make(engine: str) -> Builder:
        require_engine(engine)
        root = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=shared))
        root.chmod(0o755)
        return Builder(root, engine, package)
    return make


def _containers(b: Builder) -> list[str]:
    r = subprocess.run(b.engine_argv("ps", "-a", "--format", "{{.Names}}"), capture_output=True, text=True,
                       timeout=120)
    return [n for n in r.stdout.split() if n.startswith("ocibuild-cc-")]


# --- install and detect ------------------------------------------------------------

def test_install_writes_four_executables_and_the_core_yaml_entry(tmp_path):
    d = tmp_path / "ocibuild"
    r = run_ocibuild("fabric", "install-builder", d, "--engine", "docker")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f'chaincode:\n  externalBuilders:\n    - name: "ocibuild"\n      path: "{d}"\n')
    assert "propagateEnvironment" not in r.stdout
    # With the network, the Go variables must reach the builder: the peer passes only what is listed.
    r = run_ocibuild("fabric", "install-builder", tmp_path / "net", "--network", "default")
    assert "      propagateEnvironment: [GOPROXY, GOPRIVATE, GONOPROXY, GONOSUMDB, GOSUMDB, GOINSECURE, GOFLAGS]\n" \
        in r.stdout, r.stdout
    for step in ("detect", "build", "release", "run"):
        assert os.access(d / "bin" / step, os.X_OK), step
    settings = json.loads((d / "ocibuild-builder.json").read_text())
    assert settings["engine"] == "docker" and settings["builder"] == "auto"
    # The executables name this installation's interpreter, not whatever is on PATH.
    assert str(Path(OCIBUILD).parent / "python") in (d / "bin" / "build").read_text()


@pytest.mark.parametrize("key, kind, expected", [("type", "golang", 0), ("type", "GOLANG", 0), ("Type", "golang", 0),
                                                ("type", "ccaas", 1), ("type", "node", 1), ("type", 7, 1),
                                                (None, None, 1)])
def test_detect_claims_golang_packages_only_and_says_nothing(tmp_path, key, kind, expected):
    """golang claimed, whatever the case of the key (Go's JSON, the peer's,
    ignores it) or of the value; anything else, or no metadata, declined."""
    d = tmp_path / "b"
    assert run_ocibuild("fabric", "install-builder", d).returncode == 0
    meta = tmp_path / "meta"
    meta.mkdir()
    if key is not None:
        (meta / "metadata.json").write_text(json.dumps({key: kind, "path": "x", "label": "l"}))
    r = subprocess.run(["env", "-i", f"PATH={PATH}", str(d / "bin" / "detect"), str(tmp_path), str(meta)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (expected, "", "")


# --- build and release ---------------------------------------------------------------

def _manifest_and_config(ref: str) -> tuple[dict, str]:
    r = run_ocibuild("inspect", "--json", ref)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return doc["manifest"], doc["manifest"]["config"]["digest"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_build_gives_the_image_ocibuild_build_gives(engine, builder_for, package, shared):
    b = builder_for(engine)
    r = b.build()
    assert r.returncode == 0, r.stderr
    assert b.record["label"] == LABEL
    ours, ours_config = _manifest_and_config(f"oci:{b.root / 'bld' / 'image'}:chaincode")
    direct = shared / f"direct-{engine}"
    d = run_ocibuild("-q", "build", package, "--builder", "host", "--output", f"oci:{direct}:x")
    assert d.returncode == 0, d.stderr
    theirs, theirs_config = _manifest_and_config(f"oci:{direct}:x")
    assert ours_config == theirs_config
    assert ours["layers"] == theirs["layers"]
    missing = set(theirs["annotations"]) - set(ours["annotations"])
    assert missing == {"org.hyperledger.fabric.chaincode.package-id"}, missing
    # Loaded into the engine under the recorded name, by its config digest.
    r = subprocess.run(b.engine_argv("image", "inspect", "--format", "{{.Id}}", b.record["name"]),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().removeprefix("sha256:") == ours_config.partition(":")[2]
    # release: the CouchDB indexes, from BUILD_OUTPUT_DIR alone.
    rel = b.step("release", b.root / "bld", b.root / "release")
    assert rel.returncode == 0, rel.stderr
    src = sorted(p.relative_to(b.root / "src" / "META-INF") for p in (b.root / "src" / "META-INF").rglob("*.json"))
    out = sorted(p.relative_to(b.root / "release") for p in (b.root / "release").rglob("*.json"))
    assert src and out == src


@pytest.mark.parametrize("hostile, rule", [("symlink", "(link in package)"), ("fifo", "(device and fifo")])
def test_a_hostile_tree_is_refused_as_ocibuild_build_refuses_it(tmp_path, package, hostile, rule):
    b = Builder(tmp_path, "docker", package)
    if hostile == "symlink":
        (b.root / "src" / "src" / "again.go").symlink_to("main.go")      # inside, yet the peer refuses links
    else:
        os.mkfifo(b.root / "src" / "src" / "pipe")
    r = b.build()
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and rule in line, line
    assert not (b.root / "bld" / "ocibuild-image.json").exists()


# --- run -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_run_starts_the_chaincode_as_the_peer_does(engine, builder_for, peer):
    b = builder_for(engine)
    assert b.build().returncode == 0
    ccid = f"{LABEL}:7e31a3b5"
    b.chaincode_json(chaincode_id=ccid, peer_address=peer.address, mspid="Org1MSP")
    proc = subprocess.Popen(b.argv([str(b.dir / "bin" / "run"), str(b.root / "bld"), str(b.root / "runmeta")]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        wait_for(lambda: peer.registered, "the chaincode to register", timeout=120)
        assert peer.registered == [{"type": "REGISTER", "chaincode_id": ccid}]
        peer.close()                              # the peer ends the stream: the chaincode exits 0
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # All of the chaincode's output goes to stderr: the only stream a peer reads.
    assert f"chaincode {ccid} starting, peer {peer.address}, tls false, uid 500" in err, out + err
    assert out == "", out
    wait_for(lambda: not _containers(b), "the container to go", timeout=60)


@pytest.mark.parametrize("engine", ENGINES)
def test_run_reloads_the_image_into_an_engine_that_lost_it_and_sigterm_removes_the_container(engine, builder_for,
                                                                                            peer):
    b = builder_for(engine)
    assert b.build().returncode == 0
    subprocess.run(b.engine_argv("image", "rm", "-f", b.record["name"]), capture_output=True, timeout=120)
    b.chaincode_json(chaincode_id=f"{LABEL}:1", peer_address=peer.address)
    proc = subprocess.Popen(b.argv([str(b.dir / "bin" / "run"), str(b.root / "bld"), str(b.root / "runmeta")]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        wait_for(lambda: peer.registered, "the chaincode to register", timeout=120)
        assert _containers(b)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # (runuser, for the rootless user, passes the signal on and reports it as its own end.)
    assert "loading" in err and proc.returncode == (-signal.SIGTERM if b.rootless else 143), err
    assert "\nocibuild: stopped; the chaincode container is removed\n" in err, err
    wait_for(lambda: not _containers(b), "the container to be removed after SIGTERM", timeout=30)


@pytest.mark.engine
def test_the_chaincodes_exit_code_is_runs(builder_for, peer):
    """A peer that answers with a line longer than the chaincode takes (4 MiB):
    its stream fails, it exits 1, so does `run`, and the container goes."""
    peer.answer = b"x" * (4 << 20 | 1)
    b = builder_for("docker")
    assert b.build().returncode == 0
    b.chaincode_json(chaincode_id=f"{LABEL}:3", peer_address=peer.address)
    r = b.step("run", b.root / "bld", b.root / "runmeta")
    assert r.returncode == 1, r.stderr
    assert "chaincode: stream with peer failed" in r.stderr, r.stderr
    wait_for(lambda: not _containers(b), "the container to go", timeout=60)


@pytest.mark.parametrize("engine", ENGINES)
def test_after_run_is_killed_the_container_goes_once_the_chaincode_exits(engine, builder_for, peer):
    b = builder_for(engine)
    assert b.build().returncode == 0
    b.chaincode_json(chaincode_id=f"{LABEL}:2", peer_address=peer.address)
    proc = subprocess.Popen(b.argv([str(b.dir / "bin" / "run"), str(b.root / "bld"), str(b.root / "runmeta")]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    wait_for(lambda: peer.registered, "the chaincode to register", timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1)
    peer.close()
    wait_for(lambda: not _containers(b), "the container to go by itself", timeout=60)


@pytest.mark.parametrize("case, says", [
    ("no chaincode.json", "chaincode.json"),
    ("not json", "chaincode.json"),
    ("no peer address", "peer_address"),
    ("half tls", "TLS needs client_cert, client_key and root_cert together"),
    ("no image", "holds no ocibuild image record"),
])
def test_run_refuses_bad_input_in_one_line(tmp_path, case, says):
    d = tmp_path / "b"
    assert run_ocibuild("fabric", "install-builder", d, "--engine", "docker").returncode == 0
    bld, meta = tmp_path / "bld", tmp_path / "runmeta"
    bld.mkdir()
    meta.mkdir()
    if case != "no image":
        (bld / "ocibuild-image.json").write_text(json.dumps({"name": "x:1", "digest": "d", "config": "c",
                                                             "engine": "docker"}))
    good = {"chaincode_id": "cc:1", "peer_address": "127.0.0.1:7052"}
    text = {"no chaincode.json": None, "not json": "{", "no peer address": json.dumps({"chaincode_id": "cc:1"}),
            "half tls": json.dumps({**good, "client_cert": "x"}), "no image": json.dumps(good)}[case]
    if text is not None:
        (meta / "chaincode.json").write_text(text)
    r = subprocess.run(["env", "-i", f"PATH={PATH}", f"TMPDIR={tmp_path}", str(d / "bin" / "run"), str(bld),
                        str(meta)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr


@pytest.fixture(scope="module")
def register_package(shared) -> Path:
    """tests/fixtures/register-cc (a GOPATH-mode look-alike of Fabric's Go
    shim: gRPC Register with the peer, mutual TLS) as a lifecycle package."""
    pkg = shared / "register.tar.gz"
    r = run_ocibuild("fabric", "package", FIXTURES / "register-cc", "--label", "register_1.0",
                     "--path", "example.com/registercc", "--output", pkg)
    assert r.returncode == 0, r.stderr
    pkg.chmod(0o644)
    return pkg


@pytest.mark.slow
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("engine", ENGINES)
def test_the_chaincode_registers_with_a_grpc_peer(engine, tls, shared, register_package, require_engine):
    """The peer's ChaincodeSupport endpoint (a grpcio server, mutual TLS when
    chaincode.json carries certificates) sees the chaincode register under
    its id, as a non-root user, the TLS files read from /etc/hyperledger/fabric;
    the peer ending the stream ends the chaincode, `run` and the container."""
    from fake_peer import FakePeer, make_tls
    require_engine(engine)
    root = Path(tempfile.mkdtemp(prefix=f"register-{engine}-", dir=shared))
    root.chmod(0o755)
    b = Builder(root, engine, register_package)
    r = b.build()
    assert r.returncode == 0, r.stderr
    ccid = f"register_1.0:{engine}-{tls}"
    files = make_tls(root / "pki") if tls else None
    with FakePeer(files) as peer:
        b.chaincode_json(**peer.chaincode_json(ccid))
        proc = subprocess.Popen(b.argv([str(b.dir / "bin" / "run"), str(b.root / "bld"),
                                        str(b.root / "runmeta")]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        try:
            peer.wait_registered(ccid, timeout=120)
            assert peer.end_streams() == 1
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert f"registercc {ccid} registered with {peer.address}, tls {str(tls).lower()}, uid 500" in err, out + err
    wait_for(lambda: not _containers(b), "the container to go", timeout=60)


@pytest.mark.engine
def test_an_unreachable_engine_is_one_line_before_any_compile(builder_for):
    """The engine's socket does not answer (a stopped daemon; DOCKER_HOST as
    a peer could propagate it): build and run each say so in one line."""
    b = builder_for("docker")
    bad = ["env", "-i", f"PATH={PATH}", f"TMPDIR={b.root / 'tmp'}", "DOCKER_HOST=unix:///nonexistent.sock"]
    r = subprocess.run([*bad, str(b.dir / "bin" / "build"), str(b.root / "src"), str(b.root / "meta"),
                        str(b.root / "bld")], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 6 and len(lines) == 1 and lines[0].startswith("error: the docker engine is not "
                                                                         "reachable"), r.stderr
    assert not (b.root / "bld" / "ocibuild-image.json").exists()
    assert b.build().returncode == 0                              # reachable again: it builds
    b.chaincode_json(chaincode_id=f"{LABEL}:4", peer_address="127.0.0.1:7052")
    r = subprocess.run([*bad, str(b.dir / "bin" / "run"), str(b.root / "bld"), str(b.root / "runmeta")],
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 6 and len(lines) == 1 and "docker engine is not reachable" in lines[0], r.stderr
