"""The fake peer (tests/fake_peer.py) and the chaincode that registers with it
(tests/fixtures/register-cc), checked against each other with no container:
the fixture is built with the host's Go in GOPATH mode on Debian's grpc-go,
and run directly. What later tests rely on: a chaincode started the way a
peer starts one registers, with or without mutual TLS; the TLS check is
real (no or a foreign client certificate is refused); a chaincode without
its configuration refuses to start; end_streams() makes it exit 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from fake_peer import (
    KEEPALIVE,
    READY,
    REGISTER,
    REGISTER_METHOD,
    REGISTERED,
    FakePeer,
    TLSFiles,
    chaincode_name,
    decode_message,
    encode_chaincode_id,
    encode_message,
    make_tls,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "register-cc"
IMPORT_PATH = "example.com/registercc"
NAME = "registercc_1.0:6b2a4f0e"
WAIT = 10  # seconds: for anything that happens in milliseconds here


@pytest.fixture(scope="module")
def chaincode(tmp_path_factory) -> Path:
    """The register-cc fixture packaged the way a Fabric GOPATH package holds
    it (src/<import path>/), built static with GO111MODULE=off and
    GOPATH=<that tree>:/usr/share/gocode."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the host Go toolchain (`go`) is not installed; run scripts/setup")
    if not Path("/usr/share/gocode/src/google.golang.org/grpc").is_dir():
        pytest.fail("Debian's golang-google-grpc-dev is not installed; run scripts/setup")
    root = tmp_path_factory.mktemp("register-cc")
    shutil.copytree(FIXTURE, root / "src" / IMPORT_PATH)
    out = root / "chaincode"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "GOFLAGS": "", "GOPROXY": "off",
           "GO111MODULE": "off", "GOPATH": f"{root}:/usr/share/gocode", "CGO_ENABLED": "0",
           "GOCACHE": os.environ.get("GOCACHE", "/tmp/ocibuild-test-gocache")}
    r = subprocess.run([go, "build", "-trimpath", "-ldflags=-buildid=", "-o", str(out), IMPORT_PATH],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"go build of {IMPORT_PATH} failed:\n{r.stderr}"
    if shutil.which("readelf"):
        headers = subprocess.run(["readelf", "-lW", str(out)], capture_output=True, text=True).stdout
        assert "INTERP" not in headers, f"{out} is dynamically linked"
    return out


@pytest.fixture
def tls(tmp_path) -> TLSFiles:
    return make_tls(tmp_path / "tls")


def cc_env(name: str = NAME, tls: TLSFiles | None = None, **extra: str) -> dict[str, str]:
    """The environment a peer gives its chaincode (PATH kept for nothing else)."""
    env = {"PATH": os.environ["PATH"], "CORE_CHAINCODE_ID_NAME": name, "CORE_PEER_TLS_ENABLED": "false",
           "CORE_PEER_LOCALMSPID": "Org1MSP"}
    env.update(tls.chaincode_env() if tls else {})
    env.update(extra)
    return env


@contextmanager
def started(binary: Path, address: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """The chaincode running as `chaincode -peer.address=ADDRESS`; killed if still
    running when the block ends."""
    proc = subprocess.Popen([str(binary), f"-peer.address={address}"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def register_then_end(binary: Path, peer: FakePeer, name: str, env: dict[str, str], tls: bool,
                      address: str = "") -> None:
    """Start the chaincode (on peer.address unless `address`), see it register,
    end the stream, see it exit 0 with exactly its two lines on stdout."""
    address = address or peer.address
    with started(binary, address, env) as proc:
        peer.wait_registered(name, WAIT)
        assert peer.open_streams == 1
        assert peer.end_streams() == 1
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
    assert out == (f"registercc {name} connecting to {address}\n"
                   f"registercc {name} registered with {address}, tls {str(tls).lower()}, uid {os.getuid()}\n")
    assert peer.registered == [name] and peer.errors == []


# --- the chaincode against the peer ------------------------------------------------------

def test_registers_without_tls_and_exits_0_when_the_peer_ends_the_stream(chaincode):
    with FakePeer() as peer:
        register_then_end(chaincode, peer, NAME, cc_env(), tls=False)


def test_registers_with_mutual_tls(chaincode, tls):
    with FakePeer(tls) as peer:
        register_then_end(chaincode, peer, NAME, cc_env(tls=tls), tls=True)


def test_the_tls_check_is_real(chaincode, tls, tmp_path):
    """No client certificate, one from another CA, or plaintext: refused by
    the peer's handshake, nothing registered; the chaincode exits 1 saying so.
    And a peer certificate from another CA is refused by the chaincode."""
    other = make_tls(tmp_path / "other")
    with FakePeer(tls) as peer:
        anon = grpc.ssl_channel_credentials(root_certificates=tls.ca_cert.read_bytes())
        with grpc.secure_channel(peer.address, anon) as channel:
            call = channel.stream_stream(REGISTER_METHOD)
            with pytest.raises(grpc.RpcError) as refused:
                list(call(iter([encode_message(REGISTER, encode_chaincode_id("anonymous"))]), timeout=WAIT))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        cases = {
            "foreign-client-cert": cc_env("foreign", tls, CORE_TLS_CLIENT_KEY_FILE=str(other.client_key),
                                          CORE_TLS_CLIENT_CERT_FILE=str(other.client_cert)),
            "plaintext": cc_env("plaintext"),
            "foreign-root": cc_env("foreign-root", tls, CORE_PEER_TLS_ROOTCERT_FILE=str(other.ca_cert)),
        }
        for case, env in cases.items():
            r = subprocess.run([str(chaincode), f"-peer.address={peer.address}"], env=env, capture_output=True,
                               text=True, timeout=WAIT)
            assert r.returncode == 1, (case, r.stdout, r.stderr)
            assert r.stdout == f"registercc {env['CORE_CHAINCODE_ID_NAME']} connecting to {peer.address}\n", case
            assert "Unavailable" in r.stderr, (case, r.stderr)
        assert "certificate signed by unknown authority" in r.stderr
        assert peer.registered == [] and peer.open_streams == 0

        # The same peer takes the chaincode with the right client certificate.
        register_then_end(chaincode, peer, NAME, cc_env(tls=tls), tls=True)


REFUSALS = {
    "no -peer.address": ([], {}, "-peer.address=HOST:PORT is required"),
    "address without port": (["-peer.address=peer0"], {}, "is not HOST:PORT"),
    "no CORE_CHAINCODE_ID_NAME": (None, {"CORE_CHAINCODE_ID_NAME": None}, "CORE_CHAINCODE_ID_NAME must be set"),
    "no CORE_PEER_TLS_ENABLED": (None, {"CORE_PEER_TLS_ENABLED": None}, "CORE_PEER_TLS_ENABLED must be set"),
    "CORE_PEER_TLS_ENABLED=yes": (None, {"CORE_PEER_TLS_ENABLED": "yes"}, 'CORE_PEER_TLS_ENABLED="yes" is not a'),
    "TLS without a client key": (None, {"CORE_PEER_TLS_ENABLED": "true"}, "CORE_TLS_CLIENT_KEY_FILE is not set"),
    "unknown flag": (["-peer.address=127.0.0.1:7052", "-nope"], {}, "flag provided but not defined"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refuses_to_start_without_its_configuration(chaincode, case):
    args, changes, message = REFUSALS[case]
    env = cc_env()
    for k, v in changes.items():
        if v is None:
            env.pop(k)
        else:
            env[k] = v
    argv = ["-peer.address=127.0.0.1:7052"] if args is None else args
    r = subprocess.run([str(chaincode), *argv], env=env, capture_output=True, text=True, timeout=WAIT)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert message in r.stderr


def test_exits_1_when_no_peer_listens(chaincode):
    with FakePeer() as peer:
        address = peer.address
    started_at = time.monotonic()
    r = subprocess.run([str(chaincode), f"-peer.address={address}"], env=cc_env(), capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 1 and "connection refused" in r.stderr, r.stderr
    assert time.monotonic() - started_at < 5, "the chaincode waited for a peer that is not there"


def test_bind_all_interfaces_with_a_certificate_for_another_address(chaincode, tmp_path):
    """bind="0.0.0.0" and make_tls(hosts=...): the way a chaincode in a container
    reaches a peer on the host. 127.0.0.2 stands for that other address: the
    default peer (127.0.0.1 only) is not there."""
    tls = make_tls(tmp_path / "tls", hosts=["127.0.0.2"])
    with FakePeer(tls) as local:
        r = subprocess.run([str(chaincode), f"-peer.address={local.address_for('127.0.0.2')}"], env=cc_env(tls=tls),
                           capture_output=True, text=True, timeout=WAIT)
        assert r.returncode == 1 and "connection refused" in r.stderr, r.stderr
    with FakePeer(tls, bind="0.0.0.0") as peer:
        register_then_end(chaincode, peer, NAME, cc_env(tls=tls), tls=True, address=peer.address_for("127.0.0.2"))
        meta = peer.chaincode_json(NAME, host="127.0.0.2")
    assert meta == {"chaincode_id": NAME, "peer_address": f"127.0.0.2:{peer.port}",
                    "client_cert": tls.client_cert.read_text(), "client_key": tls.client_key.read_text(),
                    "root_cert": tls.ca_cert.read_text(), "mspid": "Org1MSP"}
    with FakePeer() as plain:
        assert plain.chaincode_json(NAME)["client_cert"] == ""


def test_end_streams_stops_every_chaincode(chaincode, tls):
    with FakePeer(tls) as peer:
        names = [f"cc{i}_1.0:{i:08x}" for i in range(3)]
        with started(chaincode, peer.address, cc_env(names[0], tls)) as a, \
                started(chaincode, peer.address, cc_env(names[1], tls)) as b, \
                started(chaincode, peer.address, cc_env(names[2], tls)) as c:
            for name in names:
                peer.wait_registered(name, WAIT)
            assert peer.end_streams() == 3
            for proc in (a, b, c):
                assert proc.wait(timeout=WAIT) == 0
        assert sorted(peer.registered) == names
    assert peer.open_streams == 0


# --- the peer's side of the protocol -----------------------------------------------------

def test_the_peer_answers_registered_then_ready_and_records_what_follows():
    with FakePeer() as peer, grpc.insecure_channel(peer.address) as channel:
        sent = [encode_message(REGISTER, encode_chaincode_id("py:1")), encode_message(KEEPALIVE)]
        replies = channel.stream_stream(REGISTER_METHOD)(iter(sent), timeout=WAIT)
        assert [decode_message(next(replies)) for _ in range(2)] == [(REGISTERED, b""), (READY, b"")]
        peer.wait_registered("py:1", WAIT)
        # Our side has sent everything and half-closed; the peer ends the stream cleanly.
        assert list(replies) == []
        assert replies.code() == grpc.StatusCode.OK
        assert peer.received == [("py:1", KEEPALIVE)]


@pytest.mark.parametrize("first, why", [
    (encode_message(KEEPALIVE), "not REGISTER"),
    (encode_message(REGISTER, encode_chaincode_id("")), "without a chaincode name"),
    (b"\x0a\x05ab", "not a ChaincodeMessage"),
])
def test_the_peer_refuses_a_stream_that_does_not_start_with_register(first, why):
    with FakePeer() as peer, grpc.insecure_channel(peer.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(channel.stream_stream(REGISTER_METHOD)(iter([first]), timeout=WAIT))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert why in refused.value.details()
        assert peer.registered == [] and len(peer.errors) == 1


def test_the_message_codec_reads_what_it_writes():
    long_name = "x" * 300    # a two-byte length
    msg = encode_message(REGISTER, encode_chaincode_id(long_name))
    msg_type, payload = decode_message(msg + b"\x10\x07" + b"\x22\x02tx")   # unknown varint, txid: skipped
    assert msg_type == REGISTER and chaincode_name(payload) == long_name
    assert decode_message(encode_message(REGISTERED)) == (REGISTERED, b"")
