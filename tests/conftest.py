"""Shared fixtures: the ocibuild CLI as a subprocess, a static Go test
binary, the container engines (docker, rootful podman, rootless podman as
the user `ocibuild`), small tmpfs mounts, and a few helpers to read what
ocibuild wrote.

Engine policy: engines are part of what these tests check. When docker or
podman is not reachable the test FAILS with the reason; it is never skipped.
`scripts/setup` installs and starts everything the tests need."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
OCIBUILD = Path(sys.executable).parent / "ocibuild"
ROOTLESS_USER = "ocibuild"
DIGEST_LINE = re.compile(r"sha256:[0-9a-f]{64}\n")
# A subprocess that hangs must not hang the suite; no test asserts on time.
HANG_GUARD = 900


def _run(argv, *, env=None, cwd=None, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                          cwd=cwd, input=input, timeout=HANG_GUARD)


def run_ocibuild(*args, env: dict | None = None, cwd=None, prefix=(),
                 unset=("SOURCE_DATE_EPOCH",)) -> subprocess.CompletedProcess:
    """Run the installed CLI (`ocibuild ARGS...`). `env` entries are added to
    (a copy of) this process's environment, `unset` names are removed first;
    `prefix` wraps the command (e.g. setpriv ...)."""
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full.update(env or {})
    return _run([*prefix, OCIBUILD, *args], env=full, cwd=cwd)


@pytest.fixture(scope="session")
def ocibuild():
    """`ocibuild(*args, env=None, cwd=None, prefix=())` -> CompletedProcess (text)."""
    if not OCIBUILD.exists():
        pytest.fail(f"{OCIBUILD} is missing: install the project into the venv (scripts/setup)")
    return run_ocibuild


def printed_digest(result: subprocess.CompletedProcess) -> str:
    """The digest a successful run printed, checking the stdout contract:
    exactly one line `sha256:<64 hex>`."""
    assert result.returncode == 0, f"ocibuild failed ({result.returncode}): {result.stderr}"
    assert DIGEST_LINE.fullmatch(result.stdout), f"stdout is not one digest line: {result.stdout!r}"
    return result.stdout.strip()


@pytest.fixture(scope="session")
def build_image(ocibuild):
    """`build_image(*args, env=None)`: run `ocibuild -q assemble ARGS`, assert it
    worked, return the printed manifest digest."""
    def build(*args, env=None, cwd=None):
        return printed_digest(ocibuild("-q", "assemble", *args, env=env, cwd=cwd))
    return build


# --- reading outputs back (plain file reads, not ocibuild's own readers) ------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    return Path(layout) / "blobs" / algo / hexpart


@dataclass
class LayoutImage:
    """One image of an OCI layout directory, read with json and hashlib."""
    layout: Path
    digest: str
    manifest_bytes: bytes
    manifest: dict
    config_bytes: bytes
    config: dict
    index: dict

    @property
    def config_digest(self) -> str:
        return self.manifest["config"]["digest"]

    @property
    def layer_digests(self) -> list[str]:
        return [d["digest"] for d in self.manifest["layers"]]

    @property
    def diff_ids(self) -> list[str]:
        return self.config["rootfs"]["diff_ids"]


def read_layout(layout: Path, ref: str | None = None) -> LayoutImage:
    layout = Path(layout)
    index = json.loads((layout / "index.json").read_bytes())
    descs = [d for d in index["manifests"] if "artifactType" not in d]    # not its referrers (SBOMs)
    if ref is not None:
        descs = [d for d in descs if (d.get("annotations") or {}).get(
            "org.opencontainers.image.ref.name") == ref]
    assert len(descs) == 1, f"{layout}: expected one image named {ref!r}, index has {index}"
    digest = descs[0]["digest"]
    manifest_bytes = blob_path(layout, digest).read_bytes()
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == digest
    manifest = json.loads(manifest_bytes)
    config_bytes = blob_path(layout, manifest["config"]["digest"]).read_bytes()
    return LayoutImage(layout, digest, manifest_bytes, manifest, config_bytes,
                       json.loads(config_bytes), index)


def tree_state(root: Path) -> dict:
    """Everything under `root` (names, types, modes, sizes, contents, mtimes):
    equal before and after a command iff the command left `root` alone."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
            elif p.is_file():
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, sha256_file(p))
            else:
                out[rel] = ("other", st.st_mode)
    return out


# --- the static test program ------------------------------------------------------

@dataclass(frozen=True)
class StaticBinary:
    """A statically linked Go program and how to run it so that it exits 0
    at once, printing one line that contains `uid <N>`."""
    path: Path
    name: str                       # which fixture it was built from
    args: tuple[str, ...]           # arguments for a run that exits 0 at once
    env: dict = field(default_factory=dict)
    uid_re: re.Pattern = re.compile(r"\buid (\d+)\b")

    def uid_in(self, output: str) -> int:
        m = self.uid_re.search(output)
        assert m, f"the program printed no 'uid N': {output!r}"
        return int(m.group(1))

    def env_flags(self) -> list[str]:
        """`-e K=V` flags for docker/podman run."""
        return [x for k, v in sorted(self.env.items()) for x in ("-e", f"{k}={v}")]


@pytest.fixture(scope="session")
def static_binary(tmp_path_factory) -> StaticBinary:
    """The chaincode sample in tests/fixtures/chaincode (stdlib-only Go), or,
    when that is absent, tests/fixtures/hello; built once per session with the
    host's Go, static and reproducible (CGO_ENABLED=0, -trimpath, no build id)."""
    chaincode = FIXTURES / "chaincode"
    if (chaincode / "go.mod").exists():
        src, name = chaincode, "chaincode"
        args = ("-peer.address=peer0.org1.example.com:7052", "-once")
        env = {"CORE_CHAINCODE_ID_NAME": "basic_1.0:0123abcd", "CORE_PEER_TLS_ENABLED": "false"}
    else:
        src, name, args, env = FIXTURES / "hello", "hello", (), {"CORE_CHAINCODE_ID_NAME": "basic_1.0"}
    go = shutil.which("go")
    if go is None:
        pytest.fail("the host Go toolchain (`go`) is not installed; run scripts/setup")
    out = tmp_path_factory.mktemp("static-binary") / name
    genv = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOPROXY": "off",
            "GO111MODULE": "on"}
    r = _run([go, "build", "-trimpath", "-ldflags=-buildid=", "-o", out, "."], cwd=src, env=genv)
    assert r.returncode == 0, f"go build of {src} failed:\n{r.stderr}"
    with open(out, "rb") as f:
        head = f.read(64)
    assert head[:4] == b"\x7fELF", f"{out} is not an ELF binary"
    ro = _run(["readelf", "-lW", out]) if shutil.which("readelf") else None
    if ro is not None:
        assert "INTERP" not in ro.stdout, f"{out} is dynamically linked"
    # It must run here and print its uid before it goes into any image.
    r = _run([out, *args], env={**os.environ, **env})
    assert r.returncode == 0, f"{out} {' '.join(args)} failed: {r.stderr}"
    binary = StaticBinary(out, name, args, env)
    assert binary.uid_in(r.stdout) == os.getuid()
    return binary


# --- container engines ------------------------------------------------------------

@dataclass(frozen=True)
class Engine:
    """One image store: `docker`, `podman` (rootful) or `podman-rootless`
    (podman run by the ordinary user `ocibuild`, config from scripts/setup)."""
    name: str
    argv: tuple[str, ...]
    cwd: str | None = None
    env: dict | None = None

    @property
    def is_podman(self) -> bool:
        return self.name.startswith("podman")

    def __call__(self, *args, check: bool = False) -> subprocess.CompletedProcess:
        r = _run([*self.argv, *args], cwd=self.cwd, env=self.env)
        if check:
            assert r.returncode == 0, f"{' '.join(self.argv)} {' '.join(map(str, args))} " \
                                      f"failed ({r.returncode}):\n{r.stderr}{r.stdout}"
        return r

    def image_id(self, ref: str) -> str:
        """The image ID (= config digest), normalised to `sha256:<hex>`."""
        r = self("image", "inspect", "--format", "{{.Id}}", ref, check=True)
        value = r.stdout.strip()
        return value if value.startswith("sha256:") else "sha256:" + value

    def has_image(self, ref: str) -> bool:
        return self("image", "inspect", "--format", "{{.Id}}", ref).returncode == 0

    def remove_image(self, ref: str) -> None:
        # By name only: untags it, and deletes it when no other name holds it
        # (other tests may hold the same config under another name).
        self("image", "rm", ref)

    def remove_container(self, name: str) -> None:
        self("rm", "--force", name)


def _rootless_engine() -> Engine:
    pw = pwd.getpwnam(ROOTLESS_USER)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "HOME": pw.pw_dir, "USER": ROOTLESS_USER, "LOGNAME": ROOTLESS_USER,
           "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}", "LANG": "C.UTF-8"}
    # From "/": the user cannot read root's working directory.
    return Engine("podman-rootless",
                  ("runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                   "podman"), cwd="/", env=None)


def _probe(name: str) -> tuple[Engine | None, str]:
    if name == "docker":
        engine = Engine("docker", ("docker",))
        probe = ("info", "--format", "{{.ServerVersion}}")
        how = "start dockerd (scripts/setup does)"
    elif name == "podman":
        engine = Engine("podman", ("podman",))
        probe = ("info", "--format", "{{.Host.OCIRuntime.Name}}")
        how = "install and configure podman (scripts/setup does)"
    elif name == "podman-rootless":
        try:
            engine = _rootless_engine()
        except KeyError:
            return None, (f"user {ROOTLESS_USER!r} does not exist; scripts/setup creates it "
                          "with its rootless podman configuration")
        probe = ("info", "--format", "{{.Store.GraphDriverName}}")
        how = f"run scripts/setup (rootless podman for user {ROOTLESS_USER})"
    else:
        raise ValueError(f"unknown engine {name!r}")
    if shutil.which(engine.argv[0] if name != "podman-rootless" else "podman") is None:
        return None, f"{name}: command not found; {how}"
    try:
        r = engine(*probe)
    except subprocess.TimeoutExpired:
        return None, f"`{name} {' '.join(probe)}` hung; {how}"
    if r.returncode != 0 or not r.stdout.strip():
        lines = [line for line in (r.stderr or r.stdout).splitlines() if line.strip()]
        return None, (f"`{' '.join(probe[:1])}` failed for {name} (exit {r.returncode}): "
                      f"{lines[-1] if lines else 'no output'}; {how}")
    return engine, ""


@pytest.fixture(scope="session")
def require_engine():
    """`require_engine(name)` -> Engine for "docker", "podman" or
    "podman-rootless"; FAILS the test (never skips) when it is not reachable."""
    cache: dict[str, tuple[Engine | None, str]] = {}

    def require(name: str) -> Engine:
        if name not in cache:
            cache[name] = _probe(name)
        engine, why = cache[name]
        if engine is None:
            pytest.fail(f"engine {name} is not reachable, and engine tests are mandatory: {why}",
                        pytrace=False)
        return engine
    return require


@pytest.fixture
def engine_cleanup():
    """Register images and containers to remove after the test:
    `engine_cleanup.image(engine, ref)`, `engine_cleanup.container(engine, name)`."""
    class Cleanup:
        def __init__(self):
            self.images: list[tuple[Engine, str]] = []
            self.containers: list[tuple[Engine, str]] = []

        def image(self, engine: Engine, ref: str) -> str:
            self.images.append((engine, ref))
            return ref

        def container(self, engine: Engine, name: str) -> str:
            self.containers.append((engine, name))
            return name

    c = Cleanup()
    yield c
    for engine, name in c.containers:
        engine.remove_container(name)
    leaked = []
    for engine, ref in c.images:
        if engine.has_image(ref):
            engine.remove_image(ref)
            if engine.has_image(ref):
                leaked.append(f"{engine.name}:{ref}")
    assert not leaked, f"could not remove test images {leaked}"


def unique_name(purpose: str) -> str:
    """An image name no other test (or engineer) uses: ocibuild-test/PURPOSE-<hex>."""
    return f"ocibuild-test/{purpose}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def shared_tmp():
    """A temporary directory other users can read (tmp_path is under a 0700
    directory): for archives the rootless podman user must open."""
    d = Path(tempfile.mkdtemp(prefix="ocibuild-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- small file systems -------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size="1m", at=None)` -> Path of a fresh tmpfs mount (root only),
    unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str = "1m", at: Path | None = None) -> Path:
        if os.geteuid() != 0:
            pytest.fail("these tests mount a tmpfs and must run as root", pytrace=False)
        where = Path(at) if at else tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir(parents=True, exist_ok=True)
        r = _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", where])
        assert r.returncode == 0, f"mount tmpfs on {where}: {r.stderr}"
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if _run(["umount", where]).returncode != 0:
            _run(["umount", "-l", where])


def processes_mentioning(text: str) -> list[str]:
    """Processes (but this one) whose command line contains `text`, as
    "pid: command" lines: to see a compiler or an engine client still running."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and int(pid) != os.getpid():
            found.append(f"{pid}: {cmd[:200]}")
    return found


def wait_for(predicate, what: str, timeout: float = 120):
    """Poll `predicate` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def shared(request) -> Path:
    """A directory for the module's tests that the rootless user can reach
    too (pytest's own are 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=f"ocibuild-{request.module.__name__}-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _warm_builders_stopped():
    """Builds leave warm builder containers on purpose (they stop when
    idle); the suite stops its own at the end, as root and as the rootless user."""
    yield
    subprocess.run([str(OCIBUILD), "builder", "stop"], capture_output=True, timeout=300)
    if shutil.which("runuser"):
        try:
            import pwd
            pw = pwd.getpwnam(ROOTLESS_USER)
        except KeyError:
            return
        env = [f"HOME={pw.pw_dir}", f"XDG_RUNTIME_DIR=/run/user/{pw.pw_uid}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        subprocess.run(["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *env, str(OCIBUILD), "builder", "stop"],
                       capture_output=True, timeout=300, cwd="/")


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory):
    """A plain-HTTP, no-auth docker-registry on loopback, of the module's own."""
    from registry_harness import Registry
    reg = Registry(tmp_path_factory.mktemp("plain-registry"), tls=None)
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
