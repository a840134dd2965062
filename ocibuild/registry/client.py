"""One registry host: its HTTP client, TLS context and auth state, and the
one place requests are made — retried with backoff on connection errors and
5xx/429, authenticated (Basic or Bearer tokens per scope set), redirects
followed here so Authorization never reaches another host.

One client serves several threads at once (a push's blobs go in parallel):
httpx's pool keeps a connection per thread alive, the scheme is found once
and tokens are fetched once per scope set (under a lock), and `stopping`
tells every thread to give up at its next step once one has failed."""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import __version__
from ..errors import RegistryError, TransientError
from ..oci.reference import DOCKER_HUB, HUB_API
from ._http import httpx
from .auth import AuthState, parse_challenges
from .options import RegistryOptions, is_loopback
from .tls import ca_hint, ssl_context

Body = bytes | Callable[[], Iterable[bytes]] | None   # a callable: a fresh stream per attempt
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
TIMEOUT = httpx.Timeout(60.0, connect=15.0)


class Backoff:
    """Delays between attempts: base·2ⁿ, capped; a server's Retry-After
    (seconds or an HTTP date) is honoured, capped too."""

    def __init__(self, base: float = 0.2, cap: float = 10.0, retry_after_cap: float = 30.0):
        self.base, self.cap, self.retry_after_cap = base, cap, retry_after_cap

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            wait = _retry_after(retry_after)
            if wait is not None:
                return max(0.0, min(wait, self.retry_after_cap))
        return min(self.cap, self.base * (2 ** attempt))


def _retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time() if when is not None else None


class Stopped(RegistryError):
    """Raised in a thread of a parallel push at its next step after another
    thread failed (or the user interrupted): the first failure is the one
    reported, never this."""

    def __init__(self) -> None:
        super().__init__("stopped: another part of the push failed")


class RegistryClient:
    """Everything spoken to one registry host (as named: "host:port")."""

    def __init__(self, host: str, options: RegistryOptions, *, sleep: Callable[[float], object] | None = None):
        self.host = host
        self.api_host = HUB_API if host == DOCKER_HUB else host
        self.options = options
        self.insecure = options.is_insecure(host)
        self.loopback = is_loopback(self.api_host)       # plain HTTP when it does not speak TLS
        self.auth = AuthState(host, options)
        self.stopping = threading.Event()              # set: every thread stops at its next step
        self._sleep = sleep                            # None: wait on `stopping` (a test passes its own)
        self._backoff = Backoff()
        self._base: str | None = None
        self._lock = threading.RLock()                 # the scheme, found once; tokens, fetched once
        # Unverified TLS only where the user said so; else the system CAs
        # (loaded at the first handshake) plus the registry's own from certs.d.
        self.tls_context = None if self.insecure else ssl_context(host, options)
        verify = False if self.tls_context is None else self.tls_context
        self.http = httpx.Client(verify=verify, timeout=TIMEOUT, follow_redirects=False,
                                 headers={"User-Agent": f"ocibuild/{__version__}"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the registry's base URL and auth scheme --------------------------------

    def ping(self, retries: int | None = None) -> str:
        """Find the scheme and the auth the registry asks for with one GET
        /v2/ (the answer must be 200 or 401, as a registry's is). Done once;
        a no-op once any request found the scheme (see `request`)."""
        with self._lock:
            if self._base is not None:
                return self._base
            base, resp = self._discover(lambda b: self._send("GET", b + "/v2/", {}, None, False, None, b),
                                        retries)
            self._v2_answer(resp)
            self._base = base
            return base

    def confirm(self, retries: int | None = None) -> None:
        """GET /v2/ on the scheme already found: a registry answers 200 or 401."""
        base = self.ping(retries)
        self._v2_answer(self._with_retries(
            lambda: self._send("GET", base + "/v2/", {}, None, False, None, base),
            self.options.retries if retries is None else retries))

    def _v2_answer(self, resp: httpx.Response) -> None:
        if resp.status_code == 401:
            if not self.auth.learn(parse_challenges(resp.headers.get_list("www-authenticate"))):
                raise self.unknown_scheme(resp)
        elif resp.status_code != 200:
            raise RegistryError(f"{self.host} does not look like an OCI registry: GET /v2/ answered "
                                f"{resp.status_code}{self.error_text(resp)}")

    def unknown_scheme(self, resp: httpx.Response) -> RegistryError:
        return RegistryError(f"{self.host} asks for an authentication scheme ocibuild does not "
                             f"speak ({resp.headers.get('www-authenticate', 'none given')!r})")

    def _discover(self, attempt: Callable[[str], httpx.Response],
                  retries: int | None) -> tuple[str, httpx.Response]:
        """The first request, `attempt(base)`, sent where the registry is:
        (its base URL, the answer). HTTPS always first; plain HTTP after it
        failed only for a registry named with --insecure-registry (any
        failure: unverified TLS too, as docker does), or for a loopback one
        (localhost, 127.0.0.0/8, [::1]) that does not speak TLS at all — a
        certificate it fails to prove is still refused, as
        go-containerregistry does.

        A loopback registry is first asked, below HTTP, whether it answers a
        TLS hello in plain HTTP (see `answers_tls_in_plain_http`): then
        plain HTTP it is at once, and the system CAs the HTTPS attempt would
        have loaded (30–50 ms) are never needed."""
        base, resp = f"https://{self.api_host}", None
        if self.loopback and not self.insecure and answers_tls_in_plain_http(self.api_host):
            base = f"http://{self.api_host}"
            return base, self._with_retries(lambda: attempt(base),
                                            self.options.retries if retries is None else retries)
        if self.insecure:
            # As docker does for an insecure registry: HTTPS (unverified)
            # first, plain HTTP if that fails.
            try:
                resp = attempt(base)
            except httpx.TransportError:
                base = f"http://{self.api_host}"
            else:
                if resp.status_code in RETRY_STATUS:
                    resp.close()
                    resp = None
        if resp is None:
            def once() -> httpx.Response:
                nonlocal base
                try:
                    return attempt(base)
                except httpx.TransportError as e:
                    # A loopback registry answering TLS with plain HTTP: plain HTTP it is.
                    if not (self.loopback and base.startswith("https:") and _classify(e)[0] == "tls"):
                        raise
                base = f"http://{self.api_host}"
                return attempt(base)
            resp = self._with_retries(once, self.options.retries if retries is None else retries)
        return base, resp

    def url(self, target: str) -> str:
        """`target` as a URL: absolute as given (a Location), else under /v2 of the registry."""
        if target.startswith(("https://", "http://")):
            return target
        return self.ping() + target

    # -- requests -------------------------------------------------------------

    def request(self, method: str, target: str, *, scopes: frozenset = frozenset(),
                headers: dict | None = None, body: Body = None, stream: bool = False,
                retries: int | None = None, timeout: float | None = None,
                reauth: bool = True) -> httpx.Response:
        """One request, retried (connection errors, 5xx, 429) up to
        `retries` (default: the options'), authenticated for `scopes` (and,
        with `reauth`, once more after a 401 naming a new challenge). The
        response is returned whatever its status; with `stream` its body is
        left to read (and the caller closes it).

        The first request to the registry finds its scheme itself (as ping
        would, anonymously: nothing is known to authenticate with yet), so
        no separate GET /v2/ is spent on it; its 401 teaches the challenge."""
        retries = self.options.retries if retries is None else retries
        extra = ""
        # Sent anonymously first (no challenge seen yet), its 401 only teaches
        # the challenge: then one round more, so a fresh token the registry
        # still refuses is renewed once, as after a ping.
        rounds = 3 if self.auth.scheme is None else 2
        for round_ in range(rounds):
            def send(extra: str = extra) -> httpx.Response:      # this round's challenge
                hdrs = {**(headers or {}), **self._authorization(scopes, extra)}
                return self._send(method, self.url(target), hdrs, body, stream, timeout, self._base)
            resp = None
            if self._base is None and not target.startswith(("https://", "http://")):
                resp = self._first(method, target, headers or {}, body, stream, timeout, retries)
            if resp is None:
                resp = self._with_retries(send, retries)
            if resp.status_code != 401 or round_ == rounds - 1 or not reauth:
                return resp
            # Anonymous so far, or a token gone stale or short of a scope the
            # registry now names: learn its challenge and try once more.
            challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
            if not self.auth.learn(challenges):
                return resp
            self.auth.forget(scopes)
            extra = (self.auth.bearer.params.get("scope", "") if self.auth.bearer else "")
            resp.close()
        raise AssertionError("unreachable")

    def _first(self, method: str, target: str, headers: dict, body: Body, stream: bool,
               timeout: float | None, retries: int) -> httpx.Response | None:
        """The first request, finding the scheme; None if another thread
        found it meanwhile (the request is then sent as any other)."""
        with self._lock:
            if self._base is not None:
                return None
            base, resp = self._discover(lambda b: self._send(method, b + target, headers, body, stream, timeout, b),
                                        retries)
            self._base = base
            return resp

    def _authorization(self, scopes: frozenset, extra: str = "") -> dict:
        if self.auth.scheme == "basic":
            basic = self.auth.basic_header()
            return {"Authorization": basic} if basic else {}
        if self.auth.scheme == "bearer":
            token = self.auth.token(scopes)
            if token is None:
                with self._lock:              # one fetch per scope set, whatever the threads
                    token = self.auth.token(scopes) or self._fetch_token(scopes, extra)
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    def _with_retries(self, send: Callable[[], httpx.Response], retries: int) -> httpx.Response:
        attempt = 0
        while True:
            try:
                resp = send()
            except httpx.TransportError as e:
                if attempt >= retries or not _retryable(e):
                    err = self.transport_error(e)
                    raise (err.after(attempt + 1) if isinstance(err, TransientError) else err) from None
                delay = self._backoff.delay(attempt)
            else:
                if resp.status_code not in RETRY_STATUS or attempt >= retries:
                    return resp
                delay = self._backoff.delay(attempt, resp.headers.get("retry-after"))
                resp.close()
            self._wait(delay)
            attempt += 1

    def _wait(self, seconds: float) -> None:
        """Sleep before another attempt; cut short, with Stopped, when the
        push this request is part of stops."""
        if self._sleep is None:
            self.stopping.wait(seconds)
        else:
            self._sleep(seconds)
        self.check_stopped()

    def check_stopped(self) -> None:
        """Raise Stopped if another thread of the push failed (or the user interrupted)."""
        if self.stopping.is_set():
            raise Stopped()

    def _send(self, method: str, url: str, headers: dict, body: Body, stream: bool,
              timeout: float | None, origin: str | None) -> httpx.Response:
        """Send, following redirects here: Authorization goes only to `origin`
        (blob downloads are often redirected to a storage host)."""
        for _ in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers)
            if origin is None or not same_origin(url, origin):
                hdrs.pop("Authorization", None)
            content = body() if callable(body) else body
            req = self.http.build_request(method, url, headers=hdrs, content=content,
                                          timeout=timeout if timeout is not None else TIMEOUT)
            resp = self.http.send(req, stream=True)
            location = resp.headers.get("location")
            if resp.status_code in REDIRECTS and location:
                resp.close()
                url = str(resp.url.join(location))
                if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                    method, body = "GET", None
                continue
            if not stream:
                resp.read()
            return resp
        raise RegistryError(f"{self.host}: more than {MAX_REDIRECTS} redirects for {method} {url}")

    # -- bearer tokens --------------------------------------------------------

    def _fetch_token(self, scopes: frozenset, extra: str = "") -> str:
        """GET the realm (Basic credentials if any; an identity token is
        exchanged by POST, OAuth2 style) for a token covering `scopes`."""
        ch = self.auth.bearer
        assert ch is not None              # asked for only after a Bearer challenge
        realm = httpx.URL(ch.params["realm"])
        realm_host = realm.netloc.decode()
        if realm.scheme not in ("https", "http"):
            raise RegistryError(f"{self.host} sends clients to a token server at {realm}, "
                                "which is not an http(s) URL")
        same_host = realm.host == httpx.URL(f"http://{self.api_host}").host
        plain = self.insecure or (self._base or "").startswith("http:")   # the registry itself is spoken
        if realm.scheme == "http" and not (self.options.is_insecure(realm_host)  # to in clear text
                                           or (same_host and plain)):
            # Credentials in clear text to another host only when the user named that host.
            raise RegistryError(f"{self.host} sends clients to a plain-HTTP token server ({realm}); "
                                f"pass --insecure-registry {realm_host} to send credentials there")
        want = sorted(set(scopes) | ({extra} if extra else set()))
        service = ch.params.get("service", "")
        creds = self.auth.credentials()
        origin = f"{realm.scheme}://{realm_host}"
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "ocibuild", "service": service, "scope": " ".join(want)}
            def send():
                return self._send_form(str(realm), form)
        else:
            params = ([("service", service)] if service else []) + [("scope", s) for s in want]
            url = str(realm.copy_merge_params(params)) if params else str(realm)
            basic = self.auth.basic_header()
            hdrs = {"Authorization": basic} if basic else {}
            def send():
                return self._send("GET", url, hdrs, None, False, None, origin)
        resp = self._with_retries(send, self.options.retries)
        if resp.status_code in (401, 403):
            raise RegistryError(f"the token server {realm_host} of {self.host} refused "
                                f"{self.auth.who()} ({resp.status_code}{self.error_text(resp)})"
                                + self._login_hint())
        if resp.status_code != 200:
            raise RegistryError(f"the token server {realm_host} of {self.host} answered "
                                f"{resp.status_code}{self.error_text(resp)}")
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
            expires = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token or not isinstance(token, str):
            raise RegistryError(f"the token server {realm_host} of {self.host} sent no token")
        self.auth.keep(scopes, token, expires)
        return token

    def _send_form(self, url: str, form: dict) -> httpx.Response:
        return self.http.send(self.http.build_request("POST", url, data=form, timeout=TIMEOUT))

    # -- errors ---------------------------------------------------------------

    def error_text(self, resp: httpx.Response) -> str:
        """The registry's own error text, with every secret of ours taken out."""
        return self.auth.scrub(error_text(resp))

    def error(self, resp: httpx.Response, doing: str) -> RegistryError:
        """A one-line error for a response that was not what `doing` needed:
        the status, the registry's own error codes, and for 401/403 which
        credentials were used (never the secret)."""
        status = resp.status_code
        text = self.error_text(resp)
        if status == 401:
            return RegistryError(f"{self.host} refused {doing} (401{text}) with {self.auth.who()}"
                                 + self._login_hint())
        if status == 403:
            return RegistryError(f"{self.host} denied {doing} (403{text}) with {self.auth.who()}; "
                                 "check that this account may do it")
        if status == 429:
            return TransientError(f"{self.host} is rate-limiting {doing} (429{text}); try again later")
        if status in RETRY_STATUS:
            return TransientError(f"{self.host} failed {doing}: {status}{text}")
        return RegistryError(f"{self.host} refused {doing}: {status}{text}")

    def _login_hint(self) -> str:
        if self.auth.credentials() is None:
            return f"; log in with `docker login {self.host}` or `podman login {self.host}`"
        return f"; log in again with `docker login {self.host}` or `podman login {self.host}`"

    def pause(self, attempt: int, retry_after: str | None = None) -> None:
        """Wait before attempt number `attempt` + 1 of a step the caller retries."""
        self._wait(self._backoff.delay(attempt, retry_after))

    def transport_error(self, e: httpx.TransportError) -> RegistryError:
        """A one-line error for a failed connection: TransientError if worth retrying."""
        err = self._transport_error(e)
        return TransientError(str(err)) if _retryable(e) else err

    def _transport_error(self, e: httpx.TransportError) -> RegistryError:
        host = _host_of(e) or self.api_host
        kind, cause = _classify(e)
        if kind == "certificate":
            return RegistryError(
                f"TLS verification of {host} failed ({cause.verify_message or cause.reason}); "
                f"{ca_hint(self.host, self.options)}, or pass --insecure-registry {self.host} "
                "to skip verification")
        if kind == "tls":
            return RegistryError(
                f"TLS handshake with {host} failed ({cause.reason or cause}); if it serves plain "
                f"HTTP, pass --insecure-registry {self.host}")
        if kind in ("unknown host", "dns"):
            return RegistryError(f"unknown registry host {host.rsplit(':', 1)[0]}: "
                                 f"{cause.strerror}; check the name")
        if kind == "refused":
            return RegistryError(f"cannot connect to {host}: connection refused; "
                                 "is the registry running, on that port?")
        if kind == "timeout":
            return RegistryError(f"{host} did not answer in time")
        return RegistryError(f"connection to {host} failed: {_reason(e)}")


PEEK_TIMEOUT = 5.0
TLS_RECORD_TYPES = range(0x14, 0x19)     # change_cipher_spec, alert, handshake, application_data, heartbeat


def answers_tls_in_plain_http(hostport: str) -> bool:
    """True when the server at `hostport` ("host:port", "[v6]:port") answers
    a TLS ClientHello with bytes that are no TLS record — an HTTP server's
    400 for what it took for a request —, as the HTTPS attempt would find
    it (a TLS error, not a certificate's). The hello comes from a context
    that loads and verifies nothing (no handshake is finished with it), on
    a socket of its own; no HTTP goes out. False for anything else — a TLS
    answer, a refusal, silence, a closed connection —, which leaves the
    question to the HTTPS attempt."""
    host, _, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not host or not port.isdigit():
        host, port = hostport, "443"
    host = host.removeprefix("[").removesuffix("]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    hello = ssl.MemoryBIO()
    try:
        ctx.wrap_bio(ssl.MemoryBIO(), hello).do_handshake()
    except ssl.SSLWantReadError:
        pass
    try:
        with socket.create_connection((host, int(port)), timeout=PEEK_TIMEOUT) as sock:
            sock.sendall(hello.read())
            answer = sock.recv(1)
    except OSError:
        return False
    return bool(answer) and answer[0] not in TLS_RECORD_TYPES


def same_origin(url: str, origin: str) -> bool:
    a, b = httpx.URL(url), httpx.URL(origin)
    return (a.scheme, a.host, _port(a)) == (b.scheme, b.host, _port(b))


def _port(u: httpx.URL) -> int | None:
    return u.port or {"https": 443, "http": 80}.get(u.scheme)


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _classify(e: httpx.TransportError) -> tuple[str, Any]:
    """What went wrong under httpx's wrapping, and the exception that says so."""
    for c in _chain(e):
        if isinstance(c, ssl.SSLCertVerificationError):
            return "certificate", c
        if isinstance(c, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
            return "dropped", c          # the peer went away mid-TLS: like a reset
        if isinstance(c, ssl.SSLError):
            return "tls", c              # e.g. plain HTTP spoken to as TLS
        if isinstance(c, socket.gaierror):
            return ("dns" if c.errno == socket.EAI_AGAIN else "unknown host"), c
        if isinstance(c, ConnectionRefusedError):
            return "refused", c
    if isinstance(e, httpx.TimeoutException):
        return "timeout", None
    return "other", None


def _retryable(e: httpx.TransportError) -> bool:
    """Worth another try: the registry restarting, a dropped connection, a
    timeout. Not: a certificate, a TLS mismatch, a name that does not exist."""
    if not isinstance(e, (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)):
        return False
    return _classify(e)[0] not in ("certificate", "tls", "unknown host")


def _host_of(e: httpx.TransportError) -> str:
    try:
        u = e.request.url
    except RuntimeError:
        return ""
    return u.netloc.decode()


def _reason(e: BaseException) -> str:
    for c in _chain(e):
        if isinstance(c, OSError) and c.strerror:
            return c.strerror
    return str(e) or type(e).__name__


def error_text(resp: httpx.Response) -> str:
    """The registry's own error codes and messages (distribution spec
    `{"errors": [{"code", "message", "detail"}]}`), as ": CODE: message"."""
    try:
        doc = json.loads(resp.read()[:65536])
        errors = doc.get("errors") or []
    except (ValueError, AttributeError, RuntimeError, httpx.HTTPError):
        return ""      # not the registry's JSON, or a body already streamed away
    parts = []
    for err in errors[:3] if isinstance(errors, list) else []:
        if not isinstance(err, dict):
            continue
        part = ": ".join(str(err.get(k)) for k in ("code", "message") if err.get(k))
        detail = err.get("detail")
        if isinstance(detail, str) and 0 < len(detail) <= 200:    # e.g. the unknown blob's digest
            part += f" ({detail})"
        parts.append(part)
    return (": " + "; ".join(parts)) if parts else ""
