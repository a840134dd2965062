"""Who we are to a registry: credentials found the way docker and podman
find them, the `WWW-Authenticate` challenge, and the tokens got for each
set of scopes. No HTTP here (the client fetches tokens); no secret is ever
put in a message: errors name the source of the credentials instead."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RegistryError
from ..oci.reference import DOCKER_HUB, HUB_API, HUB_AUTH_KEY
from .options import RegistryOptions

HELPER_TIMEOUT = 60    # a helper may wait for a keyring to unlock


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""                                  # e.g. "~/.docker/config.json (auths)"
    identity_token: str = field(default="", repr=False)   # an OAuth2 refresh token


def scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


# -- credentials --------------------------------------------------------------

def find_credentials(host: str, options: RegistryOptions,
                     run: Callable = subprocess.run) -> Credentials | None:
    """Credentials for `host` ("host:port" as named): from the first of the
    options' auth files (containers-auth.json(5) or docker's config.json,
    one format) that has a login for it — in each, credHelpers[host], then
    credsStore, then auths. None: go anonymous."""
    for path in options.auth_files:
        doc = _read_config(path, options.home)
        if doc is None:
            continue
        found = _from_config(doc, host, display_path(path, options.home), run)
        if found is not None:
            return found
    return None


def looked_in(options: RegistryOptions) -> str:
    """Where credentials were looked for, for messages."""
    places = ", ".join(display_path(p, options.home) for p in options.auth_files)
    if not places:
        return "nowhere (no credential file given)"
    return f"{places} ({options.auth_flag})" if options.auth_flag else places


def display_path(path: str, home: str = "") -> str:
    """`path` with the user's home shown as ~."""
    if home not in ("", "/") and path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path


def _read_config(path: str, home: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RegistryError(f"cannot read {display_path(path, home)}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{display_path(path, home)} is not valid JSON; fix it or log in again") from None
    return doc if isinstance(doc, dict) else None


def _keys(host: str) -> list[str]:
    """The names a login for `host` may be stored under, in the order docker
    tries them. Docker Hub has several historical ones."""
    hosts = [HUB_AUTH_KEY, DOCKER_HUB, "index.docker.io", HUB_API] if host == DOCKER_HUB else [host]
    out = []
    for h in hosts:
        out += [h] if "://" in h else [h, f"https://{h}", f"http://{h}"]
    return out


def _bare(key: str) -> str:
    """A config key as a host: scheme and path dropped (docker's convertToHostname)."""
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0].lower()


def _server_url(host: str) -> str:
    return HUB_AUTH_KEY if host == DOCKER_HUB else host


def _from_config(doc: dict, host: str, where: str, run) -> Credentials | None:
    keys = _keys(host)
    helpers = doc.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for k in keys:
            if helpers.get(k):
                return _helper(str(helpers[k]), host, f"{where} (credHelpers: {helpers[k]})", run)
    store = doc.get("credsStore")
    if store:
        found = _helper(str(store), host, f"{where} (credsStore: {store})", run)
        if found is not None:
            return found
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    entry = next((auths[k] for k in keys if k in auths), None)
    if entry is None:
        bare = {_bare(k) for k in keys}
        entry = next((v for k, v in auths.items() if _bare(k) in bare), None)
    return _from_entry(entry, host, f"{where} (auths)") if isinstance(entry, dict) else None


def _from_entry(entry: dict, host: str, source: str) -> Credentials | None:
    token = str(entry.get("identitytoken") or "")
    encoded = entry.get("auth")
    if not encoded:
        user, password = entry.get("username"), entry.get("password")
        if user and password:
            return Credentials(str(user), str(password), source, token)
        return Credentials("", "", source, token) if token else None
    try:
        user, sep, password = base64.b64decode(str(encoded), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise RegistryError(f"the login for {host} in {source} is not base64 of user:password; "
                            "log in again")
    return Credentials(str(user), str(password), source, token)


def _helper(name: str, host: str, source: str, run) -> Credentials | None:
    """`docker-credential-NAME get`, the server URL on stdin, JSON out."""
    prog = f"docker-credential-{name}"
    try:
        res = run([prog, "get"], input=_server_url(host).encode(), capture_output=True,
                  timeout=HELPER_TIMEOUT)
    except FileNotFoundError:
        raise RegistryError(f"the credential helper {prog} named in {source} is not installed "
                            "(not on PATH); install it or remove it from the file") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"the credential helper {prog} named in {source} did not answer "
                            f"in {HELPER_TIMEOUT} s") from None
    out = res.stdout.decode("utf-8", "replace")
    if res.returncode != 0:
        if "credentials not found" in out.lower():
            return None
        # Its own error text, but never anything that looks like a reply.
        said = (res.stderr.decode("utf-8", "replace") or out).strip().splitlines()
        said = said[0][:200] if said and "{" not in said[0] else f"exit status {res.returncode}"
        raise RegistryError(f"the credential helper {prog} named in {source} failed: {said}")
    try:
        doc = json.loads(out)
        user, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    except (ValueError, AttributeError):
        raise RegistryError(f"the credential helper {prog} named in {source} answered "
                            "something that is not its JSON reply") from None
    if not secret:
        return None
    if user == "<token>":     # docker's marker for an identity (refresh) token
        return Credentials("", "", source, secret)
    return Credentials(user, secret, source)


# -- challenges ---------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    scheme: str                      # lowercase: "basic", "bearer"
    params: dict = field(default_factory=dict)


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# An unquoted value runs to the next comma or space: lenient, as some
# registries send realm=https://... unquoted.
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?=\s|,|$)")


def parse_challenges(values: list[str]) -> list[Challenge]:
    """`WWW-Authenticate` header values → challenges. Handles quoted values
    holding commas (scope="repository:a:pull,push") and several challenges
    in one header."""
    out: list[tuple[str, dict]] = []
    for text in values:
        pos = 0
        while pos < len(text):
            if text[pos] in " \t,":
                pos += 1
                continue
            m = _PARAM.match(text, pos)
            if m and out:
                value = m.group(2) if m.group(2) is not None else m.group(3)
                out[-1][1][m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
                pos = m.end()
                continue
            m = _SCHEME.match(text, pos)
            if m:
                out.append((m.group(1).lower(), {}))
                pos = m.end()
                continue
            pos += 1            # a token68 or garbage: skip it
    return [Challenge(s, p) for s, p in out]


# -- state --------------------------------------------------------------------

@dataclass
class Token:
    value: str
    expires: float           # time.monotonic() after which it is not used


class AuthState:
    """One registry's auth: the scheme it asked for, the credentials (looked
    up once, when first needed, whatever the threads asking) and the bearer
    tokens by scope set."""

    def __init__(self, host: str, options: RegistryOptions, find: Callable = find_credentials):
        self.host, self.options, self._find = host, options, find
        self.scheme: str | None = None          # None: anonymous so far
        self.bearer: Challenge | None = None
        self._creds: Credentials | None = None
        self._looked = False
        self._looking = threading.Lock()        # a credential helper is run once
        self._tokens: dict[frozenset, Token] = {}

    def credentials(self) -> Credentials | None:
        if not self._looked:
            with self._looking:
                if not self._looked:
                    self._creds = self._find(self.host, self.options)
                    self._looked = True
        return self._creds

    def learn(self, challenges: list[Challenge]) -> bool:
        """Take the registry's challenge; True if it is one we can answer."""
        for ch in challenges:
            if ch.scheme == "bearer" and ch.params.get("realm"):
                self.scheme, self.bearer = "bearer", ch
                return True
        for ch in challenges:
            if ch.scheme == "basic":
                self.scheme = "basic"
                return True
        return False

    def token(self, scopes: frozenset) -> str | None:
        tok = self._tokens.get(scopes)
        if tok is not None and time.monotonic() < tok.expires:
            return tok.value
        return None

    def keep(self, scopes: frozenset, value: str, expires_in: float) -> None:
        # Renewed a little early: a token must not expire between check and use.
        self._tokens[scopes] = Token(value, time.monotonic() + max(expires_in - 10, expires_in / 2))

    def forget(self, scopes: frozenset) -> None:
        self._tokens.pop(scopes, None)

    def basic_header(self) -> str | None:
        c = self.credentials()
        if c is None or not (c.username or c.password):
            return None
        return "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()

    def secrets(self) -> list[str]:
        """Every secret this registry's requests may carry, to keep them out of
        messages (a registry may echo a request's Authorization back)."""
        out = [t.value for t in self._tokens.values()]
        c = self._creds
        if c is not None:
            out += [c.password, c.identity_token]
            basic = self.basic_header()
            if basic:
                out.append(basic.split(" ", 1)[1])
        return [s for s in out if s and len(s) >= 4]

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def who(self) -> str:
        """The credentials used, named by source, for messages."""
        c = self.credentials()
        if c is None:
            return f"no credentials (none found for {self.host} in {looked_in(self.options)})"
        return f"credentials from {c.source}"
