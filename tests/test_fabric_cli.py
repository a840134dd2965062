"""Fabric chaincode packages through the CLI, end to end, the way operators
use them:

1. the peer's way, in docker and podman: `fabric package`, `build` into the
   engine under the name `fabric image-name` computes, then the container
   started EXACTLY as a Fabric 2.x peer starts it (created with the command
   `chaincode -peer.address=...`, the peer's environment, the TLS files
   uploaded with a tar into `/` of the created container, then started);
2. the image conventions, read with `ocibuild inspect --json` and by
   unpacking the layers with tarfile;
3. `fabric package-id` / `fabric image-name` against vectors derived by hand
   from the peer's algorithms (../shared/notes/fabric.md), bad input refused;
4. `fabric package` for ccaas and k8s, read back with tarfile, package IDs
   deterministic;
5. every code.tar.gz layout a peer accepts, and a legacy CDS, built with the
   host's Go (and one with docker and podman: the same digest);
6. hostile and broken packages: exit 1, one `error:` line naming the entry
   and the rule, nothing on stdout, no output, no container, nothing left
   in the (small, tmpfs) TMPDIR.

Labels are unique per run so that image names never collide with images
that already exist in the engines (an image name is a function of the
package ID). Engines are mandatory (conftest.require_engine)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES, HANG_GUARD, blob_path, printed_digest, read_layout, run_ocibuild, tree_state
from fabric_corpus import (
    GO_MOD,
    MAIN_GO,
    cds,
    code_tar,
    f,
    gz,
    hard,
    meta_bytes,
    package,
    signed_cds,
    special,
    sym,
    tar_bytes,
    zeros_gzip,
)

CHAINCODE = FIXTURES / "chaincode"
CHAINCODE_MODULE = "example.org/chaincode/assettransfer"
INDEX = "META-INF/statedb/couchdb/indexes/indexOwner.json"
PEER_ADDRESS = "peer0.org1.example.com:7052"
FABRIC_DIR = "/etc/hyperledger/fabric"
GIB = 1 << 30
ENGINE, ROOT, SLOW = pytest.mark.engine, pytest.mark.root, pytest.mark.slow
# The environment a Fabric 2.x peer gives a Go chaincode container with TLS on
# (CORE_CHAINCODE_ONCE: the sample exits 0 after its start-up checks).
PEER_ENV = {
    "CORE_PEER_TLS_ENABLED": "true",
    "CORE_PEER_LOCALMSPID": "Org1MSP",
    "CORE_TLS_CLIENT_KEY_PATH": f"{FABRIC_DIR}/client.key",
    "CORE_TLS_CLIENT_CERT_PATH": f"{FABRIC_DIR}/client.crt",
    "CORE_PEER_TLS_ROOTCERT_FILE": f"{FABRIC_DIR}/peer.crt",
    "CORE_CHAINCODE_ONCE": "true",
}


def unique_label(purpose: str) -> str:
    return f"ocitest-{purpose}_{uuid.uuid4().hex[:10]}"


def sha256_hex(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line(result) -> str:
    """The stdout of a successful run: exactly one line."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, repr(result.stdout)
    return result.stdout.strip()


def assert_refused(result, *expected: str, code: int = 3) -> str:
    """Exit `code` (3, bad input, unless said), nothing on stdout, stderr
    exactly one `error:` line holding every `expected` string (the run used
    -q), no traceback."""
    assert result.returncode == code, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stdout == "", f"stdout not empty: {result.stdout!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def read_targz(src: Path | bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """Every member of a gzipped tar (a file, or its bytes), in order, with its content."""
    out = {}
    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        for m in t.getmembers():
            assert m.name not in out, f"duplicate member {m.name}"
            out[m.name] = (m, t.extractfile(m).read() if m.isfile() else None)
    return out


def read_lifecycle(path: Path) -> tuple[dict, dict[str, tuple[tarfile.TarInfo, bytes | None]]]:
    """(metadata.json, members of code.tar.gz) of a lifecycle package, read
    with tarfile only."""
    outer = read_targz(path)
    assert list(outer) == ["metadata.json", "code.tar.gz"], list(outer)
    for info, _ in outer.values():
        assert info.isfile()
    return json.loads(outer["metadata.json"][1]), read_targz(outer["code.tar.gz"][1])


def image_tree(layout: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """The image's file system: every layer unpacked in order with tarfile
    (later layers win)."""
    img = read_layout(layout)
    tree: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for digest in img.layer_digests:
        with tarfile.open(blob_path(layout, digest), "r:*") as t:
            for m in t.getmembers():
                name = m.name.removeprefix("./").strip("/")
                assert ".wh." not in name, f"unexpected whiteout {name}"
                tree[name] = (m, t.extractfile(m).read() if m.isfile() else None)
    return tree


def inspect_json(ocibuild, ref: str) -> dict:
    r = ocibuild("-q", "inspect", "--json", ref)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def expected_image_name(prehash: str, sanitized: str) -> str:
    """The peer's image name, from the string it hashes (ids joined with '-',
    ':' already '-') and that string sanitized by hand."""
    return f"{sanitized}-{hashlib.sha256(prehash.encode()).hexdigest()}".lower()


# --- fixtures -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """tests/fixtures/chaincode packaged by `fabric package` and built with
    `build --builder host` into an OCI layout."""
    package: Path
    label: str
    package_id: str
    layout: Path
    digest: str


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Sample:
    d = tmp_path_factory.mktemp("sample")
    label = unique_label("sample")
    pkg = d / "sample.tar.gz"
    pid = one_line(run_ocibuild("-q", "fabric", "package", "--label", label, "--output", pkg, CHAINCODE))
    layout = d / "layout"
    digest = printed_digest(run_ocibuild("-q", "build", "--builder", "host", pkg, "--output", f"oci:{layout}"))
    return Sample(pkg, label, pid, layout, digest)


def _self_signed(d: Path) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM): openssl, else python's cryptography, else
    PEM-shaped blocks (the sample checks only the PEM block types before it
    exits under CORE_CHAINCODE_ONCE)."""
    if shutil.which("openssl"):
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", d / "key.pem", "-out", d / "cert.pem", "-days", "1",
                            "-subj", "/CN=peer0.org1.example.com"], capture_output=True, timeout=HANG_GUARD)
        assert r.returncode == 0, r.stderr
        return (d / "key.pem").read_bytes(), (d / "cert.pem").read_bytes()
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        def pem(kind):
            body = base64.encodebytes(os.urandom(96)).decode()
            return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n".encode()
        return pem("PRIVATE KEY"), pem("CERTIFICATE")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer0.org1.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def tls_upload(tmp_path_factory) -> bytes:
    """The tar a peer uploads into `/` of the created container: gzip, the
    files named by their absolute paths, mode 0100644, zero times, as the
    peer's WriteBytesToPackage writes them; client.key/client.crt hold base64
    of the PEM (as the peer writes them), the *_pem files and peer.crt PEM."""
    key, cert = _self_signed(tmp_path_factory.mktemp("tls"))
    files = {"client.key": base64.b64encode(key), "client.crt": base64.b64encode(cert),
             "client_pem.key": key, "client_pem.crt": cert, "peer.crt": cert}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{FABRIC_DIR}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


# --- 1. the peer's way ----------------------------------------------------------------------------

ENGINES = [("docker", "docker-daemon"), ("podman", "containers-storage")]


def _peer_container(engine, engine_cleanup, image: str, command: list[str], env: dict, upload: bytes) -> str:
    """Create a container as the peer does, upload the TLS files into it, and
    return its name (not started)."""
    name = engine_cleanup.container(engine, f"ocibuild-test-peer-{uuid.uuid4().hex[:12]}")
    flags = [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
    engine("create", "--name", name, *flags, image, *command, check=True)
    r = subprocess.run([*engine.argv, "cp", "-", f"{name}:/"], input=upload, capture_output=True,
                       timeout=HANG_GUARD)
    assert r.returncode == 0, f"{engine.name} cp - {name}:/ failed: {r.stderr.decode(errors='replace')}"
    return name


@ENGINE
@SLOW
@pytest.mark.parametrize("engine_name,transport", ENGINES, ids=[e for e, _ in ENGINES])
def test_peer_runs_the_image_it_finds_under_its_name(engine_name, transport, ocibuild, require_engine,
                                                      engine_cleanup, tmp_path, tls_upload):
    engine = require_engine(engine_name)
    label = unique_label("peer")
    pkg = tmp_path / "cc.tar.gz"
    pid = one_line(ocibuild("-q", "fabric", "package", "--label", label, "--output", pkg, CHAINCODE))
    assert pid == f"{label}:{sha256_hex(pkg)}"
    name = one_line(ocibuild("-q", "fabric", "image-name", "--network-id", "dev", "--peer-id", "peer0", pid))
    assert name == expected_image_name(f"dev-peer0-{label}-{sha256_hex(pkg)}",
                                       f"dev-peer0-{label}-{sha256_hex(pkg)}")
    image = engine_cleanup.image(engine, f"{name}:latest")
    printed_digest(ocibuild("-q", "build", "--builder", "host", pkg, "--output", f"{transport}:{image}"))
    # What the peer inspects before deciding not to build.
    info = json.loads(engine("image", "inspect", image, check=True).stdout)[0]
    assert not info["Config"].get("Entrypoint"), info["Config"]
    assert info["Config"]["User"] == "500:500"

    env = {"CORE_CHAINCODE_ID_NAME": pid, **PEER_ENV}
    cname = _peer_container(engine, engine_cleanup, image, ["chaincode", f"-peer.address={PEER_ADDRESS}"],
                            env, tls_upload)
    r = engine("start", "-a", cname)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert f"chaincode {pid} starting, peer {PEER_ADDRESS}, tls true, uid 500\n" in r.stdout, (r.stdout, r.stderr)
    state = json.loads(engine("inspect", cname, check=True).stdout)[0]["State"]
    assert state["ExitCode"] == 0

    # Without -peer.address it refuses to start, like the Go shim.
    cname = _peer_container(engine, engine_cleanup, image, ["chaincode"], env, tls_upload)
    r = engine("start", "-a", cname)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "-peer.address is required" in r.stdout + r.stderr
    assert "starting" not in r.stdout


# --- 2. image conventions -------------------------------------------------------------------------

def test_image_follows_the_peer_conventions(sample, ocibuild):
    doc = inspect_json(ocibuild, f"oci:{sample.layout}")
    assert doc["digest"] == sample.digest
    cfg = doc["config"]["config"]
    assert not cfg.get("Entrypoint"), cfg
    assert cfg["User"] == "500:500"
    labels = cfg["Labels"]
    assert labels["org.hyperledger.fabric.chaincode.type"] == "GOLANG"
    assert labels["org.hyperledger.fabric.version"] == "2.5"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["CORE_CHAINCODE_BUILDLEVEL"] == "2.5"
    assert "/usr/local/bin" in env["PATH"].split(":")
    ann = doc["manifest"]["annotations"]
    assert ann["org.hyperledger.fabric.chaincode.label"] == sample.label
    assert ann["org.hyperledger.fabric.chaincode.package-id"] == sample.package_id

    tree = image_tree(sample.layout)
    binary, _ = tree["usr/local/bin/chaincode"]
    assert binary.isfile() and binary.mode & 0o111
    index, data = tree[INDEX]
    assert index.isfile() and index.mode & 0o444 == 0o444
    assert data == (CHAINCODE / INDEX).read_bytes()
    # /etc/hyperledger/fabric: a directory uid 500 (gid 500) can write, reachable by it.
    fab, _ = tree["etc/hyperledger/fabric"]
    assert fab.isdir()
    assert ((fab.uid == 500 and fab.mode & 0o300 == 0o300) or (fab.gid == 500 and fab.mode & 0o030 == 0o030)
            or fab.mode & 0o003 == 0o003), (fab.uid, fab.gid, oct(fab.mode))
    for parent in ("etc", "etc/hyperledger"):
        assert tree[parent][0].isdir() and tree[parent][0].mode & 0o001, parent


def test_fabric_version_is_settable(sample, ocibuild, tmp_path):
    layout = tmp_path / "v249"
    printed_digest(ocibuild("-q", "build", "--builder", "host", "--fabric-version", "2.4.9", sample.package,
                            "--output", f"oci:{layout}"))
    cfg = inspect_json(ocibuild, f"oci:{layout}")["config"]["config"]
    assert cfg["Labels"]["org.hyperledger.fabric.version"] == "2.4.9"
    assert "CORE_CHAINCODE_BUILDLEVEL=2.4.9" in cfg["Env"]
    assert not any(e.startswith("CORE_CHAINCODE_BUILDLEVEL=2.5") for e in cfg["Env"])


# --- 3. package-id and image-name ------------------------------------------------------------------

def test_package_id_is_the_label_and_the_file_hash(sample, ocibuild):
    assert one_line(ocibuild("-q", "fabric", "package-id", sample.package)) == \
        f"{sample.label}:{sha256_hex(sample.package)}" == sample.package_id


def test_package_id_of_a_package_made_elsewhere(ocibuild, tmp_path):
    pkg = tmp_path / "other.tar.gz"
    pkg.write_bytes(package(meta={"type": "golang", "path": "example.com/cc", "label": "a+b.c-d_E9"}))
    assert one_line(ocibuild("-q", "fabric", "package-id", pkg)) == f"a+b.c-d_E9:{sha256_hex(pkg)}"


PID = "basic_1.0:" + "4ec191e793b27e953ff2ede5a8bcc63152cecb1e4c3f301a26e22692c61967ad"
# (network id, peer id, ccid, the string the peer hashes, that string sanitized) — by hand.
IMAGE_NAMES = [
    ("dev", "peer0", PID, f"dev-peer0-{PID.replace(':', '-')}", f"dev-peer0-{PID.replace(':', '-')}"),
    ("dev", "peer0.org1.example.com", "mycc:1.0", "dev-peer0.org1.example.com-mycc-1.0",
     "dev-peer0.org1.example.com-mycc-1.0"),
    ("dev", "", "mycc:1.0", "dev-mycc-1.0", "dev-mycc-1.0"),
    ("", "peer0", "mycc:1.0", "peer0-mycc-1.0", "peer0-mycc-1.0"),
    ("", "", "mycc:1.0", "mycc-1.0", "mycc-1.0"),
    # upper case kept in the hash, lowered in the name; '@' and '+' sanitized after hashing
    ("Net", "Peer0@Org1", "My+CC:1.0", "Net-Peer0@Org1-My+CC-1.0", "Net-Peer0-Org1-My-CC-1.0"),
]


@pytest.mark.parametrize("network,peer,ccid,prehash,sanitized", IMAGE_NAMES)
def test_image_name_vectors(ocibuild, network, peer, ccid, prehash, sanitized):
    args = [x for flag, v in (("--network-id", network), ("--peer-id", peer)) if v for x in (flag, v)]
    expected = expected_image_name(prehash, sanitized)
    assert re.fullmatch(r"[a-z0-9]+(([._-][a-z0-9]+)+)?", expected)
    assert one_line(ocibuild("-q", "fabric", "image-name", *args, ccid)) == expected


@pytest.mark.parametrize("network,peer,ccid", [
    ("dev", "peer0", "my..cc:1.0"),       # '..': not a Docker repository name
    ("", "", "_cc:1.0"),                  # starts with a separator
    ("dev", "peer0", "cc+-x:1.0"),        # '+' becomes '-': '--'
    ("dev", "peer0", ""),                 # no chaincode id at all
])
def test_image_name_the_peer_refuses(ocibuild, network, peer, ccid):
    args = [x for flag, v in (("--network-id", network), ("--peer-id", peer)) if v for x in (flag, v)]
    line = assert_refused(ocibuild("-q", "fabric", "image-name", *args, ccid))
    assert "name" in line or "id" in line


@pytest.mark.parametrize("label", ["-bad", "_bad", "bad label", "a/b", "caf\u00e9", ""])
def test_package_refuses_a_label_breaking_the_rule(ocibuild, tmp_path, label):
    out = tmp_path / "cc.tar.gz"
    assert_refused(ocibuild("-q", "fabric", "package", f"--label={label}", "--output", out, CHAINCODE),
                   "label", "[[:alnum:]]")
    assert os.listdir(tmp_path) == []


def test_package_id_refuses_a_bad_label_inside(ocibuild, tmp_path):
    pkg = tmp_path / "bad.tar.gz"
    pkg.write_bytes(package(meta={"type": "golang", "path": "example.com/cc", "label": "bad label"}))
    assert_refused(ocibuild("-q", "fabric", "package-id", pkg), "'bad label'", "label rule")


@pytest.mark.parametrize("data,says", [(b"hello\n", "not a lifecycle package"), (b"", "empty"),
                                       (gz(b"not a tar " * 100), "not a tar")],
                         ids=["text", "empty", "gzip-not-tar"])
def test_package_id_refuses_what_is_not_a_package(ocibuild, tmp_path, data, says):
    pkg = tmp_path / "x.tar.gz"
    pkg.write_bytes(data)
    assert_refused(ocibuild("-q", "fabric", "package-id", pkg), says)


# --- 4. ccaas and k8s packages ---------------------------------------------------------------------

def _package(ocibuild, out: Path, *args, env=None) -> str:
    pid = one_line(ocibuild("-q", "fabric", "package", *args, "--output", out, env=env))
    label = args[args.index("--label") + 1]
    assert pid == f"{label}:{sha256_hex(out)}"
    assert one_line(ocibuild("-q", "fabric", "package-id", out)) == pid
    return pid


def _deterministic(ocibuild, tmp_path, *args):
    """The same inputs twice give the same bytes (the same ID);
    SOURCE_DATE_EPOCH gives another."""
    a = _package(ocibuild, tmp_path / "a.tar.gz", *args)
    b = _package(ocibuild, tmp_path / "b.tar.gz", *args)
    assert a == b and (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    c = _package(ocibuild, tmp_path / "c.tar.gz", *args, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert c != a
    _, code = read_lifecycle(tmp_path / "c.tar.gz")
    assert {info.mtime for info, _ in code.values()} == {1700000000}
    return a


def test_ccaas_package(ocibuild, tmp_path):
    label = unique_label("ccaas")
    out = tmp_path / "ccaas.tar.gz"
    _package(ocibuild, out, "--type", "ccaas", "--label", label, "--address", "cc:9999")
    meta, code = read_lifecycle(out)
    assert meta == {"type": "ccaas", "label": label}
    assert list(code) == ["connection.json"]
    assert json.loads(code["connection.json"][1]) == {"address": "cc:9999", "dial_timeout": "10s",
                                                      "tls_required": False}
    _deterministic(ocibuild, tmp_path, "--type", "ccaas", "--label", label, "--address", "cc:9999")


def test_ccaas_package_carries_meta_inf(ocibuild, tmp_path):
    out = tmp_path / "ccaas.tar.gz"
    _package(ocibuild, out, "--type", "ccaas", "--label", "cc_1", "--address", "cc:9999", CHAINCODE)
    _, code = read_lifecycle(out)
    assert code[INDEX][1] == (CHAINCODE / INDEX).read_bytes()
    assert not any(n.startswith("src") or n.endswith(".go") for n in code)


def test_k8s_package_names_the_image_ocibuild_built(ocibuild, sample, tmp_path):
    archive = tmp_path / "cc-image.tar"
    digest = printed_digest(ocibuild("-q", "build", "--builder", "host", sample.package,
                                     "--output", f"oci-archive:{archive}"))
    label = unique_label("k8s")
    args = ("--type", "k8s", "--label", label, "--image-name", "reg/cc", "--image", f"oci-archive:{archive}")
    out = tmp_path / "k8s.tar.gz"
    _package(ocibuild, out, *args)
    meta, code = read_lifecycle(out)
    assert meta == {"type": "k8s", "label": label}
    assert list(code) == ["image.json"]
    assert json.loads(code["image.json"][1]) == {"name": "reg/cc", "digest": digest}
    _deterministic(ocibuild, tmp_path, *args)
    # --image-digest gives the same package
    same = tmp_path / "same.tar.gz"
    _package(ocibuild, same, "--type", "k8s", "--label", label, "--image-name", "reg/cc", "--image-digest", digest)
    assert same.read_bytes() == out.read_bytes()


def test_golang_package_is_deterministic(ocibuild, tmp_path):
    pid = _deterministic(ocibuild, tmp_path, "--label", "cc_1.0", str(CHAINCODE))
    meta, code = read_lifecycle(tmp_path / "a.tar.gz")
    assert meta == {"type": "golang", "path": CHAINCODE_MODULE, "label": "cc_1.0"}
    assert {"src/go.mod", "src/main.go", "src/config.go", INDEX} <= set(code)
    # Another checkout: elsewhere, other times and modes, a hidden directory: the same package.
    copy = tmp_path / "elsewhere" / "cc"
    shutil.copytree(CHAINCODE, copy)
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for p in copy.rglob("*"):
        if p.is_file():
            os.utime(p, (1e9, 1e9))
            p.chmod(0o600)
    assert _package(ocibuild, tmp_path / "d.tar.gz", "--label", "cc_1.0", str(copy)) == pid


@pytest.mark.parametrize("kind", ["ccaas", "k8s"])
def test_build_refuses_packages_it_cannot_compile(ocibuild, tmp_path, kind):
    pkg = tmp_path / "p.tar.gz"
    extra = ("--address", "cc:9999") if kind == "ccaas" else ("--image-name", "reg/cc", "--image-digest",
                                                              "sha256:" + "ab" * 32)
    _package(ocibuild, pkg, "--type", kind, "--label", "cc_1", *extra)
    assert_refused(ocibuild("-q", "build", "--builder", "host", pkg, "--output", f"oci:{tmp_path / 'out'}"),
                   kind, "unsupported type")
    assert not (tmp_path / "out").exists()


# --- 5. every layout the peer accepts ----------------------------------------------------------------

def _main(marker: str, imports: str = "", call: str = "") -> bytes:
    """A main package printing `marker` (and the value of `call`)."""
    args = f'"{marker}", {call}' if call else f'"{marker}"'
    return (f'package main\n\nimport (\n\t"fmt"\n{imports})\n\n'
            f'func main() {{ fmt.Println({args}) }}\n').encode()


GREET = (b"package greet\n\nfunc Hello() string { return \"vendored-greet\" }\n")
DEP = b"package dep\n\nfunc Name() string { return \"dep-beside\" }\n"
GOPATH_CODE = [f("src/example.com/gp/cc/main.go", _main("gopath", '\t"example.com/gp/dep"\n', "dep.Name()")),
               f("src/example.com/gp/dep/dep.go", DEP)]


def _meta(path: str) -> dict:
    return {"type": "golang", "path": path, "label": "layout_1"}


LAYOUTS = {
    # name: (package bytes, mode the build must report, what the binary prints)
    "module-in-src": (lambda: package(meta=_meta("example.com/modsrc"), code=code_tar([
        f("src/go.mod", b"module example.com/modsrc\n\ngo 1.19\n"), f("src/main.go", _main("modsrc"))])),
        "readonly", "modsrc"),
    "module-in-src-vendor": (lambda: package(meta=_meta("example.com/vend"), code=code_tar([
        f("src/go.mod", b"module example.com/vend\n\ngo 1.19\n\nrequire example.com/greet v1.0.0\n"),
        f("src/main.go", _main("vendor", '\t"example.com/greet"\n', "greet.Hello()")),
        f("src/vendor/modules.txt", b"# example.com/greet v1.0.0\n## explicit; go 1.19\nexample.com/greet\n"),
        f("src/vendor/example.com/greet/greet.go", GREET)])),
        "vendor", "vendor vendored-greet"),
    "module-in-src-subpackage": (lambda: package(meta=_meta("example.com/modsub/cmd/cc"), code=code_tar([
        f("src/go.mod", b"module example.com/modsub\n\ngo 1.19\n"), f("src/cmd/cc/main.go", _main("subpkg"))])),
        "readonly", "subpkg"),
    "module-under-src-path": (lambda: package(meta=_meta("example.com/under/cc"), code=code_tar([
        f("src/example.com/under/cc/go.mod", b"module example.com/under/cc\n\ngo 1.19\n"),
        f("src/example.com/under/cc/main.go", _main("under"))])),
        "readonly", "under"),
    "module-under-src-path-vendor": (lambda: package(meta=_meta("example.com/uv/cc"), code=code_tar([
        f("src/example.com/uv/cc/go.mod", b"module example.com/uv/cc\n\ngo 1.19\n\nrequire example.com/greet v1.0.0\n"),
        f("src/example.com/uv/cc/main.go", _main("under-vendor", '\t"example.com/greet"\n', "greet.Hello()")),
        f("src/example.com/uv/cc/vendor/modules.txt",
          b"# example.com/greet v1.0.0\n## explicit; go 1.19\nexample.com/greet\n"),
        f("src/example.com/uv/cc/vendor/example.com/greet/greet.go", GREET)])),
        "vendor", "under-vendor vendored-greet"),
    "gopath-with-dependency": (lambda: package(meta=_meta("example.com/gp/cc"), code=code_tar(GOPATH_CODE)),
                               "gopath", "gopath dep-beside"),
    "legacy-cds": (lambda: cds(code_tar(GOPATH_CODE), path="example.com/gp/cc", name="mycc", version="1.0"),
                   "gopath", "gopath dep-beside"),
    "legacy-signed-cds": (lambda: signed_cds(cds(code_tar(GOPATH_CODE), path="example.com/gp/cc",
                                                 name="mycc", version="1.0")),
                          "gopath", "gopath dep-beside"),
}


def _run_binary_from(layout: Path, tmp_path: Path) -> str:
    _, data = image_tree(layout)["usr/local/bin/chaincode"]
    exe = tmp_path / "chaincode-from-image"
    exe.write_bytes(data)
    exe.chmod(0o755)
    r = subprocess.run([exe], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_the_peer_accepts_builds(ocibuild, tmp_path, name):
    make, mode, prints = LAYOUTS[name]
    pkg = tmp_path / "pkg.bin"          # the kind is detected from content, not the file name
    pkg.write_bytes(make())
    layout = tmp_path / "layout"
    r = ocibuild("build", "--builder", "host", pkg, "--output", f"oci:{layout}")
    printed_digest(r)
    assert f"({mode} mode)" in r.stderr, r.stderr
    assert _run_binary_from(layout, tmp_path) == prints + "\n"
    ann = inspect_json(ocibuild, f"oci:{layout}")["manifest"]["annotations"]
    if name.startswith("legacy"):
        assert ann["org.opencontainers.image.title"] == "mycc"
    else:
        assert ann["org.hyperledger.fabric.chaincode.package-id"] == f"layout_1:{sha256_hex(pkg)}"


def _tar_package(tmp_path: Path, *code_args: str) -> Path:
    """A package made by hand with GNU tar (as Fabric's docs do for ccaas):
    directory entries, the files' own owners and times."""
    tree, outer = tmp_path / "tree", tmp_path / "outer"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(outer, ignore_errors=True)
    shutil.copytree(CHAINCODE, tree / "src", ignore=shutil.ignore_patterns("META-INF"))
    shutil.copytree(CHAINCODE / "META-INF", tree / "META-INF")
    outer.mkdir()
    (outer / "metadata.json").write_text(json.dumps({"type": "golang", "path": CHAINCODE_MODULE,
                                                     "label": "tarcmd_1"}))
    tar = shutil.which("tar")
    assert tar, "tar is not installed"
    for argv in ([tar, "--format=gnu", "-czf", outer / "code.tar.gz", "-C", tree, *code_args],
                 [tar, "-czf", tmp_path / "pkg.tgz", "-C", outer, "metadata.json", "code.tar.gz"]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD)
        assert r.returncode == 0, r.stderr
    return outer / "code.tar.gz"


def test_package_made_with_the_tar_command_builds(ocibuild, tmp_path):
    # `tar -C tree -czf code.tar.gz .` names everything "./src/...": the peer's
    # golang rules (every name starts src/ or META-INF/) refuse that, and so
    # does ocibuild, saying so; `tar -C tree ... src META-INF` is what builds.
    assert "./src/go.mod" in read_targz(_tar_package(tmp_path, "."))
    r = ocibuild("-q", "build", "--builder", "host", tmp_path / "pkg.tgz", "--output", f"oci:{tmp_path / 'no'}")
    assert r.returncode == 3 and "entry './' is outside src/ and META-INF/; the peer refuses it" in r.stderr, r.stderr
    assert "src/go.mod" in read_targz(_tar_package(tmp_path, "src", "META-INF"))
    layout = tmp_path / "layout"
    printed_digest(ocibuild("-q", "build", "--builder", "host", tmp_path / "pkg.tgz", "--output", f"oci:{layout}"))
    tree_ = image_tree(layout)
    assert tree_[INDEX][1] == (CHAINCODE / INDEX).read_bytes()
    assert "usr/local/bin/chaincode" in tree_
    ann = inspect_json(ocibuild, f"oci:{layout}")["manifest"]["annotations"]
    assert ann["org.hyperledger.fabric.chaincode.package-id"] == f"tarcmd_1:{sha256_hex(tmp_path / 'pkg.tgz')}"


@ENGINE
def test_engines_and_host_give_the_same_image(ocibuild, require_engine, tmp_path):
    require_engine("docker")
    require_engine("podman")
    pkg = tmp_path / "gopath.tar.gz"
    pkg.write_bytes(LAYOUTS["gopath-with-dependency"][0]())
    digests = {b: printed_digest(ocibuild("-q", "build", "--builder", b, pkg, "--output", f"oci:{tmp_path / b}"))
               for b in ("host", "docker", "podman")}
    assert len(set(digests.values())) == 1, digests


# --- 6. hostile and broken packages ---------------------------------------------------------------------

def _code(*members) -> bytes:
    """A package whose code.tar.gz holds a good module plus `members`."""
    return package(code=code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO), *members]))


def _claimed_bomb() -> bytes:
    # One member claiming 10 GiB, and the 10 GiB of zeros really there (~10 MB compressed).
    info = tarfile.TarInfo("src/zeros.bin")
    info.size = 10 * GIB
    return package(code=gz(info.tobuf(tarfile.PAX_FORMAT)) + zeros_gzip(10 * GIB))


def _stream_bomb() -> bytes:
    # A tiny tar, then 2 GiB of zeros no header accounts for: only counting inflated bytes stops it.
    return package(code=code_tar([f("src/main.go", MAIN_GO)]) + zeros_gzip(2 * GIB))


BROKEN_MAIN = b"package main\n\nfunc main() { undefinedThing() }\n"
NETWORK_MOD = GO_MOD + b"\nrequire github.com/pkg/errors v0.9.1\n"
NETWORK_MAIN = b'package main\n\nimport _ "github.com/pkg/errors"\n\nfunc main() {}\n'

# name: (package bytes, builder, strings the error line must hold)
HOSTILE = {
    "path-traversal": (lambda: _code(f("src/../../evil.go")), "docker", ("'src/../../evil.go'", "(path traversal)")),
    "absolute-path": (lambda: _code(f("/etc/evil")), "podman", ("'/etc/evil'", "(absolute path)")),
    "symlink-escape": (lambda: _code(sym("src/link", "../../../etc")), "docker",
                       ("'src/link'", "(symlink escape)")),
    "hardlink-escape": (lambda: _code(hard("src/h", "../../etc/passwd")), "podman",
                        ("'src/h'", "(hard link escape)")),
    "device-node": (lambda: _code(special("src/null", tarfile.CHRTYPE)), "docker",
                    ("'src/null'", "character device", "device")),
    "fifo": (lambda: _code(special("src/p", tarfile.FIFOTYPE)), "podman", ("'src/p'", "fifo")),
    "duplicate-metadata": (lambda: package(outer_extra=[f("metadata.json", meta_bytes())]), "docker",
                           ("'metadata.json'", "(duplicate entry)")),
    "missing-metadata": (lambda: gz(tar_bytes([f("code.tar.gz", code_tar([]))])),
                         "podman", ("metadata.json", "(missing metadata)")),
    "bad-label": (lambda: package(meta={"type": "golang", "path": "example.com/cc", "label": "-bad"}), "docker",
                  ("'-bad'", "label rule")),
    "unknown-type": (lambda: package(meta={"type": "cobol", "path": "example.com/cc", "label": "cc_1"}), "podman",
                     ("'cobol'", "(unknown type)")),
    "not-a-tar": (lambda: gz(b"this is not a tar archive " * 40), "docker", ("not a tar",)),
    "not-a-package": (lambda: b"hello, I am a text file\n", "podman", ("(not a package)",)),
    "empty-file": (lambda: b"", "docker", ("(empty file)",)),
    "bomb-claimed-size": (_claimed_bomb, "podman", ("'src/zeros.bin'", "10 GiB", "(size limit)")),
    "bomb-inflating": (_stream_bomb, "docker", ("code.tar.gz", "1 GiB", "(size limit)")),
    "compile-error": (lambda: package(code=code_tar([f("src/go.mod", GO_MOD), f("src/main.go", BROKEN_MAIN)])),
                      "podman", ("go build failed",)),
    # No go.sum: not the network's fault (-mod=readonly never writes go.sum), so go mod tidy.
    "module-without-go-sum": (lambda: package(code=code_tar([f("src/go.mod", NETWORK_MOD),
                                                              f("src/main.go", NETWORK_MAIN)])),
                              "docker", ("go.sum lacks github.com/pkg/errors", "`go mod tidy`")),
}


def _containers(engines) -> dict[str, set[str]]:
    return {e.name: set(e("ps", "-aq", "--no-trunc", check=True).stdout.split()) for e in engines}


def _left_by_us(engine, ids: set[str], marks: tuple[str, ...]) -> list[str]:
    """Of containers that appeared during a run, those that are still there
    and belong to it (they mount or name its temporary area or its input):
    other sessions may create containers of their own meanwhile."""
    left = []
    for cid in sorted(ids):
        r = engine("container", "inspect", cid)
        if r.returncode == 0 and any(m in r.stdout for m in marks):
            left.append(cid)
    return left


@pytest.fixture
def hostile_run(ocibuild, require_engine, tmpfs, tmp_path):
    """hostile_run(data, builder, *extra_args) -> (CompletedProcess, error
    line checker): runs `ocibuild -q build` on `data` with TMPDIR on a 64 MiB
    tmpfs and checks that nothing was left anywhere (nor in docker and
    podman, whatever the builder). Its tests are `engine` and `root`."""
    engines = [require_engine("docker"), require_engine("podman")]
    tmp = tmpfs("64m")
    inputs, cwd, out = tmp_path / "in", tmp_path / "cwd", tmp_path / "out"
    for p in (inputs, cwd, out):
        p.mkdir()

    def run(data: bytes, builder: str, *extra):
        pkg = inputs / "package.tar.gz"
        pkg.write_bytes(data)
        before = {p: tree_state(p) for p in (inputs, cwd, out)}
        containers = _containers(engines)
        r = ocibuild("-q", "build", "--builder", builder, *extra, pkg,
                     "--output", f"oci:{out / 'layout'}", "--output", f"oci-archive:{out / 'image.tar'}",
                     env={"TMPDIR": str(tmp)}, cwd=cwd)
        after = _containers(engines)
        for e in engines:
            new = after[e.name] - containers[e.name]
            assert not _left_by_us(e, new, (str(tmp), str(tmp_path))), f"{e.name} containers left: {new}"
        assert os.listdir(tmp) == [], f"left in TMPDIR: {os.listdir(tmp)}"
        assert {p: tree_state(p) for p in (inputs, cwd, out)} == before, "something was written outside TMPDIR"
        assert os.listdir(out) == []
        return r
    return run


@ENGINE
@ROOT
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_package_is_refused(hostile_run, name):
    make, builder, says = HOSTILE[name]
    code = 4 if name in ("compile-error", "module-without-go-sum") else 3     # these compile, and fail there
    assert_refused(hostile_run(make(), builder), *says, code=code)


@ENGINE
@ROOT
@pytest.mark.parametrize("builder", ["host", "docker", "podman"])
def test_compile_error_names_the_file_and_line_under_quiet(hostile_run, builder):
    make = HOSTILE["compile-error"][0]
    r = hostile_run(make(), builder)
    assert r.returncode == 4 and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and r.stderr.splitlines()[-1] == errors[0], r.stderr
    assert "main.go:3" in r.stderr and "undefinedThing" in r.stderr, r.stderr


@ENGINE
@ROOT
def test_limits_are_configurable(hostile_run):
    # A 64 KiB file in a package read under a 16 KiB limit: the same refusal, small.
    data = _code(f("src/big.bin", bytes(64 << 10)))
    assert_refused(hostile_run(data, "docker", "--max-inflated-size", str(16 << 10)), "(size limit)")
    assert_refused(hostile_run(data, "podman", "--max-entries", "2"), "(entry limit)")
