"""What every part of the registry package shares: the options the CLI
passes down, and the one error type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ..errors import OcibuildError


class RegistryError(OcibuildError):
    """A registry could not be reached, refused a request, or answered
    something unusable. The message says which registry and what to do."""


@dataclass(frozen=True)
class RegistryOptions:
    insecure: frozenset[str] = frozenset()        # "host:port" allowed plain HTTP or unverified TLS
    certs_dirs: tuple[str, ...] = ("/etc/containers/certs.d", "/etc/docker/certs.d")
    docker_config: str | None = None              # a config.json path (from DOCKER_CONFIG or ~/.docker)
    auth_file: str | None = None                  # podman's $XDG_RUNTIME_DIR/containers/auth.json
    cache_dir: str | None = None                  # pulled-blob cache (default ~/.cache/ocibuild)
    retries: int = 5
    chunk_size: int = 16 << 20                    # blobs above this are uploaded in chunks

    @classmethod
    def from_environment(cls, env: Mapping[str, str], insecure=(), **kw) -> "RegistryOptions":
        """Options as docker and podman find their files: DOCKER_CONFIG or
        ~/.docker/config.json; REGISTRY_AUTH_FILE, else
        $XDG_RUNTIME_DIR/containers/auth.json, else
        ~/.config/containers/auth.json; the cache in $XDG_CACHE_HOME/ocibuild
        or ~/.cache/ocibuild. For the CLI: the library itself reads no
        environment."""
        home = env.get("HOME") or os.path.expanduser("~")
        docker = os.path.join(env.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "config.json")
        auth = env.get("REGISTRY_AUTH_FILE")
        if not auth:
            runtime = env.get("XDG_RUNTIME_DIR")
            auth = os.path.join(runtime, "containers", "auth.json") if runtime else ""
            if not auth or not os.path.exists(auth):
                auth = os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                                    "containers", "auth.json")
        cache = os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "ocibuild")
        return cls(insecure=frozenset(h.lower() for h in insecure), docker_config=docker,
                   auth_file=auth, cache_dir=cache, **kw)

    def is_insecure(self, host: str) -> bool:
        return host.lower() in {h.lower() for h in self.insecure}

    def cache_root(self) -> str:
        return self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "ocibuild")
