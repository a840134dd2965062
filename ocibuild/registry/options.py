"""What every part of the registry package shares: the options the CLI
passes down, and the error types."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import OcibuildError


class RegistryError(OcibuildError):
    """A registry could not be reached, refused a request, or answered
    something unusable. The message says which registry and what to do."""


class TransientError(RegistryError):
    """A failure that may pass: a dropped or refused connection, a 5xx or
    429. Raised once the retries are spent, or at once where the caller
    retries a larger step itself (an upload session)."""

    def after(self, attempts: int) -> "TransientError":
        """The same error, saying how many attempts were made."""
        return TransientError(f"{self} (gave up after {attempts} attempts)") if attempts > 1 else self


@dataclass(frozen=True)
class RegistryOptions:
    insecure: frozenset[str] = frozenset()        # "host:port" allowed plain HTTP or unverified TLS
    certs_dirs: tuple[str, ...] = ("/etc/containers/certs.d", "/etc/docker/certs.d")
    docker_config: str | None = None              # a config.json path (from DOCKER_CONFIG or ~/.docker)
    auth_file: str | None = None                  # podman's $XDG_RUNTIME_DIR/containers/auth.json
    cache_dir: str | None = None                  # pulled-blob cache (default ~/.cache/ocibuild)
    retries: int = 5
    chunk_size: int = 16 << 20                    # blobs above this are uploaded in chunks

    def is_insecure(self, host: str) -> bool:
        return host.lower() in {h.lower() for h in self.insecure}

    def cache_root(self) -> str:
        return self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "ocibuild")
