"""TLS for one registry: the system CAs plus any the user trusts for that
registry in the certs.d directories docker and podman read
(`DIR/HOST:PORT/*.crt`), and a client certificate (`*.cert` + `*.key`)."""

from __future__ import annotations

import glob
import os
import ssl

from ..errors import RegistryError
from .options import RegistryOptions


def ssl_context(host: str, options: RegistryOptions) -> ssl.SSLContext:
    """A verifying context for `host` ("host:port" as named)."""
    ctx = ssl.create_default_context()
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
