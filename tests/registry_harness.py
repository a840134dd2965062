"""A real registry environment on 127.0.0.1 for tests/test_registry_e2e.py.

Everything here is started and stopped by the tests; nothing stays running:

- `make_certs`: a throw-away CA, a server certificate for 127.0.0.1 (and
  localhost) signed by it, and a self-signed RSA key pair that signs the
  token server's JWTs (the token registry's `rootcertbundle`).
- `CaDirs`: installs the CA as /etc/docker/certs.d/127.0.0.1:PORT/ca.crt for
  the ports that should be trusted and removes exactly what it created.
- `Registry`: Debian's `docker-registry` (distribution 2.8), TLS or plain
  HTTP, htpasswd or token auth, storage in a temporary directory. Its access
  log (stdout, Apache combined format) is how tests count requests.
- `TokenServer`: the Bearer realm, issuing RS256 JWTs (header `x5c` = the
  signing certificate, which distribution 2.8 verifies against
  rootcertbundle) for the scopes a user may have, and recording every request.
- `Proxy`: a TLS-terminating HTTP proxy in front of a plain-HTTP registry,
  recording every request and able to inject faults (a 400 with a JSON error,
  429/503 with Retry-After, a lying HEAD, a redirect of blob downloads to
  another origin served by `BlobHost`).
- `ConnCounter`: a listener that accepts and drops connections and counts
  them: put on a stopped registry's port, it shows whether anyone called.
- Credential files: docker config.json (auths, credHelpers, credsStore),
  podman auth.json, and a `docker-credential-*` helper that logs its calls.

Distribution 2.8 (Debian 2.8.2+ds1) quirks met while writing this:
- The access log (Apache combined) goes to stdout, application logs
  (logrus, `log.level`) to stderr. A line is written when the handler
  returns, so `Registry.sync()` waits for a marker request before counting.
- The configuration may be JSON: its YAML parser reads it.
- `Location` is absolute, built from the request's Host and
  X-Forwarded-Proto (a TLS-terminating proxy must send `https`), unless
  `http.relativeurls: true`, which the proxied registry uses so that
  relative Locations get tested too.
- htpasswd auth works over plain HTTP too; bcrypt cost 5 keeps it fast.
- `auth.token` accepts an RS256 JWT whose header `x5c` holds the signing
  certificate, verified against `rootcertbundle` (a self-signed signer that
  is itself the bundle works); `iss` must equal `issuer`, `aud` `service`.
- A mount (`POST ?mount=&from=`) needs pull on the source: with token auth
  the registry names both scopes in one challenge, so one token must carry
  `repository:TARGET:pull,push` and `repository:SOURCE:pull`.
- DELETE of an upload session answers 204 but leaves
  `_uploads/<uuid>/hashstates/` behind (and logs "error closing
  blobwriter ... file already closed"); an open session has `startedat`.
- A PATCH cut mid-body keeps the bytes that arrived, but the client's
  `_state` still names the old offset: the session then refuses it for
  good ("upload resumed at wrong offest", 404 to GET and DELETE). Resuming
  works only when the cut chunk left no byte; else a new session is needed.
- The filesystem driver serves blob bytes as stored, unverified: changing
  `blobs/sha256/xx/HEX/data` in place makes a corrupt blob to pull.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BIN = Path("/usr/bin/docker-registry")
CERTS_D = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))
LOCALHOST = "127.0.0.1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX,
                             "application/vnd.docker.distribution.manifest.v2+json",
                             "application/vnd.docker.distribution.manifest.list.v2+json"])


def die_with_parent() -> None:
    """In a child, before exec: SIGKILL when the test process dies, however
    it dies, so no registry outlives the tests."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def secret_forms(user: str, password: str) -> list[str]:
    """Every form in which a password could leak: itself, and the base64 of
    user:password (as in config.json and an Authorization header)."""
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


# --- certificates -----------------------------------------------------------------------

@dataclass
class Certs:
    dir: Path
    ca_cert: Path               # PEM: what goes into certs.d/HOST:PORT/ca.crt
    server_cert: Path           # PEM: 127.0.0.1 and localhost, signed by the CA
    server_key: Path
    signer_cert: Path           # PEM: self-signed RSA, the token registry's rootcertbundle
    signer_der: bytes
    signer_key: object          # cryptography RSA private key

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_certs(d: Path) -> Certs:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocibuild tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def usage(**on) -> x509.KeyUsage:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                     crl_sign=False, encipher_only=False, decipher_only=False)
        flags.update(on)
        return x509.KeyUsage(**flags)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder()
          .subject_name(name("ocibuild test CA")).issuer_name(name("ocibuild test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(usage(digital_signature=True), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.ip_address(LOCALHOST)), x509.DNSName("localhost")]),
                  critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))

    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = (x509.CertificateBuilder()
              .subject_name(name("ocibuild test token signer"))
              .issuer_name(name("ocibuild test token signer"))
              .public_key(signer_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(usage(digital_signature=True), critical=True)
              .sign(signer_key, hashes.SHA256()))

    paths = {"ca.crt": pem(ca), "server.crt": pem(server) + pem(ca), "server.key": key_pem(server_key),
             "signer.crt": pem(signer), "signer.key": key_pem(signer_key)}
    for fname, data in paths.items():
        (d / fname).write_bytes(data)
        (d / fname).chmod(0o600 if fname.endswith(".key") else 0o644)
    return Certs(d, d / "ca.crt", d / "server.crt", d / "server.key", d / "signer.crt",
                 signer.public_bytes(serialization.Encoding.DER), signer_key)


MARKER = "ocibuild-test-ca"      # a file docker and podman ignore: "made by these tests"


class CaDirs:
    """Installs the CA for chosen HOST:PORTs under /etc/docker/certs.d (or
    another certs.d) and removes exactly what it created (and certs.d itself
    if it created it). Each directory carries a marker file, so that
    `sweep()` can remove what a killed test session left behind."""

    def __init__(self, ca_cert: Path, base: Path = CERTS_D[0]):
        self.ca_cert, self.base = ca_cert, base
        self.dirs: list[Path] = []

    def trust(self, hostport: str) -> Path:
        try:
            self.base.mkdir(parents=True)
            # Made by a test session: whichever session finishes last (test
            # runs may overlap) removes it again.
            (self.base / f".{MARKER}").write_text("")
        except FileExistsError:
            pass
        d = self.base / hostport
        assert not d.exists(), f"{d} exists already: not ours, refusing to touch it"
        d.mkdir()
        self.dirs.append(d)
        (d / MARKER).write_text(f"pid {os.getpid()}\n")
        shutil.copyfile(self.ca_cert, d / "ca.crt")
        return d

    @staticmethod
    def sweep() -> list[Path]:
        """Remove marked 127.0.0.1:PORT directories whose port nobody
        listens on any more (a test session killed before its cleanup)."""
        removed = []
        for base in CERTS_D:
            for d in base.glob(f"{LOCALHOST}:*") if base.is_dir() else ():
                try:
                    if time.time() - (d / MARKER).stat().st_mtime < 120:
                        continue                  # just made: maybe by a session still starting
                except OSError:
                    continue                      # not ours
                try:
                    socket.create_connection((LOCALHOST, int(d.name.rsplit(":", 1)[1])), timeout=1).close()
                    continue                      # in use: maybe another session's
                except (OSError, ValueError):
                    pass
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
            CaDirs._remove_base(base)
        return removed

    def untrust(self, hostport: str) -> None:
        d = self.base / hostport
        if d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
            self.dirs.remove(d)

    def remove_all(self) -> None:
        for d in list(self.dirs):
            shutil.rmtree(d, ignore_errors=True)
        self.dirs.clear()
        self._remove_base(self.base)

    @staticmethod
    def _remove_base(base: Path) -> None:
        """certs.d itself, if a test session made it and nothing else is in it."""
        marker = base / f".{MARKER}"
        try:
            if marker.exists() and [p.name for p in base.iterdir()] == [marker.name]:
                marker.unlink()
                base.rmdir()
        except OSError:
            pass


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    import bcrypt
    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the registry ---------------------------------------------------------------------------

_ACCESS = re.compile(r'^(?P<ip>\S+) \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
                     r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<agent>[^"]*)"')


@dataclass(frozen=True)
class Access:
    """One request from a registry's access log (or the proxy's record)."""
    method: str
    path: str
    query: dict            # name -> first value, decoded
    status: int
    agent: str = ""

    @property
    def repo(self) -> str:
        m = re.match(r"^/v2/(.+?)/(blobs|manifests|tags)/", self.path)
        return m.group(1) if m else ""

    @property
    def is_upload_start(self) -> bool:        # POST .../blobs/uploads/ (not a mount)
        return self.method == "POST" and self.path.endswith("/blobs/uploads/") and "mount" not in self.query

    @property
    def is_mount(self) -> bool:
        return self.method == "POST" and self.path.endswith("/blobs/uploads/") and "mount" in self.query

    @property
    def is_upload_data(self) -> bool:         # PATCH, or PUT with a body, on an upload session
        return "/blobs/uploads/" in self.path and self.method in ("PATCH", "PUT")

    @property
    def uploaded_digest(self) -> str | None:  # the digest an upload was closed with
        if self.method in ("PUT", "POST") and "/blobs/uploads/" in self.path and "mount" not in self.query:
            return self.query.get("digest")
        return None

    @property
    def is_upload_cancel(self) -> bool:       # DELETE of an upload session
        return self.method == "DELETE" and "/blobs/uploads/" in self.path

    @property
    def is_manifest_put(self) -> bool:
        return self.method == "PUT" and "/manifests/" in self.path


def _access(method: str, uri: str, status: int, agent: str = "") -> Access:
    parts = urllib.parse.urlsplit(uri)
    query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
    return Access(method, urllib.parse.unquote(parts.path), query, status, agent)


class Registry:
    """Debian's docker-registry on 127.0.0.1. `tls=None` serves plain HTTP."""

    def __init__(self, root: Path, *, tls: Certs | None, htpasswd: Path | None = None,
                 token: dict | None = None, relative_urls: bool = False, port: int | None = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.storage = root / "storage"
        self.tls, self.htpasswd, self.token, self.relative_urls = tls, htpasswd, token, relative_urls
        self.port = port or free_port()
        self.secret = secrets.token_hex(16)      # fixed across restarts: upload state stays valid
        self.access_log = root / "access.log"
        self.app_log = root / "registry.log"
        self.config = root / "config.yml"
        self.proc: subprocess.Popen | None = None

    @property
    def hostport(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def ref(self, name: str) -> str:
        return f"docker://{self.hostport}/{name}"

    def write_config(self) -> None:
        http_cfg = {"addr": self.hostport, "secret": self.secret,
                    "headers": {"X-Content-Type-Options": ["nosniff"]}}
        if self.tls:
            http_cfg["tls"] = {"certificate": str(self.tls.server_cert), "key": str(self.tls.server_key)}
        if self.relative_urls:
            http_cfg["relativeurls"] = True
        cfg = {"version": 0.1,
               "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
               "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                           "delete": {"enabled": True},
                           "maintenance": {"uploadpurging": {"enabled": False}}},
               "http": http_cfg}
        if self.htpasswd:
            cfg["auth"] = {"htpasswd": {"realm": "ocibuild-test", "path": str(self.htpasswd)}}
        elif self.token:
            cfg["auth"] = {"token": self.token}
        # JSON is YAML: distribution's parser reads it as is.
        self.config.write_text(json.dumps(cfg, indent=2))

    def start(self, timeout: float = 20) -> None:
        assert self.proc is None, "already running"
        self.write_config()
        with open(self.access_log, "ab") as out, open(self.app_log, "ab") as err:
            self.proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(self.config)],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise RuntimeError(f"docker-registry exited {code} at start:\n{self.app_tail()}")
            if self.ping() is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer /v2/ within {timeout}s:\n{self.app_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: as a crash or a power cut would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def app_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.app_log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- talking to it directly (independent of ocibuild) --

    def _conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(LOCALHOST, self.port, timeout=timeout,
                                               context=self.tls.client_context())
        return http.client.HTTPConnection(LOCALHOST, self.port, timeout=timeout)

    def ping(self) -> int | None:
        try:
            return self.request("GET", "/v2/", timeout=1)[0]
        except (OSError, http.client.HTTPException):
            return None

    def request(self, method: str, path: str, *, headers: dict | None = None,
                auth: tuple[str, str] | None = None, body: bytes | None = None,
                timeout: float = 10) -> tuple[int, dict, bytes]:
        """One request with Basic credentials (htpasswd registries)."""
        conn = self._conn(timeout)
        try:
            h = dict(headers or {})
            if auth:
                h["Authorization"] = basic(*auth)
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def manifest(self, repo: str, ref: str, auth) -> tuple[int, dict, bytes]:
        return self.request("GET", f"/v2/{repo}/manifests/{ref}", auth=auth,
                            headers={"Accept": MANIFEST_ACCEPT})

    def blob_data(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def open_uploads(self, repo: str) -> list[Path]:
        """Upload sessions of `repo` the registry still holds (not finished,
        not cancelled). Distribution 2.8 quirk: a cancelled session (DELETE,
        204) leaves its directory behind with only `hashstates/` in it; an
        open one has `startedat` (and `data`)."""
        d = self.storage / "docker/registry/v2/repositories" / repo / "_uploads"
        try:
            return sorted(p for p in d.iterdir() if (p / "startedat").exists())
        except FileNotFoundError:            # none yet, or removed as we looked
            return []

    def uploading(self) -> int:
        """Bytes received so far by the upload sessions in progress."""
        repos = self.storage / "docker/registry/v2/repositories"
        total = 0
        # os.walk, not Path.glob: the registry removes directories while we
        # look (a finished session), and walk skips what vanished.
        for d, _, files in os.walk(repos):
            if "data" in files and os.path.basename(os.path.dirname(d)) == "_uploads":
                try:
                    total += os.stat(os.path.join(d, "data")).st_size
                except FileNotFoundError:        # finished (moved) meanwhile
                    pass
        return total

    # -- its access log --

    def mark(self) -> int:
        """A position in the access log: requests after it are the next ones.
        Syncs first, so every request made before is already in the log."""
        self.sync()
        return self.access_log.stat().st_size

    def sync(self, timeout: float = 10) -> None:
        """Make a marker request and wait until the log shows it: the log
        lines of requests that completed before are written by then."""
        if self.proc is None:
            return
        token = uuid.uuid4().hex
        self.request("GET", f"/v2/?sync={token}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if token.encode() in self.access_log.read_bytes():
                return
            time.sleep(0.02)
        raise AssertionError(f"the access log of {self.hostport} never showed the marker request")

    def requests(self, since: int = 0) -> list[Access]:
        """Requests in the access log after position `since` (marker requests left out)."""
        self.sync()
        with open(self.access_log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            m = _ACCESS.match(line)
            if m and "?sync=" not in m["uri"]:
                out.append(_access(m["method"], m["uri"], int(m["status"]), m["agent"]))
        return out


# --- the Bearer token server -------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    method: str
    user: str                   # "" for anonymous
    ok: bool                    # credentials accepted (anonymous counts as accepted)
    service: str
    scopes: list[str]           # as requested, one entry per scope
    granted: list[dict]         # the JWT's access claim
    agent: str

    def asked(self, repo: str) -> set[str]:
        """The actions requested on repository `repo` in this request."""
        out: set[str] = set()
        for s in self.scopes:
            parts = s.split(":")
            if len(parts) >= 3 and parts[0] == "repository" and ":".join(parts[1:-1]) == repo:
                out |= set(parts[-1].split(","))
        return out


class _Served:
    """An in-process HTTPS server (TLS with the test CA) on its own port,
    served from a daemon thread: start() with a handler, stop() to end it.
    `self` is reachable from handlers as `self.server.<attr>`."""

    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, handler, attr: str) -> None:
        server = _TLSServer((LOCALHOST, self.port), handler, self.certs.server_context())
        setattr(server, attr, self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None


class TokenServer(_Served):
    """The Bearer realm for a registry with `auth.token`. `acl(user, repo)`
    returns the actions a user may have on a repository; anonymous users
    (no Authorization) get tokens with whatever acl("", repo) allows;
    wrong credentials get 401."""

    def __init__(self, certs: Certs, users: dict[str, str], acl: Callable[[str, str], set[str]],
                 service: str = "ocibuild-test-registry", issuer: str = "ocibuild-test-token-server"):
        self.certs, self.users, self.acl = certs, users, acl
        self.service, self.issuer = service, issuer
        self.port = free_port()
        self.requests: list[TokenRequest] = []
        self.expire_next = 0        # this many next tokens are issued already expired (said valid)
        self.lock = threading.Lock()

    @property
    def hostport(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def realm(self) -> str:
        return f"https://{self.hostport}/token"

    def registry_auth(self) -> dict:
        """The `auth.token` section for the registry's configuration."""
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": str(self.certs.signer_cert)}

    def sign(self, user: str, access: list[dict], ttl: int = 300) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.certs.signer_der).decode()]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + ttl,
                  "nbf": now - 30, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.certs.signer_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def grant(self, user: str, scopes: list[str]) -> list[dict]:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = sorted(set(actions) & self.acl(user, name)) if typ == "repository" else []
            access.append({"type": typ, "name": name, "actions": allowed})
        return access

    def start(self) -> None:
        self._serve(_TokenHandler, "token_server")

    def since(self, n: int) -> list[TokenRequest]:
        with self.lock:
            return list(self.requests[n:])


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:    # quiet
        pass

    def _reply(self, status: int, doc: dict, extra: dict | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _issue(self, user: str | None, password: str | None, scopes: list[str], service: str) -> None:
        ts: TokenServer = self.server.token_server
        agent = self.headers.get("User-Agent", "")
        if user is not None and ts.users.get(user) != password:
            with ts.lock:
                ts.requests.append(TokenRequest(self.command, user, False, service, scopes, [], agent))
            self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                        {"WWW-Authenticate": 'Basic realm="ocibuild-test-token"'})
            return
        access = ts.grant(user or "", scopes)
        with ts.lock:
            ts.requests.append(TokenRequest(self.command, user or "", True, service, scopes, access, agent))
            stale = ts.expire_next > 0
            ts.expire_next -= stale
        # A stale token (a revoked one, or a skewed clock): expired for the
        # registry, though expires_in tells the client 300 s.
        token = ts.sign(user or "", access, ttl=-600 if stale else 300)
        self._reply(200, {"token": token, "access_token": token, "expires_in": 300,
                          "issued_at": datetime.datetime.now(datetime.UTC).isoformat()})

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if parts.path != "/token":
            self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]})
            return
        qs = urllib.parse.parse_qs(parts.query)
        scopes = [s for q in qs.get("scope", []) for s in q.split(" ") if s]
        user = password = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                user, password = "", None
        self._issue(user, password, scopes, qs.get("service", [""])[0])

    def do_POST(self) -> None:
        """The OAuth2 form flow (grant_type=password), as docker uses it."""
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        scopes = [s for q in form.get("scope", []) for s in q.split(" ") if s]
        if form.get("grant_type", [""])[0] != "password":
            self._reply(400, {"error": "unsupported_grant_type"})
            return
        self._issue(form.get("username", [""])[0], form.get("password", [""])[0], scopes,
                    form.get("service", [""])[0])


# --- the counting, fault-injecting proxy ---------------------------------------------------------

@dataclass
class Fault:
    """Answer requests that `match` (method, path, query) with `status`,
    `body` and `headers` instead of forwarding them, at most `times` times
    (None: always), after letting the first `after` matching requests
    through. With `cut_after` set instead: forward the request but cut both
    connections (no response) once that many body bytes went through, as a
    network failure mid-upload would."""
    match: Callable[[str, str, dict], bool]
    status: int = 0
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    times: int | None = None
    after: int = 0
    cut_after: int | None = None
    seen: int = 0
    hits: int = 0

    def applies(self, method: str, path: str, query: dict) -> bool:
        if not self.match(method, path, query):
            return False
        self.seen += 1
        return self.seen > self.after and (self.times is None or self.hits < self.times)


@dataclass
class ProxyRecord:
    method: str
    path: str
    query: dict
    authorization: bool
    status: int = 0
    when: float = 0.0
    injected: bool = False

    @property
    def access(self) -> Access:
        return Access(self.method, self.path, self.query, self.status)


_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class Proxy(_Served):
    """TLS (the test CA) in front of a plain-HTTP registry. Every request is
    recorded; `faults` answer some requests instead of the registry;
    `redirect_blobs(prefix, blob_host)` turns a registry's 200 on a blob GET
    in repositories starting with `prefix` into a 307 to `blob_host`."""

    def __init__(self, upstream: Registry, certs: Certs):
        assert upstream.tls is None, "the proxy talks plain HTTP to its registry"
        self.upstream, self.certs = upstream, certs
        self.port = free_port()
        self.records: list[ProxyRecord] = []
        self.faults: list[Fault] = []
        self.redirects: dict[str, BlobHost] = {}
        self.lock = threading.Lock()

    @property
    def hostport(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def ref(self, name: str) -> str:
        return f"docker://{self.hostport}/{name}"

    def fault(self, f: Fault) -> Fault:
        with self.lock:
            self.faults.append(f)
        return f

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.redirects.clear()

    def redirect_blobs(self, prefix: str, host: BlobHost) -> None:
        with self.lock:
            self.redirects[prefix] = host

    def since(self, n: int) -> list[ProxyRecord]:
        with self.lock:
            return list(self.records[n:])

    def start(self) -> None:
        self._serve(_ProxyHandler, "proxy")


class _TLSServer(http.server.ThreadingHTTPServer):
    """TLS handshakes happen in the request's thread, not in accept()."""
    daemon_threads = True

    def __init__(self, addr, handler, ctx: ssl.SSLContext):
        self.ctx = ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def _request_body(handler: http.server.BaseHTTPRequestHandler):
    """The request body as an iterator of chunks, or None when there is none."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        def chunks():
            rfile = handler.rfile
            while True:
                size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    data = rfile.read(min(left, 1 << 20))
                    if not data:
                        raise ConnectionError("client went away mid-chunk")
                    left -= len(data)
                    yield data
                rfile.readline()
        return chunks()
    length = int(handler.headers.get("Content-Length") or 0)
    if not length:
        return None

    def fixed():
        left = length
        while left:
            data = handler.rfile.read(min(left, 1 << 20))
            if not data:
                raise ConnectionError("client went away mid-body")
            left -= len(data)
            yield data
    return fixed()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes | None) -> None:
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        if body is not None and not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        proxy: Proxy = self.server.proxy
        parts = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
        rec = ProxyRecord(self.command, urllib.parse.unquote(parts.path), query,
                          "Authorization" in self.headers, when=time.monotonic())
        with proxy.lock:
            proxy.records.append(rec)
            fault = next((f for f in proxy.faults if f.applies(rec.method, rec.path, rec.query)), None)
            if fault:
                fault.hits += 1
        body = _request_body(self)
        cut = None
        if fault and fault.cut_after is not None:
            cut, fault, rec.injected = fault.cut_after, None, True
        if fault:
            for _ in body or ():
                pass
            rec.status, rec.injected = fault.status, True
            self._send(fault.status, list(fault.headers.items()), fault.body)
            return
        # A list, not a dict: repeated headers (Accept) must all go through.
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP]
        headers.append(("X-Forwarded-Proto", "https"))
        chunked = body is not None and "Content-Length" not in self.headers
        up = http.client.HTTPConnection(LOCALHOST, proxy.upstream.port, timeout=120)
        try:
            up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                up.putheader(k, v)
            if chunked:
                up.putheader("Transfer-Encoding", "chunked")
            up.endheaders()
            sent = 0
            for data in body or ():
                if cut is not None and sent + len(data) >= cut:
                    data = data[:cut - sent]
                    up.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                    # Gone mid-body, both ways: no response, sockets closed.
                    rec.status = -1
                    self.close_connection = True
                    return
                up.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
            if chunked:
                up.send(b"0\r\n\r\n")
            self._relay(proxy, rec, up.getresponse())
        finally:
            up.close()

    def _relay(self, proxy: Proxy, rec: ProxyRecord, resp: http.client.HTTPResponse) -> None:
        """The upstream's response to the client (or a redirect instead of it)."""
        rec.status = resp.status
        out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
        redirect = self._redirect(proxy, rec, resp.status)
        if redirect:
            rec.status = 307
            self._send(307, [("Location", redirect), ("Docker-Distribution-Api-Version", "registry/2.0")], b"")
            return
        length = resp.getheader("Content-Length")
        if self.command == "HEAD" or resp.status in (204, 304) or length is None:
            data = resp.read()
            if self.command == "HEAD" or resp.status in (204, 304):
                self._send(resp.status, out_headers, None)
            else:
                self._send(resp.status, out_headers, data)
            return
        self.send_response_only(resp.status)
        for k, v in out_headers:
            self.send_header(k, v)
        self.end_headers()
        while True:
            data = resp.read(1 << 20)
            if not data:
                break
            self.wfile.write(data)

    def _redirect(self, proxy: Proxy, rec: ProxyRecord, status: int) -> str | None:
        if self.command != "GET" or status != 200:
            return None
        m = re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$", rec.path)
        if not m:
            return None
        for prefix, host in proxy.redirects.items():
            if m.group(1).startswith(prefix):
                return host.url(m.group(2))
        return None

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


class BlobHost(_Served):
    """Another origin (its own port, TLS with the test CA) serving blob bytes
    straight from a registry's storage, as a storage backend behind a
    redirect would. Records whether each request carried Authorization."""

    def __init__(self, registry: Registry, certs: Certs):
        self.registry, self.certs = registry, certs
        self.port = free_port()
        self.requests: list[tuple[str, bool]] = []      # (path, had Authorization)

    @property
    def hostport(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def url(self, digest: str) -> str:
        return f"https://{self.hostport}/blobs/{digest}?signature={secrets.token_hex(4)}"

    def start(self) -> None:
        self._serve(_BlobHandler, "blob_host")


class _BlobHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        host: BlobHost = self.server.blob_host
        path = urllib.parse.urlsplit(self.path).path
        host.requests.append((path, "Authorization" in self.headers))
        m = re.match(r"^/blobs/(sha256:[0-9a-f]{64})$", path)
        data_path = host.registry.blob_data(m.group(1)) if m else None
        if data_path is None or not data_path.exists():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(data_path.stat().st_size))
        self.end_headers()
        with open(data_path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)


# --- a port that answers nobody -------------------------------------------------------------

class ConnCounter:
    """Listens on a port, accepts and drops every connection, counts them."""

    def __init__(self, port: int):
        self.port = port
        self.count = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOCALHOST, port))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


# --- credentials ---------------------------------------------------------------------------

def write_docker_config(d: Path, *, auths: dict[str, tuple[str, str]] | None = None,
                        cred_helpers: dict[str, str] | None = None,
                        creds_store: str | None = None) -> Path:
    """DOCKER_CONFIG=d: d/config.json."""
    d.mkdir(parents=True, exist_ok=True)
    doc: dict = {"auths": {h: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
                           for h, (u, p) in (auths or {}).items()}}
    if cred_helpers:
        doc["credHelpers"] = cred_helpers
    if creds_store:
        doc["credsStore"] = creds_store
    path = d / "config.json"
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


def write_podman_auth(runtime_dir: Path, auths: dict[str, tuple[str, str]]) -> Path:
    """$XDG_RUNTIME_DIR/containers/auth.json, as `podman login` writes it."""
    d = runtime_dir / "containers"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "auth.json"
    path.write_text(json.dumps({"auths": {h: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
                                          for h, (u, p) in auths.items()}}, indent=2))
    path.chmod(0o600)
    return path


_HELPER = '''#!{python}
# docker-credential-{name}: a test credential helper (get only); logs its calls.
import json, sys
creds = {creds!r}
action = sys.argv[1] if len(sys.argv) > 1 else ""
server = sys.stdin.read().strip()
with open({log!r}, "a") as f:
    f.write(json.dumps([action, server]) + "\\n")
if action != "get":
    sys.exit(0)
key = server.split("://", 1)[-1].rstrip("/")
if key not in creds:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = creds[key]
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
'''


def write_cred_helper(bin_dir: Path, name: str, creds: dict[str, tuple[str, str]], log: Path) -> Path:
    """bin_dir/docker-credential-NAME answering `get` for HOST:PORT keys."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(_HELPER.format(python=sys.executable, name=name, creds=creds, log=str(log)))
    path.chmod(0o755)
    return path


def helper_calls(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines() if line.strip()]


# --- skopeo, as the independent reader ----------------------------------------------------------

def skopeo(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
