"""A fake Fabric peer for tests: the peer's chaincode endpoint
(`/protos.ChaincodeSupport/Register`, a bidirectional gRPC stream) served
with grpcio, plain or with mutual TLS, enough for a chaincode to start the
way it does under a real peer and register.

    tls = make_tls(tmp_path / "tls")            # CA, server and client certs
    with FakePeer(tls) as peer:                 # 127.0.0.1, random port
        run chaincode -peer.address={peer.address} with env {**tls.chaincode_env(), ...}
        peer.wait_registered("mycc:0123", timeout=10)
        peer.end_streams()                      # the chaincode sees EOF and exits

What the peer does with a stream, as Fabric 2.x's handler does: the first
message must be REGISTER (type 1) whose payload is a ChaincodeID with a
name; it answers REGISTERED (type 2) and then READY (type 4), records the
name, and keeps the stream open (recording what else the chaincode sends)
until `end_streams()`, the chaincode's side closing, or the peer's exit.
Messages are read and written by hand (a tiny protobuf reader below): no
generated protos."""

from __future__ import annotations

import datetime
import ipaddress
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REGISTER_METHOD = "/protos.ChaincodeSupport/Register"

# ChaincodeMessage.Type (Fabric's peer/chaincode_shim.proto)
REGISTER, REGISTERED, READY, ERROR, KEEPALIVE = 1, 2, 4, 7, 18
# field numbers: ChaincodeMessage.type, .payload; ChaincodeID.name
_MSG_TYPE, _MSG_PAYLOAD, _ID_NAME = 1, 3, 2


# --- protobuf, by hand -------------------------------------------------------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field: an int for varint and fixed
    fields, bytes for length-delimited ones. Raises ValueError when the bytes
    are no protobuf message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("length-delimited field runs past the end")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise ValueError("fixed-width field runs past the end")
            value, pos = int.from_bytes(data[pos:pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if number == 0:
            raise ValueError("field number 0")
        yield number, value


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_message(msg_type: int, payload: bytes = b"") -> bytes:
    """A ChaincodeMessage with only type and (when not empty) payload set."""
    out = bytes([_MSG_TYPE << 3 | 0]) + _encode_varint(msg_type)
    if payload:
        out += bytes([_MSG_PAYLOAD << 3 | 2]) + _encode_varint(len(payload)) + payload
    return out


def encode_chaincode_id(name: str) -> bytes:
    raw = name.encode()
    return bytes([_ID_NAME << 3 | 2]) + _encode_varint(len(raw)) + raw


def decode_message(data: bytes) -> tuple[int, bytes]:
    """(type, payload) of a ChaincodeMessage; other fields are skipped."""
    msg_type, payload = 0, b""
    for number, value in fields(data):
        if number == _MSG_TYPE and isinstance(value, int):
            msg_type = value
        elif number == _MSG_PAYLOAD and isinstance(value, bytes):
            payload = value
    return msg_type, payload


def chaincode_name(chaincode_id: bytes) -> str:
    """ChaincodeID.name (field 2), '' when absent."""
    for number, value in fields(chaincode_id):
        if number == _ID_NAME and isinstance(value, bytes):
            return value.decode()
    return ""


# --- TLS material ----------------------------------------------------------------------

@dataclass(frozen=True)
class TLSFiles:
    """PEM files made by make_tls. The server pair is the peer's; the client
    pair is what the peer gives its chaincode (Fabric: client_pem.key/.crt),
    and ca_cert is the root both are signed by (Fabric: peer.crt)."""
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def chaincode_env(self) -> dict[str, str]:
        """The TLS environment a peer sets for its chaincode."""
        return {"CORE_PEER_TLS_ENABLED": "true",
                "CORE_TLS_CLIENT_KEY_FILE": str(self.client_key),
                "CORE_TLS_CLIENT_CERT_FILE": str(self.client_cert),
                "CORE_PEER_TLS_ROOTCERT_FILE": str(self.ca_cert)}


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _sign(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          usage: x509.ObjectIdentifier | None = None, hosts: Iterable[str] = ()) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path | str, hosts: Iterable[str] = ()) -> TLSFiles:
    """A CA (ECDSA P-256, as Fabric's), a server certificate for 127.0.0.1,
    localhost and `hosts` (e.g. the address a container reaches the host
    by), and a client certificate, all signed by that CA, written as PEM into
    `directory` (created). Each call makes a new, unrelated CA."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _sign("fake-peer test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _sign("fake-peer", server_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   hosts=["127.0.0.1", "localhost", *hosts])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _sign("fake-peer chaincode client", client_key, ca.subject, ca_key,
                   usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    files = TLSFiles(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
                     d / "client.crt", d / "client.key")
    for path, data in ((files.ca_cert, ca.public_bytes(serialization.Encoding.PEM)),
                       (files.ca_key, _key_pem(ca_key)),
                       (files.server_cert, server.public_bytes(serialization.Encoding.PEM)),
                       (files.server_key, _key_pem(server_key)),
                       (files.client_cert, client.public_bytes(serialization.Encoding.PEM)),
                       (files.client_key, _key_pem(client_key))):
        path.write_bytes(data)
        if path.name.endswith(".key"):
            path.chmod(0o600)
    return files


# --- the peer ----------------------------------------------------------------------------

class FakePeer:
    """The peer's chaincode endpoint on 127.0.0.1 (or every interface with
    `bind="0.0.0.0"`), random port. With `tls`, TLS with a client
    certificate signed by tls.ca_cert required; otherwise plaintext.

    Attributes, safe to read at any time:
      registered  chaincode names, in the order their REGISTER arrived
      received    (name, type) of each later message from a registered chaincode
      errors      what the peer refused (first message not REGISTER, no name, ...)
      port, address ("127.0.0.1:PORT"; address_for(host) for another host)
    """

    def __init__(self, tls: TLSFiles | None = None, *, bind: str = "127.0.0.1", max_streams: int = 16):
        self.tls = tls
        self.registered: list[str] = []
        self.received: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._open: set[threading.Event] = set()
        # One worker per open stream (grpcio's sync server parks a thread in each handler).
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="fake-peer"),
                                   handlers=[_Handler(self._register)], maximum_concurrent_rpcs=max_streams)
        where = f"{bind}:0"
        if tls is None:
            self.port = self._server.add_insecure_port(where)
        else:
            creds = grpc.ssl_server_credentials([(tls.server_key.read_bytes(), tls.server_cert.read_bytes())],
                                                root_certificates=tls.ca_cert.read_bytes(),
                                                require_client_auth=True)
            self.port = self._server.add_secure_port(where, creds)
        if not self.port:
            raise OSError(f"fake peer: cannot bind {where}")
        self.address = self.address_for("127.0.0.1")
        self._started = False

    def address_for(self, host: str) -> str:
        return f"{host}:{self.port}"

    def chaincode_json(self, chaincode_id: str, mspid: str = "Org1MSP", host: str = "127.0.0.1") -> dict[str, str]:
        """What a peer writes to RUNMETA/chaincode.json for an external
        builder's `run`: PEM contents inline, empty strings without TLS."""
        def pem(path: Path | None) -> str:
            return path.read_text() if path else ""
        t = self.tls
        return {"chaincode_id": chaincode_id, "peer_address": self.address_for(host),
                "client_cert": pem(t and t.client_cert), "client_key": pem(t and t.client_key),
                "root_cert": pem(t and t.ca_cert), "mspid": mspid}

    # lifecycle
    def start(self) -> FakePeer:
        self._server.start()
        self._started = True
        return self

    def stop(self, grace: float = 2.0) -> None:
        """End every stream, then stop serving (waits for the handlers)."""
        if self._started:
            self.end_streams()
            self._server.stop(grace).wait()
            self._started = False

    def __enter__(self) -> FakePeer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # what tests call
    def wait_registered(self, name: str, timeout: float = 10.0) -> None:
        """Return once `name` has registered (REGISTERED sent); TimeoutError
        naming what did register otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: name in self.registered, timeout):
                raise TimeoutError(f"{name!r} did not register within {timeout} s; registered: {self.registered}, "
                                   f"refused: {self.errors}")

    def end_streams(self) -> int:
        """Close every open stream with status OK (a chaincode sees EOF);
        returns how many were open."""
        with self._changed:
            streams = list(self._open)
        for done in streams:
            done.set()
        return len(streams)

    @property
    def open_streams(self) -> int:
        with self._changed:
            return len(self._open)

    # the Register stream
    def _refuse(self, context: grpc.ServicerContext, why: str) -> NoReturn:
        with self._changed:
            self.errors.append(why)
            self._changed.notify_all()
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
        raise AssertionError("unreachable: abort raises")

    def _register(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            first = next(requests)
        except StopIteration:
            return
        try:
            msg_type, payload = decode_message(first)
            name = chaincode_name(payload) if msg_type == REGISTER else ""
        except ValueError as e:
            self._refuse(context, f"not a ChaincodeMessage: {e}")     # raises: abort ends the RPC
        if msg_type != REGISTER:
            self._refuse(context, f"first message has type {msg_type}, not REGISTER")
        elif not name:
            self._refuse(context, "REGISTER without a chaincode name")
        done = threading.Event()
        context.add_callback(done.set)           # the RPC ended (client gone, cancelled)
        with self._changed:
            self._open.add(done)
        try:
            yield encode_message(REGISTERED)
            with self._changed:
                self.registered.append(name)
                self._changed.notify_all()
            yield encode_message(READY)
            threading.Thread(target=self._drain, args=(name, requests, done), daemon=True,
                             name=f"fake-peer-read-{name}").start()
            done.wait()
        finally:
            with self._changed:
                self._open.discard(done)
                self._changed.notify_all()

    def _drain(self, name: str, requests: Iterator[bytes], done: threading.Event) -> None:
        """Record what the chaincode sends after registering, until its side closes."""
        try:
            for raw in requests:
                try:
                    msg_type, _ = decode_message(raw)
                except ValueError:
                    msg_type = -1
                with self._changed:
                    self.received.append((name, msg_type))
                    self._changed.notify_all()
        except grpc.RpcError:
            pass
        finally:
            done.set()


class _Handler(grpc.GenericRpcHandler):
    """Routes the Register method to the peer, bytes in and out (no (de)serializers)."""

    def __init__(self, behaviour):
        self._method = grpc.stream_stream_rpc_method_handler(behaviour)

    def service(self, handler_call_details):
        return self._method if handler_call_details.method == REGISTER_METHOD else None
