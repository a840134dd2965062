"""What the CLI passes down to the registry package: every setting read
from flags and the environment once, there, as plain values."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")


@dataclass(frozen=True)
class RegistryOptions:
    insecure: frozenset[str] = frozenset()        # "host:port" allowed plain HTTP or unverified TLS
    certs_dirs: tuple[str, ...] = ("/etc/containers/certs.d", "/etc/docker/certs.d")
    auth_files: tuple[str, ...] = ()              # credential files (auth.json / config.json format),
                                                  # in lookup order: the first with a login for the host wins
    auth_flag: str = ""                           # how the user named the only file ("--authfile",
                                                  # "REGISTRY_AUTH_FILE"), for messages; "" for the lookup
    cache_dir: str | None = None                  # pulled-blob cache (the CLI: ~/.cache/ocibuild);
                                                  # None: pushes keep no mount hints, pulls use a temp dir
    home: str = ""                                # shown as ~ in messages naming config files
    retries: int = 5
    chunk_size: int = 16 << 20                    # blobs above this are uploaded in chunks
    parallel: int = 4                             # blobs (and manifests) pushed at once, one connection
                                                  # each: bounded, as each holds a 1 MiB chunk in flight

    def is_insecure(self, host: str) -> bool:
        return host.lower() in {h.lower() for h in self.insecure}


def is_loopback(host: str) -> bool:
    """`host` ("name[:port]", "[v6]:port") is this machine's loopback:
    `localhost`, 127.0.0.0/8 or [::1], written as such (names are not
    resolved). Such a registry is spoken to over plain HTTP when it does not
    speak TLS, without --insecure-registry, as dockerd and
    go-containerregistry do: nothing sent to it leaves the machine."""
    name = host.lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    return addr in _LOOPBACK_V4 if addr.version == 4 else addr == _LOOPBACK_V6
