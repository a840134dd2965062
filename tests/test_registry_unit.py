"""The registry package without a real registry: reference and challenge
parsing, credentials (config.json auths, credential helpers, podman's
auth.json; which files are read, in which order, --authfile), backoff,
loopback registries over plain HTTP, and the HTTP behaviour — retries, Basic and Bearer
auth, redirects, push (skip, mount, monolithic, chunked with resume,
manifest last) and pull (cache, verification, no network when pinned) —
against small HTTP servers run in threads on 127.0.0.1. At the end, a real
plain-HTTP docker-registry on 127.0.0.1 through the CLI (marked registry)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import ipaddress
import json
import os
import random
import re
import socket
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ocibuild.errors import BlobError, InputError, OutputError, RegistryError, TransientError
from ocibuild.oci.blobs import Layer, WorkStore, bytes_blob
from ocibuild.oci.image import Image
from ocibuild.oci.imageset import ImageSet
from ocibuild.oci.model import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    Descriptor,
    Platform,
    canonical_json,
    index_json,
    manifest_json,
)
from ocibuild.oci.reference import parse_registry_ref
from ocibuild.outputs import write_all
from ocibuild.registry.auth import AuthState, Credentials, find_credentials, parse_challenges
from ocibuild.registry.cache import BlobCache
from ocibuild.registry.client import Backoff, RegistryClient, answers_tls_in_plain_http
from ocibuild.registry.options import RegistryOptions, is_loopback
from ocibuild.registry.pull import Puller, pull_image
from ocibuild.registry.push import RegistryOutput, push_blob, put_manifest

AMD64 = Platform("linux", "amd64")


# --- references ----------------------------------------------------------------

@pytest.mark.parametrize("text, host, repo, tag, digest", [
    ("localhost:5000/acme/cc:1.0", "localhost:5000", "acme/cc", "1.0", ""),
    ("docker://localhost:5000/acme/cc", "localhost:5000", "acme/cc", "latest", ""),
    ("registry.example.com/a/b/c:v", "registry.example.com", "a/b/c", "v", ""),
    ("127.0.0.1:5000/x@sha256:" + "a" * 64, "127.0.0.1:5000", "x", "", "sha256:" + "a" * 64),
    ("localhost/x:t@sha256:" + "b" * 64, "localhost", "x", "t", "sha256:" + "b" * 64),
    ("alpine", "docker.io", "library/alpine", "latest", ""),
    ("acme/cc:2", "docker.io", "acme/cc", "2", ""),
    ("docker.io/alpine:3", "docker.io", "library/alpine", "3", ""),
    ("index.docker.io/acme/cc", "docker.io", "acme/cc", "latest", ""),
    ("Registry.Example.COM:443/acme/cc", "registry.example.com:443", "acme/cc", "latest", ""),
    ("[::1]:5000/acme/cc:1", "[::1]:5000", "acme/cc", "1", ""),
])
def test_reference_parsing(text, host, repo, tag, digest):
    r = parse_registry_ref(text)
    assert (r.host, r.repo, r.tag, r.digest) == (host, repo, tag, digest)
    assert r.reference == (digest or tag)
    assert parse_registry_ref(str(r)) == r


def test_docker_hub_is_served_from_its_api_host():
    assert parse_registry_ref("alpine").api_host == "registry-1.docker.io"
    assert parse_registry_ref("localhost:5000/a").api_host == "localhost:5000"


@pytest.mark.parametrize("text, says", [
    ("localhost:5000/Acme/cc", "invalid repository"),
    ("localhost:5000/acme/cc:bad tag", "invalid tag"),
    ("localhost:5000/acme/cc@sha256:abc", "not a sha256 digest"),
    ("localhost:5000/acme/cc@md5:" + "a" * 32, "not a sha256 digest"),
    ("bad_host:5000/acme/cc", "invalid registry host"),
    ("localhost:5000/", "invalid repository"),
    ("localhost:5000/a//b", "invalid repository"),
])
def test_reference_refusals(text, says):
    with pytest.raises(InputError, match=says):
        parse_registry_ref(text)


# --- challenges ----------------------------------------------------------------

def test_bearer_challenge_with_commas_in_quotes():
    [ch] = parse_challenges(['Bearer realm="https://auth.example.com/token",'
                             'service="registry.example.com",scope="repository:a/b:pull,push"'])
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                         "scope": "repository:a/b:pull,push"}


def test_several_challenges_escapes_and_unquoted_values():
    chs = parse_challenges(['Basic realm="say \\"hi\\"", Bearer realm=https://t/x , error=invalid_token',
                            "Negotiate abc=="])
    assert [c.scheme for c in chs] == ["basic", "bearer", "negotiate"]
    assert chs[0].params == {"realm": 'say "hi"'}
    assert chs[1].params == {"realm": "https://t/x", "error": "invalid_token"}


def test_auth_state_prefers_bearer_and_ignores_unknown_schemes():
    st = AuthState("h", RegistryOptions())
    assert not st.learn(parse_challenges(["Negotiate"]))
    assert st.learn(parse_challenges(['Basic realm="r"', 'Bearer realm="https://t/token"']))
    assert st.scheme == "bearer"
    st2 = AuthState("h", RegistryOptions())
    assert st2.learn(parse_challenges(['Basic realm="registry"'])) and st2.scheme == "basic"


# --- credentials ---------------------------------------------------------------

def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _config(tmp_path, doc: dict, name="config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("key", ["reg.example:5000", "https://reg.example:5000",
                                 "http://reg.example:5000", "https://reg.example:5000/v1/"])
def test_auths_under_any_of_dockers_keys(tmp_path, key):
    cfg = _config(tmp_path, {"auths": {"other:1": {"auth": _b64("x:y")}, key: {"auth": _b64("alice:s3:cr3t")}}})
    c = find_credentials("reg.example:5000", RegistryOptions(auth_files=(cfg,)))
    assert (c.username, c.password) == ("alice", "s3:cr3t")
    assert c.source.endswith("config.json (auths)")


def test_docker_hub_login_key(tmp_path):
    cfg = _config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": _b64("bob:pw")}}})
    assert find_credentials("docker.io", RegistryOptions(auth_files=(cfg,))).username == "bob"


def test_no_credentials_anywhere(tmp_path):
    cfg = _config(tmp_path, {"auths": {"elsewhere:5000": {"auth": _b64("a:b")}}})
    opts = RegistryOptions(auth_files=(str(tmp_path / "missing.json"), cfg))
    assert find_credentials("reg.example:5000", opts) is None


def test_the_first_file_with_a_login_for_the_host_wins(tmp_path):
    podman = _config(tmp_path, {"auths": {"other.example": {"auth": _b64("x:y")}}}, "auth.json")
    docker = _config(tmp_path, {"auths": {"reg.example:5000": {"auth": _b64("dock:er")}}})
    c = find_credentials("reg.example:5000", RegistryOptions(auth_files=(podman, docker)))
    assert (c.username, c.password) == ("dock", "er")
    assert c.source == docker + " (auths)"
    both = _config(tmp_path, {"auths": {"reg.example:5000": {"auth": _b64("pod:man")}}}, "auth2.json")
    c = find_credentials("reg.example:5000", RegistryOptions(auth_files=(both, docker)))
    assert (c.username, c.password, c.source) == ("pod", "man", both + " (auths)")


def test_default_lookup_is_that_of_containers_auth_json(tmp_path):
    """No --authfile, no REGISTRY_AUTH_FILE: $XDG_RUNTIME_DIR/containers/auth.json,
    $XDG_CONFIG_HOME/containers/auth.json, then docker's config.json."""
    from ocibuild.cli import registry_options
    env = {"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dock"}
    opts = registry_options(env)
    assert opts.auth_files == ("/run/user/7/containers/auth.json", "/cfg/containers/auth.json",
                               "/dock/config.json") and opts.auth_flag == ""
    assert registry_options({"HOME": "/h"}).auth_files == ("/h/.config/containers/auth.json",
                                                           "/h/.docker/config.json")


def test_authfile_or_registry_auth_file_is_the_only_file_read(tmp_path):
    from ocibuild.cli import registry_options
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "REGISTRY_AUTH_FILE": "/x/auth.json"}
    opts = registry_options(env)
    assert opts.auth_files == ("/x/auth.json",) and opts.auth_flag == "REGISTRY_AUTH_FILE"
    given = _config(tmp_path, {"auths": {"reg.example:5000": {"auth": _b64("given:pw")}}}, "given.json")
    opts = registry_options(env, (), given)                   # --authfile beats REGISTRY_AUTH_FILE
    assert opts.auth_files == (given,) and opts.auth_flag == "--authfile"
    assert find_credentials("reg.example:5000", opts).username == "given"
    st = AuthState("other.example", opts)
    assert st.who() == "no credentials (none found for other.example in ~/given.json (--authfile))"
    with pytest.raises(InputError, match=r"--authfile .*missing\.json does not exist"):
        registry_options(env, (), str(tmp_path / "missing.json"))
    with pytest.raises(InputError, match=r"--authfile .* is not a file"):
        registry_options(env, (), str(tmp_path))


def test_default_lookup_reads_podmans_file_before_dockers(tmp_path, fake_helper):
    """A login in $XDG_RUNTIME_DIR/containers/auth.json is used before the
    docker config's, even its credHelpers; a host only docker knows still
    gets docker's."""
    from ocibuild.cli import registry_options
    fake_helper({"reg.example:5000": {"Username": "helper", "Secret": "h"},
                 "docker.only:5000": {"Username": "helper2", "Secret": "h2"}})
    (tmp_path / "run" / "containers").mkdir(parents=True)
    _config(tmp_path / "run" / "containers", {"auths": {"reg.example:5000": {"auth": _b64("podman:p")}}}, "auth.json")
    (tmp_path / "docker").mkdir()
    _config(tmp_path / "docker", {"credHelpers": {"reg.example:5000": "fake", "docker.only:5000": "fake"}})
    opts = registry_options({"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
                             "DOCKER_CONFIG": str(tmp_path / "docker")})
    c = find_credentials("reg.example:5000", opts)
    assert (c.username, c.source) == ("podman", "~/run/containers/auth.json (auths)")
    c = find_credentials("docker.only:5000", opts)
    assert c.username == "helper2" and c.source == "~/docker/config.json (credHelpers: fake)"


def test_malformed_auth_names_the_file_not_the_secret(tmp_path):
    cfg = _config(tmp_path, {"auths": {"reg.example:5000": {"auth": _b64("no-colon-secretvalue")}}})
    with pytest.raises(RegistryError) as e:
        find_credentials("reg.example:5000", RegistryOptions(auth_files=(cfg,)))
    assert "config.json (auths)" in str(e.value) and "secretvalue" not in str(e.value)


def test_credentials_repr_hides_the_secret():
    c = Credentials("alice", "hunter2", "somewhere", identity_token="tok3n")
    assert "hunter2" not in repr(c) and "tok3n" not in repr(c)


@pytest.fixture
def fake_helper(tmp_path, monkeypatch):
    """Writes docker-credential-fake into a PATH directory; it logs the
    server URL it was asked for and answers from a table (or fails)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"

    def make(answers: dict, name: str = "fake", fail: str = ""):
        script = bindir / f"docker-credential-{name}"
        script.write_text(f"""#!/usr/bin/env python3
import json, sys
answers = {json.dumps(answers)!r}
assert sys.argv[1:] == ["get"], sys.argv
url = sys.stdin.read().strip()
open({str(log)!r}, "a").write(url + "\\n")
if {fail!r}:
    sys.stderr.write({fail!r} + "\\n"); sys.exit(1)
a = json.loads(answers).get(url)
if a is None:
    print("credentials not found in native keychain"); sys.exit(1)
print(json.dumps(a))
""")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return log

    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return make


def test_cred_helper_for_the_host(tmp_path, fake_helper):
    log = fake_helper({"reg.example:5000": {"ServerURL": "reg.example:5000", "Username": "u", "Secret": "s"}})
    cfg = _config(tmp_path, {"credHelpers": {"reg.example:5000": "fake"},
                             "auths": {"reg.example:5000": {"auth": _b64("not:this")}}})
    c = find_credentials("reg.example:5000", RegistryOptions(auth_files=(cfg,)))
    assert (c.username, c.password) == ("u", "s")
    assert "credHelpers: fake" in c.source
    assert log.read_text() == "reg.example:5000\n"


def test_creds_store_then_auths(tmp_path, fake_helper):
    fake_helper({"a.example": {"Username": "store", "Secret": "x"}})
    cfg = _config(tmp_path, {"credsStore": "fake", "auths": {"b.example": {"auth": _b64("file:y")}}})
    opts = RegistryOptions(auth_files=(cfg,))
    assert find_credentials("a.example", opts).username == "store"
    assert find_credentials("b.example", opts).username == "file"      # not in the store


def test_helper_identity_token(tmp_path, fake_helper):
    fake_helper({"https://index.docker.io/v1/": {"Username": "<token>", "Secret": "refresh"}})
    cfg = _config(tmp_path, {"credsStore": "fake"})
    c = find_credentials("docker.io", RegistryOptions(auth_files=(cfg,)))
    assert c.identity_token == "refresh" and not c.password


def test_helper_missing_or_failing(tmp_path, fake_helper):
    cfg = _config(tmp_path, {"credHelpers": {"h.example": "absent"}})
    with pytest.raises(RegistryError, match="docker-credential-absent .* not installed"):
        find_credentials("h.example", RegistryOptions(auth_files=(cfg,)))
    fake_helper({}, fail="keychain locked")
    cfg = _config(tmp_path, {"credHelpers": {"h.example": "fake"}})
    with pytest.raises(RegistryError, match="docker-credential-fake .* failed: keychain locked"):
        find_credentials("h.example", RegistryOptions(auth_files=(cfg,)))


# --- backoff -------------------------------------------------------------------

def test_backoff_doubles_and_caps():
    b = Backoff(base=0.2, cap=1.0)
    assert [b.delay(i) for i in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_retry_after_seconds_date_and_cap():
    b = Backoff(retry_after_cap=30)
    assert b.delay(0, "3") == 3
    assert b.delay(0, "3600") == 30
    assert 5 <= b.delay(0, formatdate(time.time() + 10, usegmt=True)) <= 10.5
    assert b.delay(2, "soon") == 0.8          # unreadable: our own backoff


# --- a scripted HTTP server -----------------------------------------------------

DROP = object()     # close the connection without an answer


@dataclass
class Req:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    port: int


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    truncate: int | None = None     # send only this many body bytes, then close


class Server:
    """An HTTP/1.1 server on 127.0.0.1 answering with `handler(Req)`; every
    request is recorded."""

    def __init__(self, handler: Callable[[Req], Reply | object], tls: tuple[str, str] | None = None):
        self.handler = handler
        self.requests: list[Req] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                u = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._chunked()
                else:
                    body = self.rfile.read(n) if n else b""
                req = Req(self.command, u.path, parse_qs(u.query), {k.lower(): v for k, v in self.headers.items()},
                          body, outer.port)
                outer.requests.append(req)
                reply = outer.handler(req)
                if reply is DROP:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                hdrs = dict(reply.headers)
                hdrs.setdefault("Content-Length", str(len(reply.body)))
                for k, v in hdrs.items():
                    self.send_header(k, v)
                if reply.truncate is not None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body if reply.truncate is None else reply.body[:reply.truncate])

            def _chunked(self):
                out = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and re.search(pattern, r.path))


@pytest.fixture
def serve():
    servers = []

    def start(handler, tls=None) -> Server:
        s = Server(handler, tls)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def client_for(server: Server, sleeps=None, **opts) -> RegistryClient:
    """A client for `server`, plain HTTP (an insecure registry), recording sleeps."""
    options = RegistryOptions(insecure=frozenset({server.host}), **opts)
    return RegistryClient(server.host, options, sleep=sleeps if sleeps is not None else Sleeps())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- retries ---------------------------------------------------------------------

def test_5xx_then_success_is_retried_with_backoff(serve):
    answers = [Reply(503), Reply(502), Reply(200, body=b"ok")]
    srv = serve(lambda r: Reply(200) if r.path == "/v2/" else answers.pop(0))
    sleeps = Sleeps()
    with client_for(srv, sleeps) as c:
        resp = c.request("GET", "/v2/x/tags/list")
    assert resp.status_code == 200 and resp.content == b"ok"
    assert sleeps == [0.2, 0.4]


def test_429_retry_after_is_honoured(serve):
    answers = [Reply(429, {"Retry-After": "3"}), Reply(200)]
    srv = serve(lambda r: Reply(200) if r.path == "/v2/" else answers.pop(0))
    sleeps = Sleeps()
    with client_for(srv, sleeps) as c:
        assert c.request("GET", "/v2/x/tags/list").status_code == 200
    assert sleeps == [3.0]


def test_persistent_5xx_gives_up_after_the_retries(serve):
    srv = serve(lambda r: Reply(200) if r.path == "/v2/" else
                Reply(500, body=b'{"errors":[{"code":"UNKNOWN","message":"disk full"}]}'))
    sleeps = Sleeps()
    with client_for(srv, sleeps, retries=3) as c:
        resp = c.request("GET", "/v2/x/tags/list")
        assert resp.status_code == 500
        err = c.error(resp, "listing tags")
    assert isinstance(err, TransientError) and "UNKNOWN: disk full" in str(err)
    assert srv.count("GET", "tags") == 4 and len(sleeps) == 3


def test_4xx_is_not_retried(serve):
    srv = serve(lambda r: Reply(200) if r.path == "/v2/" else Reply(400))
    sleeps = Sleeps()
    with client_for(srv, sleeps) as c:
        assert c.request("GET", "/v2/x/tags/list").status_code == 400
    assert srv.count("GET", "tags") == 1 and sleeps == []


def test_dropped_connections_are_retried(serve):
    drops = [DROP, DROP]
    srv = serve(lambda r: drops.pop() if r.path != "/v2/" and drops else Reply(200))
    sleeps = Sleeps()
    with client_for(srv, sleeps) as c:
        assert c.request("GET", "/v2/x/tags/list").status_code == 200
    assert len(sleeps) == 2


def test_connection_refused_gives_a_clear_error_after_retries():
    port = free_port()
    sleeps = Sleeps()
    c = RegistryClient(f"127.0.0.1:{port}", RegistryOptions(insecure=frozenset({f"127.0.0.1:{port}"}),
                                                            retries=2), sleep=sleeps)
    with pytest.raises(TransientError) as e:
        c.ping()
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in str(e.value)
    assert "gave up after 3 attempts" in str(e.value) and len(sleeps) == 2


def test_unknown_host_is_not_retried():
    sleeps = Sleeps()
    c = RegistryClient("no-such-host.invalid:5000", RegistryOptions(), sleep=sleeps)
    with pytest.raises(RegistryError, match="unknown registry host no-such-host.invalid") as e:
        c.ping()
    assert not isinstance(e.value, TransientError) and sleeps == []


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocibuild test registry")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False),
                           critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return str(d / "cert.pem"), str(d / "key.pem")


def test_untrusted_certificate_names_the_ca_directories(serve, tmp_path, tls_cert):
    # On loopback too: a registry that speaks TLS must prove its certificate.
    srv = serve(lambda r: Reply(200), tls=tls_cert)
    a, b = tmp_path / "containers", tmp_path / "docker"
    opts = RegistryOptions(certs_dirs=(str(a), str(b)))
    sleeps = Sleeps()
    with pytest.raises(RegistryError) as e:
        RegistryClient(srv.host, opts, sleep=sleeps).ping()
    msg = str(e.value)
    assert f"TLS verification of {srv.host} failed" in msg
    assert f"{a}/{srv.host}/ca.crt or {b}/{srv.host}/ca.crt" in msg
    assert f"--insecure-registry {srv.host}" in msg
    assert sleeps == [] and srv.requests == []
    # The CA in the second directory: trusted, along with the system's.
    (b / srv.host).mkdir(parents=True)
    (b / srv.host / "ca.crt").write_bytes(Path(tls_cert[0]).read_bytes())
    with RegistryClient(srv.host, opts) as c:
        assert c.ping() == f"https://{srv.host}"


def test_insecure_registry_over_tls_without_verification(serve, tls_cert):
    srv = serve(lambda r: Reply(200), tls=tls_cert)
    with RegistryClient(srv.host, RegistryOptions(insecure=frozenset({srv.host}))) as c:
        assert c.ping() == f"https://{srv.host}"
    plain = serve(lambda r: Reply(200))
    with RegistryClient(plain.host, RegistryOptions(insecure=frozenset({plain.host}))) as c:
        assert c.ping() == f"http://{plain.host}"        # HTTPS failed: plain HTTP


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("localhost:5000", True), ("LocalHost:1", True), ("127.0.0.1:5000", True),
    ("127.8.9.10", True), ("[::1]:5000", True), ("[::1]", True),
    ("localhost.example:5000", False), ("mylocalhost:5000", False), ("128.0.0.1:5000", False),
    ("10.0.0.1:5000", False), ("registry.example", False), ("[::2]:5000", False),
    ("[::ffff:127.0.0.1]:5000", False), ("0x7f.0.0.1:5000", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_plain_http_registry_on_loopback_needs_no_flag(serve):
    """As dockerd and go-containerregistry: 127.0.0.0/8, [::1] and localhost
    are spoken to over plain HTTP when they do not speak TLS."""
    srv = serve(lambda r: Reply(200))
    for host in (srv.host, f"localhost:{srv.port}"):
        sleeps = Sleeps()
        with RegistryClient(host, RegistryOptions(), sleep=sleeps) as c:
            assert c.ping() == f"http://{host}"
        assert sleeps == []
    assert [r.path for r in srv.requests] == ["/v2/", "/v2/"]


def test_plain_http_registry_under_another_name_is_refused(serve, monkeypatch):
    """The same plain-HTTP server, named by a host name that is not a
    loopback one (resolving to 127.0.0.1 here): --insecure-registry needed."""
    srv = serve(lambda r: Reply(200))
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real("127.0.0.1" if host == "registry.test" else host, *a, **k))
    host = f"registry.test:{srv.port}"
    with pytest.raises(RegistryError) as e:
        RegistryClient(host, RegistryOptions(), sleep=Sleeps()).ping()
    assert "TLS handshake" in str(e.value) and f"--insecure-registry {host}" in str(e.value)
    assert not isinstance(e.value, TransientError) and srv.requests == []
    with RegistryClient(host, RegistryOptions(insecure=frozenset({host}))) as c:
        assert c.ping() == f"http://{host}"


def test_certs_dir_bad_ca_file_is_reported(tmp_path):
    d = tmp_path / "certs" / "reg.example:5000"
    d.mkdir(parents=True)
    (d / "ca.crt").write_text("not a certificate")
    with pytest.raises(RegistryError, match=r"cannot load the CA certificate .*ca.crt for reg.example:5000"):
        RegistryClient("reg.example:5000", RegistryOptions(certs_dirs=(str(tmp_path / "certs"),)))
    (d / "ca.crt").unlink()
    (d / "client.cert").write_text("x")
    with pytest.raises(RegistryError, match=r"client certificate .*client.cert .* has no key"):
        RegistryClient("reg.example:5000", RegistryOptions(certs_dirs=(str(tmp_path / "certs"),)))


# --- auth --------------------------------------------------------------------------

def test_basic_auth_after_the_challenge(serve, tmp_path):
    good = "Basic " + _b64("alice:pw")

    def handler(r):
        if r.headers.get("authorization") != good:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="registry"'})
        return Reply(200)
    srv = serve(handler)
    cfg = _config(tmp_path, {"auths": {srv.host: {"auth": _b64("alice:pw")}}})
    with client_for(srv, auth_files=(cfg,)) as c:
        assert c.request("GET", "/v2/a/tags/list").status_code == 200
        assert c.auth.scheme == "basic"


def test_basic_auth_refused_names_the_source_not_the_secret(serve, tmp_path):
    srv = serve(lambda r: Reply(401, {"WWW-Authenticate": 'Basic realm="registry"'},
                                b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'))
    cfg = _config(tmp_path, {"auths": {srv.host: {"auth": _b64("alice:topsecret")}}})
    with client_for(srv, auth_files=(cfg,)) as c:
        resp = c.request("GET", "/v2/a/manifests/1")
        msg = str(c.error(resp, "the pull of a"))
    assert "401: UNAUTHORIZED: authentication required" in msg
    assert f"credentials from {cfg} (auths)" in msg
    assert "topsecret" not in msg and _b64("alice:topsecret") not in msg


class TokenServer:
    """A registry wanting Bearer tokens and, on the same server, its token
    endpoint at /token (Basic credentials alice:pw, or anonymous pull)."""

    def __init__(self, serve):
        self.issued: list[list[str]] = []
        self.srv = serve(self.handle)

    def handle(self, r: Req):
        if r.path == "/token":
            auth = r.headers.get("authorization")
            if auth and auth != "Basic " + _b64("alice:pw"):
                return Reply(401)
            scopes = r.query.get("scope", [])
            self.issued.append(scopes)
            tok = base64.b64encode(json.dumps({"user": bool(auth), "scopes": scopes}).encode()).decode()
            return Reply(200, {"Content-Type": "application/json"},
                         json.dumps({"access_token": tok, "expires_in": 300}).encode())
        challenge = {"WWW-Authenticate": f'Bearer realm="http://{self.srv.host}/token",service="test"'}
        auth = r.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Reply(401, challenge)
        tok = json.loads(base64.b64decode(auth[7:]))
        if r.path == "/v2/" or any("pull" in s for s in tok["scopes"]) and r.method in ("GET", "HEAD"):
            return Reply(200, body=b"{}")
        if tok["user"]:
            return Reply(201)
        return Reply(401, challenge, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')


def test_bearer_tokens_per_scope_set_are_cached(serve, tmp_path):
    ts = TokenServer(serve)
    cfg = _config(tmp_path, {"auths": {ts.srv.host: {"auth": _b64("alice:pw")}}})
    pull = frozenset({"repository:a:pull"})
    with client_for(ts.srv, auth_files=(cfg,)) as c:
        for _ in range(3):
            assert c.request("GET", "/v2/a/manifests/1", scopes=pull).status_code == 200
        assert c.request("PUT", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull,push"}),
                         body=b"{}").status_code == 201
    assert ts.issued == [["repository:a:pull"], ["repository:a:pull,push"]]
    token_requests = [r for r in ts.srv.requests if r.path == "/token"]
    assert all(r.headers["authorization"] == "Basic " + _b64("alice:pw") for r in token_requests)


def test_bearer_anonymous_pull_and_refused_push(serve, tmp_path):
    ts = TokenServer(serve)
    with client_for(ts.srv, auth_files=(str(tmp_path / "none.json"),)) as c:
        assert c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"})).status_code == 200
        resp = c.request("PUT", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull,push"}), body=b"{}")
        assert resp.status_code == 401
        msg = str(c.error(resp, "a push"))
    assert "no credentials (none found" in msg and "docker login" in msg
    assert all("authorization" not in r.headers for r in ts.srv.requests if r.path == "/token")


def test_token_server_refusing_credentials(serve, tmp_path):
    ts = TokenServer(serve)
    cfg = _config(tmp_path, {"auths": {ts.srv.host: {"auth": _b64("alice:wrong")}}})
    with client_for(ts.srv, auth_files=(cfg,)) as c:
        with pytest.raises(RegistryError) as e:
            c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"}))
    assert "token server" in str(e.value) and "refused credentials from" in str(e.value)
    assert "wrong" not in str(e.value)


def test_identity_token_is_exchanged_by_post(serve, tmp_path):
    def handler(r):
        if r.path == "/token":
            form = parse_qs(r.body.decode())
            ok = r.method == "POST" and form.get("refresh_token") == ["refresh-me"] and \
                form.get("grant_type") == ["refresh_token"] and form.get("scope") == ["repository:a:pull"]
            return Reply(200, body=b'{"access_token":"good"}') if ok else Reply(401)
        if r.headers.get("authorization") == "Bearer good":
            return Reply(200)
        return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{srv.host}/token",service="s"'})
    srv = serve(handler)
    cfg = _config(tmp_path, {"auths": {srv.host: {"auth": _b64("u:p"), "identitytoken": "refresh-me"}}})
    with client_for(srv, auth_files=(cfg,)) as c:
        assert c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"})).status_code == 200


def test_plain_http_token_realm_needs_an_explicit_insecure_host(serve, tmp_path, tls_cert):
    realm = serve(lambda r: Reply(200, body=b'{"token":"t"}'))
    reg = serve(lambda r: Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{realm.host}/token"'}),
                tls=tls_cert)
    (tmp_path / reg.host).mkdir()
    (tmp_path / reg.host / "ca.crt").write_bytes(Path(tls_cert[0]).read_bytes())
    cfg = _config(tmp_path, {"auths": {reg.host: {"auth": _b64("alice:pw")}}})
    opts = RegistryOptions(certs_dirs=(str(tmp_path),), auth_files=(cfg,))
    with RegistryClient(reg.host, opts) as c:
        with pytest.raises(RegistryError, match=f"plain-HTTP token server .* --insecure-registry {realm.host}"):
            c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"}))
    assert realm.requests == []
    with RegistryClient(reg.host, dataclasses.replace(opts, insecure=frozenset({realm.host}))) as c:
        c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"}))
    assert realm.requests[0].headers["authorization"] == "Basic " + _b64("alice:pw")


def test_redirect_to_another_host_drops_authorization(serve, tmp_path):
    storage = serve(lambda r: Reply(200, body=b"blob bytes"))

    def handler(r):
        if r.headers.get("authorization") != "Basic " + _b64("alice:pw"):
            return Reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
        if r.path.startswith("/v2/a/blobs/"):
            return Reply(307, {"Location": f"http://{storage.host}/bucket/x?sig=1"})
        return Reply(200)
    reg = serve(handler)
    cfg = _config(tmp_path, {"auths": {reg.host: {"auth": _b64("alice:pw")}}})
    with client_for(reg, auth_files=(cfg,)) as c:
        resp = c.request("GET", "/v2/a/blobs/sha256:" + "0" * 64)
    assert resp.content == b"blob bytes"
    [got] = storage.requests
    assert "authorization" not in got.headers and got.query == {"sig": ["1"]}


# --- a fake registry: push and pull ---------------------------------------------

class FakeRegistry:
    """Enough of the distribution API, in memory: blobs per repository,
    upload sessions with a `_state` that must come back (Location's query
    kept), chunk ranges, mounts, manifests that must reference known blobs,
    Range on blob GETs. `faults[method]` holds replies (or DROP) to give
    instead of the real answer, one per request of that method."""

    def __init__(self, serve):
        self.data: dict[str, bytes] = {}
        self.repos: dict[str, set] = {}
        self.uploads: dict[str, dict] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.faults: dict[str, list] = {}
        self.resumable = True
        self.corrupt: set[str] = set()
        self.truncate_once: dict[str, int] = {}
        self.srv = serve(self.handle)
        self.host = self.srv.host

    def handle(self, r: Req):
        fault = self.faults.get(r.method)
        if fault:
            return fault.pop(0)
        if r.path == "/v2/":
            return Reply(200, body=b"{}")
        m = re.match(r"^/v2/(.+)/(blobs|manifests)/(uploads/)?(.*)$", r.path)
        if not m:
            return Reply(404)
        repo, kind, up, rest = m.groups()
        if kind == "manifests":
            return self.manifest(r, repo, rest)
        if up:
            return self.upload(r, repo, rest)
        return self.blob(r, repo, rest)

    @staticmethod
    def error(status, code, message="", detail=None):
        err = {"code": code, "message": message or code.lower()}
        if detail is not None:
            err["detail"] = detail
        return Reply(status, {"Content-Type": "application/json"}, json.dumps({"errors": [err]}).encode())

    def blob(self, r, repo, digest):
        if digest not in self.repos.get(repo, set()):
            return self.error(404, "BLOB_UNKNOWN")
        data = self.data[digest]
        if digest in self.corrupt:
            data = b"X" + data[1:]
        if r.method == "HEAD":
            return Reply(200, {"Content-Length": str(len(data)), "Docker-Content-Digest": digest})
        rng = r.headers.get("range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            return Reply(206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:])
        if digest in self.truncate_once:
            return Reply(200, body=data, truncate=self.truncate_once.pop(digest))
        return Reply(200, body=data)

    def _session(self, repo, uid, status=202):
        up = self.uploads[uid]
        up["state"] = uuid.uuid4().hex
        n = len(up["data"])
        return Reply(status, {"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state={up['state']}",
                              "Range": f"0-{max(n - 1, 0)}", "Docker-Upload-UUID": uid})

    def upload(self, r, repo, rest):
        if r.method == "POST" and not rest:
            mount, src = r.query.get("mount", [""])[0], r.query.get("from", [""])[0]
            if mount and mount in self.repos.get(src, set()):
                self.repos.setdefault(repo, set()).add(mount)
                return Reply(201, {"Location": f"/v2/{repo}/blobs/{mount}"})
            uid = uuid.uuid4().hex
            self.uploads[uid] = {"data": b"", "state": ""}
            return self._session(repo, uid)
        up = self.uploads.get(rest)
        if up is None:
            return self.error(404, "BLOB_UPLOAD_UNKNOWN")
        if r.query.get("_state", [""])[0] != up["state"]:
            return self.error(400, "BLOB_UPLOAD_INVALID", "stale _state")
        if r.method == "DELETE":
            del self.uploads[rest]
            return Reply(204)
        if r.method == "GET":
            return self._session(repo, rest, 204) if self.resumable else self.error(404, "BLOB_UPLOAD_UNKNOWN")
        if r.method == "PATCH":
            start, end = (int(x) for x in r.headers["content-range"].split("-"))
            if start != len(up["data"]) or end - start + 1 != len(r.body):
                return Reply(416)
            up["data"] += r.body
            return self._session(repo, rest)
        if r.method == "PUT":
            data = up["data"] + r.body
            digest = r.query["digest"][0]
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return self.error(400, "DIGEST_INVALID")
            del self.uploads[rest]
            self.data[digest] = data
            self.repos.setdefault(repo, set()).add(digest)
            return Reply(201, {"Location": f"/v2/{repo}/blobs/{digest}", "Docker-Content-Digest": digest})
        return Reply(405)

    def manifest(self, r, repo, ref):
        if r.method == "PUT":
            doc = json.loads(r.body)
            needed = [doc["config"]["digest"]] + [layer["digest"] for layer in doc.get("layers", [])] \
                if "config" in doc else []
            for d in needed:
                if d not in self.repos.get(repo, set()):
                    return self.error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", d)
            digest = "sha256:" + hashlib.sha256(r.body).hexdigest()
            ct = r.headers.get("content-type", "")
            self.manifests[(repo, ref)] = self.manifests[(repo, digest)] = (r.body, ct)
            return Reply(201, {"Docker-Content-Digest": digest})
        found = self.manifests.get((repo, ref))
        if found is None:
            return self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        body, ct = found
        return Reply(200, {"Content-Type": ct,
                           "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()}, body)

    def tags(self, repo):
        return {ref for (r, ref) in self.manifests if r == repo and not ref.startswith("sha256:")}


def make_image(*layer_sizes: int, seed: int = 0, arch: str = "amd64") -> Image:
    rnd = random.Random(seed)
    layers = []
    for i, n in enumerate(layer_sizes):
        data = rnd.randbytes(n)
        b = bytes_blob(OCI_LAYER, data, f"layer {i}")
        layers.append(Layer(b.descriptor, b.opener, b.where, diff_id=b.descriptor.digest))
    cfg = canonical_json({"architecture": arch, "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}})
    config = bytes_blob(OCI_CONFIG, cfg, "config")
    return Image(manifest_json(config.descriptor, [layer.descriptor for layer in layers]), config, tuple(layers))


@pytest.fixture
def registry(serve):
    return FakeRegistry(serve)


def push(reg: FakeRegistry, image: Image, name: str, tmp_path, sleeps=None, **opts) -> RegistryOutput:
    os.makedirs(tmp_path, exist_ok=True)
    options = RegistryOptions(insecure=frozenset({reg.host}), cache_dir=str(tmp_path / "cache"), **opts)
    client = RegistryClient(reg.host, options, sleep=sleeps if sleeps is not None else Sleeps())
    out = RegistryOutput(parse_registry_ref(f"{reg.host}/{name}"), options, client=client)
    out.check()
    with WorkStore(str(tmp_path)) as work:
        write_all([out], image, work)
    return out


def test_push_then_push_again_uploads_nothing(registry, tmp_path):
    img = make_image(1000, 3000)
    out = push(registry, img, "acme/cc:1", tmp_path)
    assert (out.stats.uploaded, out.stats.present) == (3, 0)
    assert registry.manifests[("acme/cc", "1")][0] == img.manifest
    assert registry.manifests[("acme/cc", "1")][1] == img.media_type
    posts = registry.srv.count("POST")
    out = push(registry, img, "acme/cc:1", tmp_path)
    assert (out.stats.uploaded, out.stats.present) == (0, 3)
    assert registry.srv.count("POST") == posts              # nothing: check() probes with a HEAD
    assert registry.srv.count("PATCH") == 0


def test_manifest_by_digest_in_stage_tag_only_at_commit(registry, tmp_path):
    img = make_image(100)
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "c"))
    out = RegistryOutput(parse_registry_ref(f"{registry.host}/acme/cc:v2"), options)
    out.check()
    with WorkStore(str(tmp_path)) as work:
        out.stage(ImageSet((img,)), work)
        assert ("acme/cc", img.digest) in registry.manifests and registry.tags("acme/cc") == set()
        out.commit()
    assert registry.tags("acme/cc") == {"v2"}


def test_push_to_a_digest_reference(registry, tmp_path):
    img = make_image(100)
    push(registry, img, f"acme/cc@{img.digest}", tmp_path)
    assert registry.tags("acme/cc") == set() and ("acme/cc", img.digest) in registry.manifests
    with pytest.raises(OutputError, match="not the digest"):
        push(registry, img, "acme/cc@sha256:" + "1" * 64, tmp_path)


def test_chunked_upload_keeps_location_query(registry, tmp_path):
    img = make_image(2500)
    out = push(registry, img, "acme/big:1", tmp_path, chunk_size=1000)
    assert out.stats.uploaded == 2
    # 2500 bytes in 1000-byte chunks: three PATCHes, each with the newest _state
    assert registry.srv.count("PATCH") == 3
    assert registry.data[img.layers[0].descriptor.digest] == img.layers[0].read()


def test_failed_chunk_resumes_where_the_registry_says(registry, tmp_path):
    img = make_image(5000)
    registry.faults["PATCH"] = [Reply(502)]
    # the fault fires on the first PATCH; the client asks the session (GET)
    # and goes on from its Range: the same session, no restart
    sleeps = Sleeps()
    out = push(registry, img, "acme/big:1", tmp_path, sleeps=sleeps, chunk_size=1000)
    assert out.stats.uploaded == 2
    assert registry.srv.count("GET", "/uploads/") == 1
    assert registry.srv.count("POST") == 2            # one session per blob (check() only HEADs)
    assert len(sleeps) == 1


def test_failed_chunk_midway_resumes_from_the_registrys_offset(registry, tmp_path):
    img = make_image(5000)
    calls = {"n": 0}
    real = registry.handle

    def flaky(r):
        if r.method == "PATCH":
            calls["n"] += 1
            if calls["n"] == 3:       # after two good chunks the connection drops
                return DROP
        return real(r)
    registry.srv.handler = flaky
    out = push(registry, img, "acme/big:1", tmp_path, chunk_size=1000)
    patches = [r for r in registry.srv.requests if r.method == "PATCH"]
    assert [p.headers["content-range"] for p in patches] == \
        ["0-999", "1000-1999", "2000-2999", "2000-2999", "3000-3999", "4000-4999"]
    assert out.stats.uploaded == 2


def test_registry_without_resume_gets_a_new_session(registry, tmp_path):
    img = make_image(3000)
    registry.resumable = False
    registry.faults["PATCH"] = [Reply(503)]
    out = push(registry, img, "acme/big:1", tmp_path, chunk_size=1000)
    assert out.stats.uploaded == 2
    assert registry.srv.count("POST") == 3              # the failed session, a new one, config


def test_monolithic_retry_opens_a_new_session(registry, tmp_path):
    img = make_image(500)
    registry.faults["PUT"] = [DROP]
    out = push(registry, img, "acme/cc:1", tmp_path)
    assert out.stats.uploaded == 2 and registry.tags("acme/cc") == {"1"}
    assert registry.srv.count("DELETE") >= 1


def test_registry_gone_mid_push_leaves_no_tag(registry, tmp_path):
    img = make_image(3000, 3000)
    real = registry.handle
    probed = []

    def dying(r):
        # the first upload session opens; after it, every write fails
        if r.method == "POST" and not probed:
            probed.append(r)
            return real(r)
        return Reply(503) if r.method in ("POST", "PATCH", "PUT") else real(r)
    registry.srv.handler = dying
    sleeps = Sleeps()
    with pytest.raises(TransientError) as e:       # one blob at a time: one backoff to count
        push(registry, img, "acme/cc:1", tmp_path, sleeps=sleeps, chunk_size=1000, retries=3, parallel=1)
    assert "503" in str(e.value) and "gave up after 4 attempts" in str(e.value)
    assert f"{registry.host}/acme/cc:1 was left as it was" in str(e.value)
    assert registry.tags("acme/cc") == set() and registry.manifests == {}
    assert sleeps == [0.2, 0.4, 0.8]


def test_rejected_manifest_shows_the_registrys_error(registry, tmp_path):
    img = make_image(100)
    real = registry.handle
    registry.srv.handler = lambda r: (FakeRegistry.error(400, "MANIFEST_INVALID", "manifest invalid",
                                                         "schema says no")
                                      if r.method == "PUT" and "/manifests/" in r.path else real(r))
    with pytest.raises(RegistryError) as e:
        push(registry, img, "acme/cc:1", tmp_path)
    assert "400: MANIFEST_INVALID: manifest invalid (schema says no)" in str(e.value)
    assert registry.tags("acme/cc") == set()


def test_registry_changing_the_manifest_digest_is_an_error(registry, tmp_path):
    img = make_image(100)
    real = registry.handle

    def lying(r):
        reply = real(r)
        if r.method == "PUT" and "/manifests/" in r.path:
            reply.headers["Docker-Content-Digest"] = "sha256:" + "9" * 64
        return reply
    registry.srv.handler = lying
    with pytest.raises(RegistryError, match="changed the bytes"):
        push(registry, img, "acme/cc:1", tmp_path)


def test_mount_from_a_repository_the_blob_was_pulled_from(registry, tmp_path):
    base = make_image(4000, seed=1)
    push(registry, base, "library/base:1", tmp_path / "elsewhere")     # someone else's push
    pulled = pull_image(parse_registry_ref(f"{registry.host}/library/base:1"), AMD64,
                        RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache")))
    img = Image(manifest_json(pulled.config.descriptor, [layer.descriptor for layer in pulled.layers],
                              {"x": "y"}), pulled.config, pulled.layers)
    out = push(registry, img, "acme/cc:1", tmp_path)
    assert (out.stats.mounted, out.stats.uploaded) == (2, 0)
    mounts = [r for r in registry.srv.requests if r.method == "POST" and "mount" in r.query]
    assert {m.query["from"][0] for m in mounts} == {"library/base"}


def test_mount_token_has_pull_scope_on_the_source(serve, tmp_path):
    issued = []

    def handler(r):
        if r.path == "/token":
            issued.append(sorted(r.query.get("scope", [])))
            return Reply(200, body=json.dumps({"token": f"t{len(issued)}"}).encode())
        if not r.headers.get("authorization"):
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{srv.host}/token",service="s"'})
        if r.method == "HEAD":
            return Reply(404)
        if r.method == "POST" and r.query.get("from") == ["library/base"]:
            return Reply(201, {"Location": "/v2/acme/cc/blobs/x"})
        return Reply(400)
    srv = serve(handler)
    img = make_image(10)
    cache = BlobCache(str(tmp_path / "cache"))
    layer = img.layers[0]
    cache.remember(layer.descriptor.digest, srv.host, "library/base")
    with client_for(srv) as c:
        assert push_blob(c, "acme/cc", layer, c.options, cache) == "mounted"
    assert issued == [["repository:acme/cc:pull,push"],
                      ["repository:acme/cc:pull,push", "repository:library/base:pull"]]
    assert cache.locations(layer.descriptor.digest)[-1] == f"{srv.host}/acme/cc"


def test_failed_mount_uploads_in_the_session_it_opened(registry, tmp_path):
    img = make_image(300)
    cache = BlobCache(str(tmp_path / "cache"))
    for b in img.blobs():
        cache.remember(b.descriptor.digest, registry.host, "gone/repo")   # a stale hint
    out = push(registry, img, "acme/cc:1", tmp_path)
    assert out.stats.uploaded == 2
    assert registry.srv.count("POST") == 2              # the two mount attempts


def test_pull_fills_the_cache_and_pinned_pull_needs_no_network(registry, tmp_path):
    img = make_image(2000, 100)
    push(registry, img, "acme/base:1", tmp_path / "pusher")
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    got = pull_image(parse_registry_ref(f"docker://{registry.host}/acme/base:1"), None, options)
    assert got.digest == img.digest and [layer.read() for layer in got.layers] == [layer.read() for layer in img.layers]
    assert got.config.read() == img.config.read()
    accept = [r.headers["accept"] for r in registry.srv.requests if "/manifests/" in r.path and r.method == "GET"]
    assert all(t in accept[0] for t in ("application/vnd.oci.image.manifest.v1+json",
                                         "application/vnd.oci.image.index.v1+json",
                                         "application/vnd.docker.distribution.manifest.v2+json",
                                         "application/vnd.docker.distribution.manifest.list.v2+json"))
    blob_gets = registry.srv.count("GET", "/blobs/")
    # by tag: the manifest only
    got = pull_image(parse_registry_ref(f"{registry.host}/acme/base:1"), None, options)
    assert registry.srv.count("GET", "/blobs/") == blob_gets
    n = len(registry.srv.requests)
    registry.srv.stop()
    got = pull_image(parse_registry_ref(f"{registry.host}/acme/base@{img.digest}"), None, options)
    assert got.digest == img.digest and len(registry.srv.requests) == n


def test_pull_picks_the_platform_from_an_index(registry, tmp_path):
    amd, arm = make_image(100, seed=1), make_image(200, seed=2, arch="arm64")
    push(registry, amd, "acme/multi:amd", tmp_path)
    push(registry, arm, "acme/multi:arm", tmp_path)
    da = Descriptor(amd.media_type, amd.digest, len(amd.manifest), platform=AMD64)
    dr = Descriptor(arm.media_type, arm.digest, len(arm.manifest), platform=Platform("linux", "arm64"))
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    with RegistryClient(registry.host, options) as c:
        put_manifest(c, parse_registry_ref(f"{registry.host}/acme/multi"), "all", index_json([da, dr]), OCI_INDEX)
    arm64 = Platform("linux", "arm64")
    assert pull_image(parse_registry_ref(f"{registry.host}/acme/multi:all"), arm64, options).digest == arm.digest
    assert pull_image(parse_registry_ref(f"{registry.host}/acme/multi:all"), AMD64, options).digest == amd.digest
    with pytest.raises(InputError, match="no image for linux/s390x"):
        pull_image(parse_registry_ref(f"{registry.host}/acme/multi:all"), Platform("linux", "s390x"), options)


def test_pull_of_a_missing_image(registry, tmp_path):
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RegistryError, match=r"^docker://.*/acme/none:1: not found on .*MANIFEST_UNKNOWN"):
        pull_image(parse_registry_ref(f"{registry.host}/acme/none:1"), None, options)


def test_pull_digest_mismatch_names_blob_and_registry(registry, tmp_path):
    img = make_image(1000)
    push(registry, img, "acme/base:1", tmp_path / "p")
    layer = img.layers[0].descriptor.digest
    registry.corrupt.add(layer)
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(BlobError) as e:
        pull_image(parse_registry_ref(f"{registry.host}/acme/base:1"), None, options)
    assert f"layer {layer} from {registry.host}/acme/base is corrupt" in str(e.value)
    assert not os.path.exists(BlobCache(str(tmp_path / "cache")).path(layer))
    assert [n for n in os.listdir(tmp_path / "cache" / "blobs" / "sha256") if n.startswith(".")] == []


def test_pull_resumes_a_dropped_download_with_range(registry, tmp_path):
    img = make_image(300_000)
    push(registry, img, "acme/base:1", tmp_path / "p")
    layer = img.layers[0].descriptor.digest
    registry.truncate_once[layer] = 100_000
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    sleeps = Sleeps()
    with Puller(parse_registry_ref(f"{registry.host}/acme/base:1"), options,
                RegistryClient(registry.host, options, sleep=sleeps)) as p:
        got = p.image(AMD64)
    assert got.layers[0].read() == img.layers[0].read()
    ranges = [r.headers.get("range") for r in registry.srv.requests if r.path.endswith(layer) and r.method == "GET"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0


def test_pulled_blobs_are_verified_when_read_from_the_cache(registry, tmp_path):
    img = make_image(1000)
    push(registry, img, "acme/base:1", tmp_path / "p")
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    got = pull_image(parse_registry_ref(f"{registry.host}/acme/base:1"), None, options)
    path = BlobCache(str(tmp_path / "cache")).path(img.layers[0].descriptor.digest)
    with open(path, "r+b") as f:           # damaged after the pull: the read says so
        f.write(b"Z")
    with pytest.raises(BlobError, match="cached in .* is corrupt"):
        got.layers[0].read()


def test_a_damaged_cached_blob_is_fetched_again_not_trusted_by_size(registry, tmp_path):
    """Issue 9, item 8: a same-size damaged copy in the cache does not fail
    every later pull; it is noticed by its digest and fetched again."""
    img = make_image(1000)
    push(registry, img, "acme/base:1", tmp_path / "p")
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    pull_image(parse_registry_ref(f"{registry.host}/acme/base:1"), None, options)
    path = BlobCache(str(tmp_path / "cache")).path(img.layers[0].descriptor.digest)
    with open(path, "r+b") as f:
        f.write(b"Z")
    gets = registry.srv.count("GET", "/blobs/")
    got = pull_image(parse_registry_ref(f"{registry.host}/acme/base@{img.digest}"), None, options)
    assert got.layers[0].read() == img.layers[0].read()
    assert registry.srv.count("GET", "/blobs/") == gets + 1       # that one blob, again


def test_cache_locations_are_a_bounded_hint(tmp_path):
    c = BlobCache(str(tmp_path))
    d = "sha256:" + "c" * 64
    for i in range(40):
        c.remember(d, "h:1", f"r{i}")
    c.remember(d, "h:1", "r5")
    got = c.locations(d)
    assert len(got) <= 16 and got[-1] == "h:1/r5" and len(set(got)) == len(got)


@pytest.mark.parametrize("typed", ["acme/base:1", "acme/base"])
def test_a_registry_base_is_recorded_by_the_name_given(registry, tmp_path, typed):
    """org.opencontainers.image.base.name is the reference as the user wrote
    it after docker:// (not a normalised form: the digest must not change
    with how ocibuild spells names), base.digest the pulled manifest's."""
    from ocibuild.oci.assembly import Request
    from ocibuild.oci.model import ANN_BASE_DIGEST, ANN_BASE_NAME
    from ocibuild.transports import assemble_image
    base = make_image(100)
    for tag in ("1", "latest"):
        push(registry, base, f"acme/base:{tag}", tmp_path / "push")
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    with WorkStore(str(tmp_path)) as work:
        image = assemble_image(Request(adds=(), base=f"docker://{registry.host}/{typed}", platform=AMD64),
                               work, options)
    ann = json.loads(image.manifest)["annotations"]
    assert ann[ANN_BASE_NAME] == f"{registry.host}/{typed}"
    assert ann[ANN_BASE_DIGEST] == base.digest


# -- issue 9, item 8: credentials stay out of messages and off plain HTTP --------------

def _echoing(status: int, challenge: dict | None = None):
    """A registry that puts the request's Authorization into its error message."""
    def handle(r):
        auth = r.headers.get("authorization", "")
        if not auth and challenge:
            return Reply(401, challenge)
        body = json.dumps({"errors": [{"code": "DENIED", "message": f"not allowed for {auth}"}]}).encode()
        return Reply(status, {"Content-Type": "application/json"}, body)
    return handle


def test_a_registry_echoing_basic_credentials_does_not_get_them_printed(serve, tmp_path):
    srv = serve(_echoing(403, {"WWW-Authenticate": 'Basic realm="registry"'}))
    cfg = _config(tmp_path, {"auths": {srv.host: {"auth": _b64("alice:topsecret")}}})
    with client_for(srv, auth_files=(cfg,)) as c:
        resp = c.request("GET", "/v2/a/manifests/1")
        msg = str(c.error(resp, "the pull of a"))
    assert "DENIED: not allowed for Basic <redacted>" in msg, msg
    assert "topsecret" not in msg and _b64("alice:topsecret") not in msg


def test_a_registry_echoing_a_bearer_token_does_not_get_it_printed(serve, tmp_path):
    ts = TokenServer(serve)
    real = ts.handle

    def handle(r):
        if r.path != "/token" and r.headers.get("authorization", "").startswith("Bearer "):
            return _echoing(403)(r)
        return real(r)
    ts.srv.handler = handle
    cfg = _config(tmp_path, {"auths": {ts.srv.host: {"auth": _b64("alice:pw")}}})
    with client_for(ts.srv, auth_files=(cfg,)) as c:
        resp = c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"}))
        msg = str(c.error(resp, "the pull of a"))
        token = c.auth.token(frozenset({"repository:a:pull"}))
    assert token and token not in msg and "Bearer <redacted>" in msg, msg


def test_basic_credentials_never_go_to_a_plain_http_realm_on_another_host(serve, tmp_path):
    """The registry is insecure (plain HTTP, the user said so), but its token
    server is another host on plain HTTP that the user did not name."""
    realm = serve(lambda r: Reply(200, {"Content-Type": "application/json"}, b'{"token":"t"}'))
    other = f"localhost:{realm.port}"              # another host name than the registry's 127.0.0.1
    reg = serve(lambda r: Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{other}/token",service="s"'}))
    cfg = _config(tmp_path, {"auths": {reg.host: {"auth": _b64("alice:pw")}}})
    with client_for(reg, auth_files=(cfg,)) as c, pytest.raises(RegistryError, match="plain-HTTP token server"):
        c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"}))
    assert realm.requests == []
    # Named by the user, it is used.
    opts = RegistryOptions(insecure=frozenset({reg.host, other}), auth_files=(cfg,))
    with RegistryClient(reg.host, opts, sleep=Sleeps()) as c:
        c.request("GET", "/v2/a/manifests/1", scopes=frozenset({"repository:a:pull"}))
    assert realm.requests and {r.path for r in realm.requests} == {"/token"}


def test_a_manifest_cut_off_on_the_way_is_fetched_again(registry, tmp_path):
    """Issue 9, item 8: a truncated manifest response is retried like a blob."""
    img = make_image(100)
    push(registry, img, "acme/base:1", tmp_path / "p")
    real, cut = registry.handle, []

    def truncating(r):
        reply = real(r)
        if r.method == "GET" and "/manifests/" in r.path and not cut:
            cut.append(r.path)
            reply.truncate = 10
        return reply
    registry.srv.handler = truncating
    options = RegistryOptions(insecure=frozenset({registry.host}), cache_dir=str(tmp_path / "cache"))
    with Puller(parse_registry_ref(f"{registry.host}/acme/base:1"), options,
                RegistryClient(registry.host, options, sleep=Sleeps())) as p:
        got = p.image(AMD64)
    assert cut and got.digest == img.digest


def test_a_damaged_blob_in_an_output_layout_is_rewritten(tmp_path):
    """Issue 9, item 8: an existing same-size blob is trusted by digest."""
    from ocibuild.oci.layout import blob_name
    from ocibuild.transports import open_image, open_output
    img = make_image(1000)
    layout = tmp_path / "lay"
    for attempt in range(2):
        with WorkStore(str(tmp_path)) as work:
            out = open_output(f"oci:{layout}:v1", 0)
            out.check()
            write_all([out], img, work)
        if attempt == 0:
            path = layout / blob_name(img.layers[0].descriptor.digest)
            data = bytearray(path.read_bytes())
            data[0] ^= 0xFF
            path.write_bytes(bytes(data))
    assert open_image(f"oci:{layout}:v1").layers[0].read() == img.layers[0].read()


# --- push start-up: one probe, blobs in parallel, lazy imports (issue 13) ------------------

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


class SaysItIsARegistry(FakeRegistry):
    """As distribution: Docker-Distribution-API-Version on every answer."""

    def handle(self, r: Req):
        reply = super().handle(r)
        if isinstance(reply, Reply):
            reply = dataclasses.replace(reply, headers={**reply.headers, **API_VERSION})
        return reply


def _output(host: str, name: str, tmp_path, sleeps=None, **opts) -> RegistryOutput:
    options = RegistryOptions(cache_dir=str(tmp_path / "cache"), **opts)
    return RegistryOutput(parse_registry_ref(f"{host}/{name}"), options,
                          client=RegistryClient(host, options, sleep=sleeps if sleeps is not None else Sleeps()))


def test_check_is_one_request_where_the_registry_says_it_is_one(serve, tmp_path):
    """check()'s HEAD of a probe blob is the first request: it finds the
    scheme (plain HTTP here, a loopback registry) and the challenge itself.
    Only an answer without Docker-Distribution-API-Version is followed by
    GET /v2/, whose 200 or 401 says a registry answered."""
    probe = "/v2/acme/cc/blobs/sha256:" + "0" * 64
    for kind, paths in ((SaysItIsARegistry, [probe]), (FakeRegistry, [probe, "/v2/"])):
        reg = kind(serve)
        out = _output(reg.host, "acme/cc:1", tmp_path)
        out.check()
        assert [(r.method, r.path) for r in reg.srv.requests] == list(zip(["HEAD", "GET"], paths, strict=False))
        assert out.client.ping() == f"http://{reg.host}"        # found: no request more
        assert len(reg.srv.requests) == len(paths)
        out.abort()


def test_check_still_refuses_a_web_server_that_is_no_registry(serve, tmp_path):
    srv = serve(lambda r: Reply(404, body=b"no such page"))
    with pytest.raises(RegistryError, match=r"does not look like an OCI registry: GET /v2/ answered 404"):
        _output(srv.host, "acme/cc:1", tmp_path).check()
    srv = serve(lambda r: Reply(401, {"WWW-Authenticate": "Negotiate"}))
    with pytest.raises(RegistryError, match="asks for an authentication scheme ocibuild does not speak"):
        _output(srv.host, "acme/cc:1", tmp_path).check()


def test_check_learns_the_challenge_from_its_probe_and_renews_a_refused_token(serve, tmp_path):
    """Anonymous first (nothing is known yet), the probe's 401 teaches the
    Bearer challenge; a fresh token the registry still refuses is renewed
    once, as it was after a ping."""
    ts = TokenServer(serve)
    real, refused = ts.handle, []

    def handle(r):
        if r.path != "/token" and r.headers.get("authorization", "").startswith("Bearer ") and not refused:
            refused.append(r)
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="http://{ts.srv.host}/token",service="test"'})
        return real(r)
    ts.srv.handler = handle
    cfg = _config(tmp_path, {"auths": {ts.srv.host: {"auth": _b64("alice:pw")}}})
    _output(ts.srv.host, "acme/cc:1", tmp_path, auth_files=(cfg,)).check()
    assert ts.issued == [["repository:acme/cc:pull,push"]] * 2
    heads = [r for r in ts.srv.requests if r.method == "HEAD"]
    assert len(heads) == 3 and "authorization" not in heads[0].headers and refused == [heads[1]]


class Slow(FakeRegistry):
    """Each blob request takes `delay` s; the most of them in flight at once,
    and the order requests finished in, are recorded."""

    def __init__(self, serve, delay: float = 0.05):
        self.delay, self.in_flight, self.most, self.finished = delay, 0, 0, []
        self._counting = threading.Lock()
        super().__init__(serve)

    def handle(self, r: Req):
        blob = "/blobs/" in r.path
        if blob:
            with self._counting:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            time.sleep(self.delay)
        try:
            return super().handle(r)
        finally:
            if blob:
                with self._counting:
                    self.in_flight -= 1
            self.finished.append((r.method, r.path))


@pytest.mark.parametrize("parallel", [1, 4])
def test_blobs_go_in_parallel_bounded_the_largest_first_all_before_any_manifest(serve, tmp_path, parallel):
    reg = Slow(serve)
    img = make_image(100, 600, 300, 500, 200, 400)
    out = push(reg, img, "acme/cc:1", tmp_path, parallel=parallel)
    assert (out.stats.uploaded, out.stats.present) == (7, 0)
    assert reg.most == 1 if parallel == 1 else 1 < reg.most <= parallel
    blobs = [i for i, (_, path) in enumerate(reg.finished) if "/blobs/" in path]
    manifests = [i for i, (_, path) in enumerate(reg.finished) if "/manifests/" in path]
    assert max(blobs) < min(manifests)
    if parallel == 1:
        heads = [path.rsplit("/", 1)[1] for m, path in reg.finished if m == "HEAD"][1:]    # after the probe
        assert heads == [b.descriptor.digest for b in sorted(img.blobs(), key=lambda b: -b.descriptor.size)]


def test_an_index_goes_blobs_images_referrers_index_then_fallback_tags_then_its_tag(serve, tmp_path):
    from ocibuild.oci.imageset import image_set, referrer
    from ocibuild.registry.push import fallback_tag
    reg = FakeRegistry(serve)
    amd, arm = make_image(100, seed=1), make_image(200, seed=2, arch="arm64")
    plain = image_set([amd, arm])
    refs = tuple(referrer(i.descriptor(), "application/spdx+json", f'{{"n": {n}}}'.encode(), 0)
                 for n, i in enumerate(plain.images))
    images = plain.with_referrers(refs)
    push(reg, images, "acme/multi:v1", tmp_path)
    requests = [(r.method, r.path) for r in reg.srv.requests]
    puts = [path.rsplit("/", 1)[1] for m, path in requests if m == "PUT" and "/manifests/" in path]
    assert set(puts[:2]) == {amd.digest, arm.digest}
    assert set(puts[2:4]) == {r.digest for r in refs}
    assert puts[4] == images.digest
    assert set(puts[5:7]) == {fallback_tag(amd.digest), fallback_tag(arm.digest)}
    assert puts[7:] == ["v1"]
    assert max(i for i, (_, path) in enumerate(requests) if "/blobs/" in path) < \
        min(i for i, (_, path) in enumerate(requests) if "/manifests/" in path)


def test_a_refused_blob_stops_the_others_and_is_the_error_said(serve, tmp_path):
    img = make_image(300, 5000, 6000)
    refused = img.layers[0].descriptor.digest
    reg = FakeRegistry(serve)
    real = reg.handle

    def handle(r):
        if r.method == "PUT" and r.query.get("digest") == [refused]:
            return FakeRegistry.error(403, "DENIED", "requested access to the resource is denied")
        if r.method == "PATCH":
            time.sleep(0.05)
        return real(r)
    reg.srv.handler = handle
    with pytest.raises(RegistryError) as e:
        push(reg, img, "acme/cc:1", tmp_path, chunk_size=1000)
    assert "403: DENIED: requested access to the resource is denied" in str(e.value), e.value
    assert "stopped" not in str(e.value) and f"{reg.host}/acme/cc:1 was left as it was" in str(e.value)
    assert reg.uploads == {}, "an upload session was left open"
    assert reg.manifests == {} and reg.srv.count("PATCH") < 11        # the chunked ones stopped early


def test_a_blob_waiting_to_retry_cancels_its_session_when_another_fails(serve, tmp_path):
    img = make_image(300, 5000)
    refused = img.layers[0].descriptor.digest
    reg = FakeRegistry(serve)
    real = reg.handle

    def handle(r):
        if r.method == "PUT" and r.query.get("digest") == [refused]:
            return FakeRegistry.error(403, "DENIED", "requested access to the resource is denied")
        return Reply(503) if r.method == "PATCH" else real(r)
    reg.srv.handler = handle
    options = RegistryOptions(insecure=frozenset({reg.host}), cache_dir=str(tmp_path / "cache"), chunk_size=1000)
    clients: list[RegistryClient] = []
    # The chunked blob's backoff lasts until the other blob has failed.
    client = RegistryClient(reg.host, options, sleep=lambda s: clients[0].stopping.wait(10))
    clients.append(client)
    out = RegistryOutput(parse_registry_ref(f"{reg.host}/acme/cc:1"), options, client=client)
    out.check()
    with WorkStore(str(tmp_path)) as work, pytest.raises(RegistryError, match="403: DENIED"):
        write_all([out], img, work)
    assert reg.uploads == {}, "the session waiting to retry was left open"
    assert reg.srv.count("DELETE") == 2 and reg.manifests == {}


def test_an_interrupt_stops_every_thread_and_cancels_their_sessions(serve, tmp_path):
    import signal
    reg = FakeRegistry(serve)
    real, patching = reg.handle, threading.Event()

    def handle(r):
        if r.method == "PATCH":
            patching.set()
            time.sleep(0.1)
        return real(r)
    reg.srv.handler = handle
    main = threading.get_ident()
    threading.Thread(target=lambda: patching.wait(30) and signal.pthread_kill(main, signal.SIGINT),
                     daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        push(reg, make_image(4000, 5000), "acme/cc:1", tmp_path, chunk_size=1000)
    assert reg.srv.count("PATCH") < 4 + 5, "the threads did not stop at their next chunk"
    assert reg.uploads == {} and reg.manifests == {}


def test_a_plain_http_loopback_registry_never_loads_the_system_cas(registry, serve, tls_cert, tmp_path):
    """No flag: the loopback registry is asked below HTTP whether it answers
    TLS in plain HTTP; it does, so the CA bundle is never parsed. A loopback
    registry that speaks TLS gets them loaded at its first handshake."""
    out = _output(registry.host, "acme/cc:1", tmp_path)
    out.check()
    with WorkStore(str(tmp_path)) as work:
        write_all([out], make_image(100), work)
    assert registry.tags("acme/cc") == {"1"}
    assert out.client.tls_context is not None and not out.client.tls_context.system_cas_loaded
    srv = serve(lambda r: Reply(200), tls=tls_cert)
    (tmp_path / "certs" / srv.host).mkdir(parents=True)
    (tmp_path / "certs" / srv.host / "ca.crt").write_bytes(Path(tls_cert[0]).read_bytes())
    with RegistryClient(srv.host, RegistryOptions(certs_dirs=(str(tmp_path / "certs"),))) as c:
        assert not c.tls_context.system_cas_loaded
        assert c.ping() == f"https://{srv.host}"
        assert c.tls_context.system_cas_loaded
    assert answers_tls_in_plain_http(registry.host) and not answers_tls_in_plain_http(srv.host)
    assert not answers_tls_in_plain_http(f"127.0.0.1:{free_port()}")       # nobody there: the HTTPS attempt says


IMPORTED = """import atexit, os, sys
def said():
    sys.stderr.write("IMPORTED " + " ".join(sorted(m for m in sys.modules if m.partition(".")[0] in
                     ("httpx", "httpcore", "h11", "rich", "pygments"))) + "\\n")
    sys.stderr.flush()
atexit.register(said)
_exit = os._exit                      # a finished run skips atexit (ocibuild.__main__._done)
os._exit = lambda status: (atexit.unregister(said), said(), _exit(status))
sys.argv = ["ocibuild", *sys.argv[1:]]
from ocibuild.__main__ import main
main()
"""


def _imported(tmp_path, *args: str) -> set[str]:
    """The HTTP and terminal modules `ocibuild ARGS` imported."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OCIBUILD_CACHE_DIR", "SOURCE_DATE_EPOCH")}
    env.update(HOME=str(tmp_path / "home"), OCIBUILD_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", IMPORTED, *args], capture_output=True, text=True, env=env,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    [line] = [line for line in p.stderr.splitlines() if line.startswith("IMPORTED")]
    return set(line.split()[1:])


def test_commands_that_reach_no_registry_never_import_httpx(tmp_path):
    (tmp_path / "f").write_text("x\n")
    assert _imported(tmp_path, "--help") & {"httpx", "httpcore", "h11"} == set()
    assert _imported(tmp_path, "assemble", "--help") & {"httpx", "httpcore", "h11"} == set()
    assert _imported(tmp_path, "-q", "assemble", "--base", "static-bare", "--add", f"{tmp_path / 'f'}:/f",
                     "--output", f"oci:{tmp_path / 'lay'}:v1") & {"httpx", "httpcore", "h11"} == set()


def test_a_push_imports_httpx_without_its_command_line_client(registry, tmp_path):
    (tmp_path / "f").write_text("x\n")
    got = _imported(tmp_path, "-q", "assemble", "--base", "static-bare", "--add", f"{tmp_path / 'f'}:/f",
                    "--output", f"docker://{registry.host}/acme/cc:1")
    assert {"httpx", "httpcore", "h11"} <= got
    assert "httpx._main" not in got and not {m for m in got if m.partition(".")[0] in ("rich", "pygments")}, got
    assert "1" in registry.tags("acme/cc")           # and its SBOM's fallback tag


# --- a real plain-HTTP registry on 127.0.0.1, through the CLI -------------------------------

PLAIN_PASSWORD = f"Pl4in-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory):
    """Debian's docker-registry, plain HTTP and htpasswd (alice), on 127.0.0.1."""
    from registry_harness import Registry, write_htpasswd
    d = tmp_path_factory.mktemp("plain-registry")
    reg = Registry(d, tls=None, htpasswd=write_htpasswd(d / "htpasswd", {"alice": PLAIN_PASSWORD}))
    reg.start()
    yield reg
    reg.stop()


def _auth_json(path: Path, password: str, *hosts: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {h: {"auth": _b64(f"alice:{password}")} for h in hosts}}))
    return path


def _cli(*args, home: Path, **env):
    from conftest import run_ocibuild
    unset = ("SOURCE_DATE_EPOCH", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
             "XDG_CACHE_HOME", "OCIBUILD_CACHE_DIR")
    return run_ocibuild(*args, env={"HOME": str(home), **env}, unset=unset)


@pytest.mark.registry
def test_cli_plain_loopback_registry_with_authfile(plain_registry, tmp_path):
    reg = plain_registry
    home = tmp_path / "home"
    good = _auth_json(tmp_path / "good.json", PLAIN_PASSWORD, reg.hostport, f"localhost:{reg.port}")
    (tmp_path / "f").write_text(f"{uuid.uuid4()}\n")
    ref = f"docker://{reg.hostport}/plain/cc:1"
    r = _cli("-q", "assemble", "--add", f"{tmp_path / 'f'}:/f", "--output", ref, "--authfile", good, home=home)
    assert r.returncode == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}\n", r.stdout), r.stderr
    digest = r.stdout.strip()
    # Read back under the name localhost:PORT, no flag either; REGISTRY_AUTH_FILE as --authfile's default.
    r = _cli("inspect", f"docker://localhost:{reg.port}/plain/cc:1", home=home, REGISTRY_AUTH_FILE=str(good))
    assert r.returncode == 0 and f"digest      {digest}" in r.stdout, r.stderr
    # A wrong password: a registry error naming the file, never the secret.
    wrong = _auth_json(tmp_path / "wrong.json", "Wr0ng-pass", reg.hostport)
    r = _cli("-q", "inspect", ref, "--authfile", wrong, home=home)
    assert r.returncode == 5 and r.stdout == "", r
    assert str(wrong) in r.stderr and "Wr0ng-pass" not in r.stderr and _b64("alice:Wr0ng-pass") not in r.stderr
    # --authfile is the only file read: the good login in the default places is not used.
    _auth_json(tmp_path / "run" / "containers" / "auth.json", PLAIN_PASSWORD, reg.hostport)
    r = _cli("-q", "inspect", ref, "--authfile", wrong, home=home, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    assert r.returncode == 5 and str(wrong) in r.stderr, r.stderr
    # No credentials at all: the error says where they were looked for.
    r = _cli("-q", "inspect", ref, home=home)
    assert r.returncode == 5 and "~/.config/containers/auth.json" in r.stderr and "login" in r.stderr, r.stderr
    # A missing --authfile: bad input, before any request.
    r = _cli("-q", "inspect", ref, "--authfile", tmp_path / "nope.json", home=home)
    assert r.returncode == 3 and "nope.json does not exist" in r.stderr, r.stderr


@pytest.mark.registry
def test_cli_default_lookup_order(plain_registry, tmp_path):
    """$XDG_RUNTIME_DIR/containers/auth.json before docker's config.json: the
    first file holding a login for the registry is used, right or wrong."""
    reg = plain_registry
    home = tmp_path / "home"
    ref = f"docker://{reg.hostport}/plain/order:1"
    (tmp_path / "f").write_text(f"{uuid.uuid4()}\n")
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    runtime = _auth_json(tmp_path / "run" / "containers" / "auth.json", PLAIN_PASSWORD, reg.hostport)
    docker = _auth_json(tmp_path / "docker" / "config.json", "Wr0ng-pass", reg.hostport)
    r = _cli("-q", "assemble", "--add", f"{tmp_path / 'f'}:/f", "--output", ref, home=home, **env)
    assert r.returncode == 0, r.stderr
    _auth_json(runtime, "Wr0ng-pass", reg.hostport)
    _auth_json(docker, PLAIN_PASSWORD, reg.hostport)
    r = _cli("-q", "inspect", ref, home=home, **env)
    assert r.returncode == 5 and str(runtime) in r.stderr, r.stderr
    runtime.unlink()
    r = _cli("-q", "inspect", ref, home=home, **env)
    assert r.returncode == 0, r.stderr
