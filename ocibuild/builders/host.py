"""The host's own Go toolchain: for CI jobs already inside a Go image, and
air-gapped hosts with Debian's Go. Same GoBuild as every other builder,
run in a bubblewrap sandbox (sandbox.py) that sees none of the host's own
files: chaincode is code from strangers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping

from ..children import die_with_parent
from ..errors import BuildError, EngineError
from ..gosource import BINARY, GOPATH, GoBuild
from ..progress import Say
from .sandbox import bwrap, sandboxed

# Debian's Go library packages install their sources here (GOPATH layout).
SYSTEM_GOPATH = "/usr/share/gocode"
# The only variables passed through from the caller's environment.
_PASS = ("PATH", "HOME", "TMPDIR", "GOCACHE", "GOMODCACHE", "GOROOT", "XDG_CACHE_HOME")


class HostBuilder:
    name = "host"

    def __init__(self, env: Mapping[str, str], go: str = "go"):
        # Only these variables of the caller's environment reach go.
        self.env = {k: env[k] for k in _PASS if k in env}
        self.go = go

    def available(self) -> bool:
        return shutil.which(self.go, path=self.env.get("PATH")) is not None

    def compile(self, job: GoBuild, out_dir: str, say: Say) -> str:
        if not self.available():
            raise EngineError(f"no `{self.go}` on PATH for --builder host; install Go "
                              "(apt-get install golang-go) or use --builder docker/podman")
        bwrap_path = bwrap(self.env)
        go = shutil.which(self.go, path=self.env.get("PATH")) or self.go
        output = os.path.join(out_dir, BINARY)
        # Inside the run's work directory: swept with it if ocibuild is killed.
        with tempfile.TemporaryDirectory(prefix="gopath-", dir=out_dir) as gopath:
            if job.source.mode == GOPATH:
                # GOPATH mode needs the package at $GOPATH/src/<import path>: a copy,
                # so the source directory itself is never touched.
                cwd = os.path.join(gopath, "src", job.source.import_path)
                if job.source.gopath_root:     # a whole tree: the package and its dependencies
                    shutil.copytree(os.path.join(job.source.gopath_root, "src"),
                                    os.path.join(gopath, "src"), symlinks=True)
                else:
                    shutil.copytree(job.source.root, cwd, symlinks=True)
                env = job.env(f"{gopath}:{SYSTEM_GOPATH}")
            else:
                cwd = job.source.root
                env = job.env()
            caches = self._caches()
            env = {**self.env, **env, **caches, "TMPDIR": "/tmp"}
            argv = job.argv(output)
            argv[0] = go
            say("compiling with the host's go (sandboxed): " + " ".join(argv[1:]))
            source = job.source.root if job.source.mode != GOPATH else gopath
            argv = sandboxed(argv, bwrap_path=bwrap_path, go=go, source=source, cwd=cwd,
                             writable=[out_dir, *caches.values()], network=job.network)
            try:
                proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent())
            except OSError as e:
                raise EngineError(f"cannot run {self.go}: {e.strerror}") from None
        for line in proc.stdout.splitlines():
            say(line)
        if proc.returncode != 0:
            raise BuildError("host", proc.returncode, proc.stdout)
        return output

    def _caches(self) -> dict[str, str]:
        """GOCACHE and GOMODCACHE where go would put them for this user (the
        sandbox's only writable places besides the output), created."""
        home = self.env.get("HOME") or "/nonexistent"
        xdg = self.env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
        caches = {"GOCACHE": self.env.get("GOCACHE") or os.path.join(xdg, "go-build"),
                  "GOMODCACHE": self.env.get("GOMODCACHE") or os.path.join(home, "go", "pkg", "mod")}
        for path in caches.values():
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                raise EngineError(f"cannot create the Go cache {path}: {e.strerror}; set GOCACHE/GOMODCACHE "
                                  "to a writable directory") from None
        return caches
