"""What the CLI passes down to the registry package: every setting read
from flags and the environment once, there, as plain values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistryOptions:
    insecure: frozenset[str] = frozenset()        # "host:port" allowed plain HTTP or unverified TLS
    certs_dirs: tuple[str, ...] = ("/etc/containers/certs.d", "/etc/docker/certs.d")
    docker_config: str | None = None              # a config.json path (from DOCKER_CONFIG or ~/.docker)
    auth_file: str | None = None                  # podman's $XDG_RUNTIME_DIR/containers/auth.json
    cache_dir: str | None = None                  # pulled-blob cache (the CLI: ~/.cache/ocibuild);
                                                  # None: pushes keep no mount hints, pulls use a temp dir
    home: str = ""                                # shown as ~ in messages naming config files
    retries: int = 5
    chunk_size: int = 16 << 20                    # blobs above this are uploaded in chunks

    def is_insecure(self, host: str) -> bool:
        return host.lower() in {h.lower() for h in self.insecure}
