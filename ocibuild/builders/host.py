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
from ..gosource import BINARY, GOPATH, PROXY_MOUNT, GoBuild
from ..progress import Say
from ..toolchains import Toolchain, host_toolchains
from .sandbox import bwrap, sandboxed

# Debian's Go library packages install their sources here (GOPATH layout).
SYSTEM_GOPATH = "/usr/share/gocode"
# The only variables passed through from the caller's environment (GOROOT
# is the chosen toolchain's).
_PASS = ("PATH", "HOME", "TMPDIR", "GOCACHE", "GOMODCACHE", "XDG_CACHE_HOME")
# Also read, to find toolchains.
_LOOKUP = ("PATH", "HOME", "XDG_CACHE_HOME", "OCIBUILD_TOOLCHAINS")


class HostBuilder:
    name = "host"

    def __init__(self, env: Mapping[str, str], go: str = "go"):
        # Only these variables of the caller's environment reach go.
        self.env = {k: env[k] for k in _PASS if k in env}
        self.lookup = {k: env[k] for k in _LOOKUP if k in env}
        self.go = go

    def toolchains(self) -> list[Toolchain]:
        return host_toolchains(self.lookup)

    def available(self) -> bool:
        return shutil.which(self.go, path=self.env.get("PATH")) is not None

    def compile(self, job: GoBuild, out_dir: str, say: Say) -> str:
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
            argv = job.argv(output)
            source = job.source.root if job.source.mode != GOPATH else gopath
            self._go(job, argv[1:], "compiling", cwd, env, [source], [out_dir], say)
        return output

    def download(self, job: GoBuild, work: str, say: Say) -> str:
        """`go mod download` of every module the module needs, through
        job.modules, into a fresh module cache in `work`; its cache/download
        (a tree in the GOPROXY layout)."""
        module, modcache = os.path.join(work, "module"), os.path.join(work, "modcache")
        shutil.copytree(job.source.root, module, symlinks=True)    # go mod download may write go.sum
        os.mkdir(modcache)
        env = {**job.env(), "GOMODCACHE": modcache}
        # -modcacherw: a writable cache, so the work store can be removed.
        env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -modcacherw").strip()
        self._go(job, ["mod", "download"], "downloading modules", module, env, [], [work], say)
        return os.path.join(modcache, "cache", "download")

    def _go(self, job: GoBuild, args: list[str], doing: str, cwd: str, env: dict[str, str],
            readonly: list[str], writable: list[str], say: Say) -> None:
        """`go ARGS` in the sandbox: the chosen toolchain, the caches, `env`
        over the passed-through variables; `readonly` and `writable` bound
        (a --go-proxy directory read-only too). Raises BuildError."""
        if not job.toolchain and not self.available():
            raise EngineError(f"no `{self.go}` on PATH for --builder host; install Go "
                              "(apt-get install golang-go) or use --builder docker/podman")
        bwrap_path = bwrap(self.env)
        if job.toolchain:
            go = os.path.join(job.toolchain.where, "bin", "go")
            goroot = {"GOROOT": job.toolchain.where}
        else:
            go, goroot = shutil.which(self.go, path=self.env.get("PATH")) or self.go, {}
        caches = self._caches()
        full_env = {**self.env, **caches, **env, **goroot, "TMPDIR": "/tmp"}
        say(f"{doing} with the host's go (sandboxed): " + " ".join(args))
        # A proxy directory at the path the containers use: GOPROXY=file:///ocibuild/goproxy
        # on every builder, whatever the host path holds (a "," or "|" would split GOPROXY).
        proxy = ((job.modules.proxy_dir, PROXY_MOUNT),) if job.modules.proxy_dir else ()
        argv = sandboxed([go, *args], bwrap_path=bwrap_path, go=go, readonly=readonly, cwd=cwd,
                         writable=[*writable, *caches.values()], network=job.network, mounts=proxy)
        try:
            proc = subprocess.run(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace", preexec_fn=die_with_parent())
        except OSError as e:
            raise EngineError(f"cannot run {self.go}: {e.strerror}") from None
        for line in proc.stdout.splitlines():
            say(line)
        if proc.returncode != 0:
            raise BuildError("host", proc.returncode, proc.stdout)

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
