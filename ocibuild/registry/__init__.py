"""OCI registries: push an image (`--output docker://…`) and pull a base
(`--base docker://…`) over the distribution API, with docker's and podman's
credentials and certs.d, retries, and a local blob cache.

Modules: reference (names), options (what the CLI passes, the error type),
tls (contexts from certs.d), auth (credentials, challenges, tokens), client
(one host: HTTP, retries, auth, redirects), cache (pulled blobs, where blobs
are known to be), push (the Output), pull (the base)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..transports import Reference
from .options import RegistryError, RegistryOptions, TransientError
from .pull import pull_image
from .push import PushStats, RegistryOutput
from .reference import RegistryRef, parse_registry_ref

if TYPE_CHECKING:     # outputs may import this package: no cycle at run time
    from ..outputs import Output

__all__ = ["RegistryOptions", "RegistryError", "TransientError", "RegistryRef", "RegistryOutput",
           "PushStats", "parse_registry_ref", "registry_output", "pull_image"]


def registry_output(ref: Reference, options: RegistryOptions) -> Output:
    """The Output for `--output docker://HOST[:PORT]/REPO[:TAG][@sha256:…]`."""
    return RegistryOutput(ref, options)

