"""The host builder's sandbox: `go build` run under bubblewrap, seeing only
the toolchain (/usr, and GOROOT if it lives elsewhere), the source
(read-only), the Go caches, the output directory and an empty /tmp — not
/etc, /home, /root or anything else of the host, and no network unless the
build asked for it. A cgo preamble that `.incbin`s /etc/shadow, a `replace`
to a host directory that slipped through, or a go.work in a parent
directory find nothing there."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from ..errors import EngineError

# Host files a build with the network needs (name resolution, TLS roots).
_NETWORK_ETC = ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "services", "protocols",
                "ssl", "ca-certificates", "ca-certificates.conf", "pki")
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def bwrap(env: Mapping[str, str]) -> str:
    """bubblewrap: on PATH, else where Debian installs it (a PATH that names
    only a Go toolchain still gets its sandbox)."""
    found = shutil.which("bwrap", path=env.get("PATH")) or shutil.which("bwrap", path="/usr/bin:/bin")
    if not found:
        raise EngineError("--builder host compiles in a bubblewrap sandbox, and `bwrap` is not installed: "
                          "apt-get install bubblewrap (scripts/setup does), or use --builder docker/podman")
    return found


def sandboxed(argv: list[str], *, bwrap_path: str, go: str, readonly: list[str], writable: list[str],
              cwd: str, network: bool, mounts: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """`argv` wrapped in a bubblewrap command line. `writable` directories
    (caches, the output, a GOPATH copy) are bound read-write at their own
    paths; `readonly` ones (the source) read-only; `mounts` (host
    directory, path inside) read-only elsewhere (a module proxy, at the
    path the containers use too)."""
    out = [bwrap_path, "--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        out.append("--share-net")
    out += ["--ro-bind", "/usr", "/usr"]
    for top in _TOP_LEVEL:
        if os.path.islink(top):
            out += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            out += ["--ro-bind", top, top]
    # /tmp first: what is bound below it (a GOROOT, the work directory) comes after.
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    goroot = os.path.dirname(os.path.dirname(os.path.realpath(go)))
    if not goroot.startswith("/usr/"):
        out += ["--ro-bind", goroot, goroot]
    if network:
        for name in _NETWORK_ETC:
            path = os.path.join("/etc", name)
            if os.path.exists(path):
                out += ["--ro-bind", path, path]
    for path in readonly:
        out += ["--ro-bind", path, path]
    for path, inside in mounts:
        out += ["--ro-bind", path, inside]
    for path in writable:
        out += ["--bind", path, path]
    return [*out, "--chdir", cwd, "--", *argv]
