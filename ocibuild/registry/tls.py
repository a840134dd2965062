"""TLS for one registry: the system CAs plus any the user trusts for that
registry in the certs.d directories docker and podman read
(`DIR/HOST:PORT/*.crt`), and a client certificate (`*.cert` + `*.key`).

The system CAs are loaded when the first TLS connection is made, not when
the context is: parsing the system's bundle takes 30–50 ms, which a
registry spoken to over plain HTTP (a loopback one) never needs."""

from __future__ import annotations

import glob
import os
import ssl
import threading
from typing import Any

from ..errors import RegistryError
from .options import RegistryOptions

_LOADING = threading.Lock()


class SystemCAsOnFirstUse(ssl.SSLContext):
    """A client context as ssl.create_default_context() makes it (TLS
    client, certificates and host names verified), whose system CAs
    (load_default_certs: the OpenSSL default paths, SSL_CERT_FILE and
    SSL_CERT_DIR as OpenSSL reads them) are loaded before the first
    handshake instead of at creation. CAs and certificates loaded explicitly
    (certs.d) are loaded at once, as with any context."""

    system_cas_loaded = False

    def _load_system_cas(self) -> None:
        if not self.system_cas_loaded:
            with _LOADING:
                if not self.system_cas_loaded:
                    self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                    self.system_cas_loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_system_cas()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:       # TLS through a TLS proxy
        self._load_system_cas()
        return super().wrap_bio(*args, **kwargs)


def ssl_context(host: str, options: RegistryOptions) -> ssl.SSLContext:
    """A verifying context for `host` ("host:port" as named)."""
    ctx = SystemCAsOnFirstUse(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    for d in options.certs_dirs:
        folder = os.path.join(d, host)
        for ca in sorted(glob.glob(os.path.join(folder, "*.crt"))):
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"cannot load the CA certificate {ca} for {host}: "
                                    f"{_reason(e)}; fix or remove it") from None
        for cert in sorted(glob.glob(os.path.join(folder, "*.cert"))):
            key = cert[:-len(".cert")] + ".key"
            if not os.path.exists(key):
                raise RegistryError(f"client certificate {cert} for {host} has no key: "
                                    f"put it in {key}")
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"cannot load the client certificate {cert} for {host}: "
                                    f"{_reason(e)}") from None
    return ctx


def ca_hint(host: str, options: RegistryOptions) -> str:
    """Where the user can put the registry's CA, for error messages."""
    places = " or ".join(os.path.join(d, host, "ca.crt") for d in options.certs_dirs)
    return f"put its CA certificate in {places}" if places else "trust its CA"


def _reason(e: Exception) -> str:
    return getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
