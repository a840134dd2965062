"""`ocibuild build` end to end, through the CLI: every fixture built by every
builder — docker (buildx), podman (rootful), podman rootless (the ordinary
user `ocibuild`, running the CLI itself with runuser) and the host's Go —
gives the SAME image digest (one Debian Go 1.19 toolchain on the host and in
the builder image), and that image runs in docker and podman as its non-root
default user, the binary found on PATH by the bare name `chaincode`.

Fixtures:
  chaincode    a stdlib-only module (go.mod alone: -mod=readonly)
  modern       a stdlib-only module declaring go 1.23.0 (built with Go 1.24)
  vendored     a module with its own dependency in vendor/ (-mod=vendor)
  grpc-gopath  a GOPATH-mode gRPC server on Debian's Go libraries (no go.mod)

Bad input — a compile error, a module that needs the network under the
default `--network none`, a SOURCE that is not a Go package, a missing
builder image, an engine that is not installed or not reachable — gives one
`error:` line and a non-zero exit, writes no output, and leaves no container.
An interrupted build (SIGTERM during the compile) leaves nothing either, and
the next build works. The source directory is never modified.

Each (fixture, builder) is built once per module (`matrix`) and reused.
Engines are mandatory: one that is missing FAILS (conftest.require_engine)."""

from __future__ import annotations

import datetime
import os
import pwd
import random
import re
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    FIXTURES,
    HANG_GUARD,
    OCIBUILD,
    ROOTLESS_USER,
    LayoutImage,
    blob_path,
    printed_digest,
    processes_mentioning,
    read_layout,
    run_ocibuild,
    tree_state,
    unique_name,
    wait_for,
)

BUILDER_IMAGES = {"1.19.8": "localhost/ocibuild/go-builder:bookworm", "1.24.4": "localhost/ocibuild/go-builder:go1.24"}
BUILDERS = ["docker", "podman", "podman-rootless", "host"]
RUN_ENGINES = ["docker", "podman", "podman-rootless"]
GRPC_IMPORT_PATH = "example.org/chaincode/grpchealth"
BINARY = "usr/local/bin/chaincode"
PODMAN_NAME = re.compile(r"podman container (ocibuild-build-[0-9a-f]+)")
WARM_PREFIX = "ocibuild-builder-"          # warm builder containers' names

ENGINE, ROOT, SLOW = pytest.mark.engine, pytest.mark.root, pytest.mark.slow


def needs(builder: str | None) -> tuple:
    """The marks of a test that builds with (or inspects) `builder`: an
    engine is `engine`; the rootless one is also `root` (runuser to the user
    `ocibuild`); the host's Go (and no builder at all) needs neither."""
    if builder in RUN_ENGINES:
        return (ENGINE, ROOT) if builder == "podman-rootless" else (ENGINE,)
    return ()


def by_builder(builders, *marks) -> list:
    """`builders` as parameters, each marked with what it needs (and `marks`)."""
    return [pytest.param(b, marks=(*needs(b), *marks)) for b in builders]


@dataclass(frozen=True)
class Fixture:
    """A Go source, how ocibuild must read it, and how its binary is run so
    that it exits 0 at once, printing one line that ends in `uid <N>`."""
    name: str
    mode: str                    # what `build` must say: readonly, vendor, gopath
    build_args: tuple[str, ...]
    run_args: tuple[str, ...]    # after the image name: the command (bare `chaincode`) and flags
    run_env: dict
    line: re.Pattern             # the whole stdout line; group 1 is the uid

    @property
    def path(self) -> Path:
        return FIXTURES / self.name


CHAINCODE_ENV = {"CORE_CHAINCODE_ID_NAME": "basic_1.0:0123abcd", "CORE_PEER_TLS_ENABLED": "false",
                 "CORE_CHAINCODE_ONCE": "true"}
SOURCES = {
    "chaincode": Fixture(
        "chaincode", "readonly", (),
        ("chaincode", "-peer.address=127.0.0.1:7052", "-once"), CHAINCODE_ENV,
        re.compile(r"chaincode basic_1\.0:0123abcd starting, peer 127\.0\.0\.1:7052, tls false, uid (\d+)")),
    "vendored": Fixture(
        "vendored", "vendor", (), ("chaincode", "-once", "-name", "fabric"), {},
        re.compile(r"vendored hello, fabric uid (\d+)")),
    # go 1.23.0: built by the go1.24 toolchain, picked from its go line.
    "modern": Fixture(
        "modern", "readonly", (), ("chaincode",), {},
        re.compile(r"modern chaincode \[0 2 4 6 8\] uid (\d+)")),
    "grpc-gopath": Fixture(
        "grpc-gopath", "gopath", ("--import-path", GRPC_IMPORT_PATH), ("chaincode", "-once"), {},
        re.compile(r"grpchealth chaincode SERVING uid (\d+)")),
}


# --- running the CLI as root or as the rootless user ------------------------------------

def rootless_env() -> dict:
    pw = pwd.getpwnam(ROOTLESS_USER)
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": pw.pw_dir,
            "USER": ROOTLESS_USER, "LOGNAME": ROOTLESS_USER,
            "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}", "LANG": "C.UTF-8"}


def run_build(builder: str, source, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ocibuild build SOURCE --builder B ARGS...`; builder "podman-rootless"
    runs the CLI as the user `ocibuild` (clean environment, cwd /) with
    --builder podman."""
    if builder != "podman-rootless":
        return run_ocibuild("build", source, "--builder", builder, *args, env=env)
    full = {**rootless_env(), **(env or {})}
    argv = ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in full.items()],
            str(OCIBUILD), "build", str(source), "--builder", "podman", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=HANG_GUARD)


def out_dir(root: Path, name: str, builder: str) -> Path:
    """A fresh output directory the builder's user can write."""
    d = root / f"{name}-{random.getrandbits(32):08x}"
    d.mkdir(mode=0o755)
    if builder == "podman-rootless":
        os.chown(d, pwd.getpwnam(ROOTLESS_USER).pw_uid, -1)
    return d


def outputs(d: Path, name: str) -> list[str]:
    return ["--output", f"docker-archive:{d / 'image.tar'}:{name}",
            "--output", f"oci:{d / 'layout'}"]


def engine_for(builder: str) -> str | None:
    return None if builder == "host" else builder


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The CLI's failure contract: non-zero exit, nothing on stdout, one
    `error:` line, the last on stderr. Returns that line."""
    assert r.returncode != 0, f"expected a failure, got 0:\n{r.stdout}\n{r.stderr}"
    assert r.stdout == "", f"stdout on failure: {r.stdout!r}"
    lines = r.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one `error:` line:\n{r.stderr}"
    assert lines[-1] == errors[0], f"the `error:` line is not the last:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return errors[0]


def podman_name(stderr: str) -> str | None:
    m = PODMAN_NAME.search(stderr)
    return m.group(1) if m else None


# --- containers ----------------------------------------------------------------------------

def container_ids(engine) -> set[str]:
    """Every container but the warm builders (kept on purpose; they stop
    when idle, tested in test_warm_builders.py)."""
    r = engine("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}", check=True)
    return {line.split()[0] for line in r.stdout.splitlines() if WARM_PREFIX not in line}


def assert_no_new_container(engine, before: set[str], name: str | None = None) -> None:
    """No container is left that was not there before. Other work on this
    machine may run short-lived containers meanwhile: a new one must still
    exist after those have had time to finish to count as left behind."""
    if name is not None:
        assert engine("container", "inspect", name).returncode != 0, f"{engine.name}: container {name} is left"
    new = container_ids(engine) - before
    deadline = time.monotonic() + 60
    while new and time.monotonic() < deadline:
        time.sleep(1)
        new &= container_ids(engine)
    if new:
        shown = engine("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Image}} {{.Names}} {{.Status}}").stdout
        leaked = [line for line in shown.splitlines() if line.split(" ")[0] in new]
        raise AssertionError(f"{engine.name}: containers left behind: {leaked}")


# --- reading the image back -----------------------------------------------------------

def top_layer(image: LayoutImage) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """The last layer's entries (name without ./ or trailing /) -> (info, data)."""
    out = {}
    with tarfile.open(blob_path(image.layout, image.layer_digests[-1]), "r:*") as t:
        for m in t.getmembers():
            f = t.extractfile(m) if m.isfile() else None
            out[m.name.removeprefix("./").rstrip("/")] = (m, f.read() if f else None)
    return out


def elf_interp(data: bytes) -> bool:
    """Whether an ELF64 little-endian binary asks for a dynamic loader."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not an ELF64 LE binary"
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def env_of(image: LayoutImage) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in image.config["config"].get("Env") or [])


# --- the matrix: each (fixture, builder) built once ------------------------------------

@dataclass
class Build:
    fixture: Fixture
    builder: str
    result: subprocess.CompletedProcess
    out: Path
    name: str                 # NAME:TAG in the docker-archive
    source_before: dict
    source_after: dict

    @property
    def digest(self) -> str:
        return printed_digest(self.result)

    @property
    def archive(self) -> Path:
        return self.out / "image.tar"

    @property
    def layout(self) -> LayoutImage:
        return read_layout(self.out / "layout")


class Matrix:
    def __init__(self, root: Path, require_engine):
        self.root, self.require_engine = root, require_engine
        self.repo = {f: unique_name(f"cli-{f}") for f in SOURCES}
        self.cache: dict[tuple[str, str], Build] = {}
        self.images_checked = False

    def get(self, fixture: str, builder: str) -> Build:
        key = (fixture, builder)
        if key not in self.cache:
            if engine_for(builder):
                self.require_engine(builder)
                if not self.images_checked:      # only engine builds need the builder image
                    check_builder_images(self.require_engine)
                    self.images_checked = True
            fx = SOURCES[fixture]
            d = out_dir(self.root, fixture, builder)
            name = f"{self.repo[fixture]}:{builder}"
            before = tree_state(fx.path)
            r = run_build(builder, fx.path, *fx.build_args, *outputs(d, name))
            self.cache[key] = Build(fx, builder, r, d, name, before, tree_state(fx.path))
        return self.cache[key]

    def digest(self, fixture: str) -> str:
        """The fixture's digest, as the host builder gives it."""
        return self.get(fixture, "host").digest


@pytest.fixture(scope="module")
def work_root():
    d = Path(tempfile.mkdtemp(prefix="ocibuild-cli-", dir="/tmp"))
    d.chmod(0o755)                   # the rootless user writes below it and reads sources here
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check_builder_images(require_engine) -> None:
    """Every engine is reachable and has the Go builder image, and the host has Go."""
    for name in RUN_ENGINES:
        engine = require_engine(name)
        for image in BUILDER_IMAGES.values():
            if not engine.has_image(image):
                pytest.fail(f"{name} has no {image}; scripts/setup builds and loads it", pytrace=False)
    if shutil.which("go") is None:
        pytest.fail("the host Go toolchain (`go`) is not installed; run scripts/setup", pytrace=False)


@pytest.fixture(scope="module")
def builder_image(require_engine):
    check_builder_images(require_engine)


@pytest.fixture(scope="module")
def matrix(work_root, require_engine) -> Matrix:
    """Builds made on demand; the engines (and their builder image) are
    required only by the tests that build with them."""
    return Matrix(work_root, require_engine)


@pytest.fixture
def work(work_root) -> Path:
    d = work_root / f"case-{random.getrandbits(32):08x}"
    d.mkdir(mode=0o755)
    return d


# --- every fixture, every builder, one image ----------------------------------------------

# The builds themselves: in an engine, seconds to tens of seconds each.
@pytest.mark.parametrize("builder", [pytest.param(b, marks=(*needs(b), SLOW)) if needs(b) else b
                                     for b in BUILDERS])
@pytest.mark.parametrize("fixture", list(SOURCES))
def test_build(fixture, builder, matrix):
    """The build succeeds, prints only the digest of what it wrote, reads
    the source by the peer's rules, and leaves the source alone."""
    b = matrix.get(fixture, builder)
    digest = b.digest
    assert b.layout.digest == digest, "the printed digest is not the written image's"
    assert b.archive.is_file()
    engine = "podman" if builder == "podman-rootless" else builder
    assert re.search(rf"^ocibuild: compiling .*\({b.fixture.mode} mode\) with {engine}$",
                     b.result.stderr, re.M), b.result.stderr
    if b.fixture.mode != "gopath":
        assert f"-mod={b.fixture.mode}" in b.result.stderr, b.result.stderr
    assert b.source_after == b.source_before, "the build modified the source directory"
    if builder != "host":
        # A warm builder container did the compile, and stays for the next build
        # (fresh containers' removal: test_builders_engines.py; idle stop: test_warm_builders.py).
        m = re.search(r"compiling in builder container (ocibuild-builder-[0-9a-f]+)", b.result.stderr)
        assert m, b.result.stderr


@ENGINE
@ROOT
@pytest.mark.parametrize("fixture", list(SOURCES))
def test_digest_is_the_same_with_every_builder(fixture, matrix):
    digests = {builder: matrix.get(fixture, builder).digest for builder in BUILDERS}
    assert len(set(digests.values())) == 1, f"{fixture}: digests differ by builder: {digests}"


@pytest.mark.parametrize("fixture, go", [("chaincode", "1.19.8"), ("modern", "1.24.4")])
def test_the_toolchain_is_picked_by_the_go_line_and_recorded(fixture, go, matrix):
    """The lowest toolchain that fits the module's go line compiles it (the
    host's 1.19 for go 1.19, trixie's 1.24 for go 1.23.0), and the image
    says which, read back from the binary's own build information."""
    b = matrix.get(fixture, "host")
    assert re.search(rf"^ocibuild: toolchain: go{re.escape(go)} ", b.result.stderr, re.M), b.result.stderr
    assert b.layout.config["config"]["Labels"]["org.ocibuild.go.version"] == go


@ENGINE
@pytest.mark.parametrize("fixture", list(SOURCES))
def test_image_holds_a_static_binary_on_path(fixture, matrix):
    image = matrix.get(fixture, "docker").layout
    cfg = image.config["config"]
    user = cfg.get("User") or ""
    assert user and user.split(":")[0] not in ("0", "root"), f"default user {user!r} is root"
    assert not cfg.get("Entrypoint"), "a chaincode image has no entrypoint (the peer names the command)"
    assert "/usr/local/bin" in env_of(image).get("PATH", "").split(":"), env_of(image)
    entries = top_layer(image)
    info, data = entries[BINARY]
    assert info.isfile() and info.mode & 0o111 == 0o111, f"{BINARY}: mode {oct(info.mode)}"
    assert not elf_interp(data), f"{BINARY} is dynamically linked"
    # Nothing backend-specific (a host path, the builder's paths) is in the binary.
    for marker in (str(FIXTURES).encode(), b"/chaincode/input", b"/ocibuild-cache"):
        assert marker not in data, f"{marker!r} is in the binary"
    # Besides the binary, only the package's CouchDB indexes (a Fabric convention).
    indexes = SOURCES[fixture].path / "META-INF/statedb/couchdb/indexes"
    expected = {BINARY} | {str(p.relative_to(SOURCES[fixture].path)) for p in indexes.rglob("*") if p.is_file()}
    assert {n for n, (m, _) in entries.items() if m.isfile()} == expected


# Each engine runs the image that another builder made (all are one image).
RUN_FROM = {"docker": "podman-rootless", "podman": "docker", "podman-rootless": "host"}


@pytest.mark.parametrize("engine_name", [pytest.param(e, marks=(*needs(e), *needs(RUN_FROM[e])))
                                         for e in RUN_ENGINES])
@pytest.mark.parametrize("fixture", list(SOURCES))
def test_image_runs(fixture, engine_name, matrix, require_engine, engine_cleanup):
    """`ENGINE run IMAGE chaincode ...`: found on PATH, runs as the image's
    non-root default user, exits 0."""
    engine = require_engine(engine_name)
    b = matrix.get(fixture, RUN_FROM[engine_name])
    layout = b.layout
    engine("load", "--input", str(b.archive), check=True)
    engine_cleanup.image(engine, b.name)
    assert engine.image_id(b.name) == layout.config_digest
    env = [x for k, v in sorted(b.fixture.run_env.items()) for x in ("-e", f"{k}={v}")]
    r = engine("run", "--rm", "--network", "none", *env, b.name, *b.fixture.run_args)
    assert r.returncode == 0, f"{engine_name} run failed ({r.returncode}):\n{r.stdout}{r.stderr}"
    m = b.fixture.line.fullmatch(r.stdout.strip())
    assert m, f"unexpected output: {r.stdout!r} {r.stderr!r}"
    uid = int(m.group(1))
    assert uid != 0, "the image ran as root"
    user = layout.config["config"]["User"].split(":")[0]
    if user.isdigit():
        assert uid == int(user), f"ran as uid {uid}, the image's user is {user}"


@ENGINE
def test_binary_path_puts_the_binary_there_and_on_path(matrix, work, require_engine, engine_cleanup):
    name = unique_name("cli-binary-path") + ":v1"
    r = run_build("host", SOURCES["chaincode"].path, "--binary-path", "/opt/cc/bin/app", *outputs(work, name))
    digest = printed_digest(r)
    assert digest != matrix.digest("chaincode")
    image = read_layout(work / "layout")
    entries = top_layer(image)
    assert entries["opt/cc/bin/app"][0].isfile()
    assert entries["opt/cc/bin/app"][0].mode & 0o111 == 0o111
    assert BINARY not in entries, "the binary is also at the default path"
    path = env_of(image)["PATH"].split(":")
    assert "/opt/cc/bin" in path, path
    fx = SOURCES["chaincode"]
    env = [x for k, v in sorted(fx.run_env.items()) for x in ("-e", f"{k}={v}")]
    for engine_name in ("docker", "podman"):
        engine = require_engine(engine_name)
        engine("load", "--input", str(work / "image.tar"), check=True)
        engine_cleanup.image(engine, name)
        ok = engine("run", "--rm", "--network", "none", *env, name, "app", *fx.run_args[1:])
        assert ok.returncode == 0 and fx.line.fullmatch(ok.stdout.strip()), \
            f"{engine_name}: `app` by its bare name: {ok.returncode} {ok.stdout!r} {ok.stderr!r}"
        missing = engine("run", "--rm", "--network", "none", *env, name, "chaincode", *fx.run_args[1:])
        assert missing.returncode != 0, f"{engine_name}: `chaincode` ran though it was put elsewhere"


@pytest.mark.parametrize("binary_path", ["/opt/cc/bin/"])
def test_binary_path_naming_a_directory(binary_path, work):
    """A --binary-path that names a directory is either refused (one error
    line, nothing written) or means `DIR/chaincode` with DIR on PATH; never
    a binary under another name, or a PATH entry the user did not name."""
    out = out_dir(work, "out", "host")
    r = run_build("host", SOURCES["chaincode"].path, "--binary-path", binary_path,
                  *outputs(out, "ocibuild-test/bp:v1"))
    if r.returncode != 0:
        assert "--binary-path" in one_error_line(r)
        assert os.listdir(out) == []
        return
    printed_digest(r)
    image = read_layout(out / "layout")
    want = binary_path.rstrip("/") + "/chaincode"
    files = {n for n, (m, _) in top_layer(image).items() if m.isfile() and not n.startswith("META-INF/")}
    assert files == {want.lstrip("/")}, files
    assert env_of(image)["PATH"].split(":")[0] == (binary_path.rstrip("/") or "/"), env_of(image)["PATH"]


# --- auto ---------------------------------------------------------------------------------

AUTO_CASES = {
    "docker": {},                                              # docker with buildx is up here
    "podman": {"DOCKER_HOST": "unix:///nonexistent.sock"},     # docker unreachable
    "host": {"PATH": "/usr/lib/go-1.19/bin"},                  # neither docker nor podman on PATH
}


@pytest.mark.parametrize("expected", by_builder(AUTO_CASES))
def test_auto_says_which_builder_it_chose(expected, matrix, work, require_engine):
    env = AUTO_CASES[expected]
    if expected == "host":
        assert Path(env["PATH"], "go").exists(), "Debian's Go 1.19 is not at /usr/lib/go-1.19/bin"
    else:
        require_engine(expected)
    r = run_ocibuild("build", SOURCES["chaincode"].path, *outputs(work, "ocibuild-test/auto:v1"), env=env)
    assert printed_digest(r) == matrix.digest("chaincode")
    chosen = re.findall(r"^ocibuild: builder: (\S+) \(auto(?:; [^)]*)?\)$", r.stderr, re.M)
    assert chosen == [expected], r.stderr
    if expected != "docker":          # and why docker (and podman) were skipped
        assert "docker: " in r.stderr.split("builder: ", 1)[1].splitlines()[0], r.stderr
    assert re.search(rf"^ocibuild: compiling .* with {expected}$", r.stderr, re.M), r.stderr


# --- options that change the binary or the image ----------------------------------------

@ENGINE
def test_source_date_epoch_changes_the_digest_and_is_honoured(matrix, work):
    epoch = 1700000000
    digests = {}
    for builder in ("host", "docker"):
        d = out_dir(work, "sde", builder)
        r = run_build(builder, SOURCES["chaincode"].path, *outputs(d, "ocibuild-test/sde:v1"),
                      env={"SOURCE_DATE_EPOCH": str(epoch)})
        digests[builder] = printed_digest(r)
        image = read_layout(d / "layout")
        stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert image.config["created"] == stamp
        assert top_layer(image)[BINARY][0].mtime == epoch
    assert digests["host"] == digests["docker"], digests
    assert digests["host"] != matrix.digest("chaincode")


@ENGINE
def test_ldflags_reach_every_builder(matrix, work):
    """--ldflags '-s -w': a smaller (stripped) binary, the same from host and podman."""
    digests, sizes = {}, {}
    for builder in ("host", "podman"):
        d = out_dir(work, "ldflags", builder)
        r = run_build(builder, SOURCES["grpc-gopath"].path, "--import-path", GRPC_IMPORT_PATH,
                      "--ldflags", "-s -w", *outputs(d, "ocibuild-test/ldflags:v1"))
        digests[builder] = printed_digest(r)
        sizes[builder] = top_layer(read_layout(d / "layout"))[BINARY][0].size
    assert digests["host"] == digests["podman"], digests
    assert digests["host"] != matrix.digest("grpc-gopath")
    default = top_layer(matrix.get("grpc-gopath", "host").layout)[BINARY][0].size
    assert sizes["host"] < default, (sizes, default)


@pytest.mark.parametrize("fixture", list(SOURCES))
def test_same_source_elsewhere_gives_the_same_digest(fixture, matrix, work):
    """The image depends on the source, not on where it is checked out (a
    reviewer's copy and an air-gapped CI's copy must match)."""
    fx = SOURCES[fixture]
    copy = work / "some where" / "else" / fx.name
    shutil.copytree(fx.path, copy)
    r = run_build("host", copy, *fx.build_args, *outputs(out_dir(work, "out", "host"), "ocibuild-test/x:v1"))
    assert printed_digest(r) == matrix.digest(fixture)


@ENGINE
def test_tags_reach_every_builder(matrix, work):
    """--tags: a file behind a build tag is compiled in, the same by every builder."""
    src = work / "vendored"
    shutil.copytree(SOURCES["vendored"].path, src)
    (src / "loud.go").write_text('//go:build loud\n\npackage main\n\nimport "os"\n\n'
                                 'func init() { os.Stderr.WriteString("built with -tags loud\\n") }\n')
    digests = {}
    for builder in ("host", "docker", "podman"):
        d = out_dir(work, "tags", builder)
        r = run_build(builder, src, "--tags", "loud", *outputs(d, "ocibuild-test/tags:v1"))
        digests[builder] = printed_digest(r)
        assert b"built with -tags loud" in top_layer(read_layout(d / "layout"))[BINARY][1]
    assert len(set(digests.values())) == 1, digests
    assert digests["host"] != matrix.digest("vendored")
    # Without the tag the file is left out: the copy gives the fixture's own image.
    r = run_build("host", src, *outputs(out_dir(work, "notags", "host"), "ocibuild-test/tags:v1"))
    assert printed_digest(r) == matrix.digest("vendored")


# --- bad input: one error line, nothing written, no container --------------------------------

@dataclass(frozen=True)
class Bad:
    builder: str                      # --builder (podman-rootless: the rootless user's CLI)
    source: str                       # a fixture name, or "empty", "readme", "file", "missing"
    args: tuple[str, ...] = ()
    env: dict | None = None
    says: tuple[str, ...] = ()        # in the error line (regexes)
    before_error: str | None = None   # a regex for a line that must come before the error line
    engine: str | None = "same"       # whose containers to compare ("same": the builder's)


COMPILER = r"main\.go:12:\d+: cannot use"
NETWORK = (r"go mod vendor", r"--network default")
NO_IMAGE = "localhost/ocibuild/no-such-builder:1"
BAD = {
    **{f"compile-error-{b}": Bad(b, "broken", says=(r"go build failed",), before_error=COMPILER)
       for b in BUILDERS},
    **{f"needs-network-{b}": Bad(b, "needs-network", says=NETWORK) for b in BUILDERS},
    "empty-dir": Bad("podman", "empty", says=(r"not a Go package",)),
    "dir-without-go-files": Bad("podman", "readme", says=(r"not a Go package",)),
    "a-file": Bad("podman", "file", says=(r"file\.txt",)),
    "missing": Bad("docker", "missing", says=(r"nope",)),
    **{f"unknown-builder-image-{b}": Bad(b, "chaincode", ("--builder-image", NO_IMAGE),
                                         says=(re.escape(NO_IMAGE), "not found"))
       for b in ("docker", "podman", "podman-rootless")},
    "unknown-builder-image-from-env": Bad("docker", "chaincode", env={"OCIBUILD_BUILDER_IMAGE": NO_IMAGE},
                                          says=(re.escape(NO_IMAGE), "not found")),
    "podman-not-on-path": Bad("podman", "chaincode", env={"PATH": "/nonexistent"},
                              says=(r"podman is not installed",)),
    "docker-not-on-path": Bad("docker", "chaincode", env={"PATH": "/nonexistent"},
                              says=(r"docker is not installed",)),
    # No `go` on PATH is no longer an error: Debian's /usr/lib/go-* and unpacked toolchains are found.
    "no-such-go": Bad("host", "chaincode", args=("--go", "1.30"), says=(r"--go 1\.30: no such toolchain",
                                                                        r"available: go1\.19\.8")),
    "docker-unreachable": Bad("docker", "chaincode", env={"DOCKER_HOST": "unix:///nonexistent.sock"},
                              says=(r"docker", r"nonexistent\.sock|not usable|reach")),
    "bad-source-date-epoch": Bad("podman", "chaincode", env={"SOURCE_DATE_EPOCH": "yesterday"},
                                 says=(r"SOURCE_DATE_EPOCH",)),
    "unknown-builder": Bad("nosuch", "chaincode", says=(r"nosuch",), engine=None),
}


def bad_source(case: Bad, work: Path) -> Path:
    if case.source in SOURCES or (FIXTURES / case.source).is_dir():
        return FIXTURES / case.source
    p = work / "src"
    if case.source == "empty":
        p.mkdir()
    elif case.source == "readme":
        p.mkdir()
        (p / "README").write_text("not Go\n")
    elif case.source == "file":
        p = work / "file.txt"
        p.write_text("package main\n")
    elif case.source == "missing":
        p = work / "nope"
    return p


def bad_engine(case: Bad) -> str | None:
    """The engine whose containers the case compares."""
    return case.builder if case.engine == "same" else case.engine


@pytest.mark.parametrize("case_id", [pytest.param(k, marks=(*needs(c.builder), *needs(bad_engine(c))))
                                     for k, c in BAD.items()])
def test_bad_input(case_id, work, require_engine, request):
    case = BAD[case_id]
    if case.builder in RUN_ENGINES or bad_engine(case) in RUN_ENGINES:
        request.getfixturevalue("builder_image")
    src = bad_source(case, work)
    engine_name = bad_engine(case)
    engine = require_engine(engine_name) if engine_name in RUN_ENGINES else None
    before = container_ids(engine) if engine else set()
    source_before = tree_state(src) if src.is_dir() else None
    out = out_dir(work, "out", case.builder)
    r = run_build(case.builder, src, *case.args, *outputs(out, "ocibuild-test/bad:v1"), env=case.env)
    error = one_error_line(r)
    for pattern in case.says:
        assert re.search(pattern, error), f"{pattern!r} not in {error!r}"
    if case.before_error:
        lines = r.stderr.splitlines()
        hits = [i for i, line in enumerate(lines) if re.search(case.before_error, line)]
        assert hits and hits[0] < len(lines) - 1, f"no {case.before_error!r} before the error:\n{r.stderr}"
    assert sorted(os.listdir(out)) == [], f"output written: {os.listdir(out)}"
    if source_before is not None:
        assert tree_state(src) == source_before, "the source directory was modified"
    if engine:
        assert_no_new_container(engine, before, podman_name(r.stderr) if engine.is_podman else None)


@pytest.mark.parametrize("builder", by_builder(["host", "podman"]))
def test_quiet_compile_error_still_shows_the_compiler(builder, work, require_engine):
    """--quiet silences progress, not the diagnosis: the error line points at
    the compiler's messages, so they must be there."""
    if engine_for(builder):
        require_engine(builder)
    out = out_dir(work, "out", builder)
    r = run_ocibuild("-q", "build", FIXTURES / "broken", "--builder", builder,
                     *outputs(out, "ocibuild-test/quiet:v1"))
    error = one_error_line(r)
    assert "go build failed" in error
    assert os.listdir(out) == []
    assert re.search(COMPILER, r.stderr), f"no compiler message with -q:\n{r.stderr}"


# --- interrupts ----------------------------------------------------------------------------

def slow_grpc_copy(root: Path) -> tuple[Path, str]:
    """The grpc fixture plus one file that takes seconds to compile and is
    new to every cache (a warm build would end before a signal could land).
    Returns the copy and that file's unique name (it is on the compiler's
    command line, wherever the compile runs)."""
    src = root / "grpc-slow"
    shutil.copytree(SOURCES["grpc-gopath"].path, src)
    nonce = random.getrandbits(48)
    slow = f"slow_{nonce:012x}.go"
    body = [f"package main\n\nconst slowNonce = {nonce}\n\n"]
    body += [f"func slow{i}(x int) int {{ y := x*{i + 1} + slowNonce; "
             f"for j := 0; j < {i % 7 + 1}; j++ {{ y ^= y>>3 + j }}; return y }}\n"
             for i in range(12000)]
    (src / slow).write_text("".join(body))
    return src, slow


def ocibuild_pid(proc: subprocess.Popen) -> int:
    """The pid of the ocibuild process itself: `proc`, or for the rootless
    user the process that runuser started (env exec'd into ocibuild)."""
    if proc.args[0] != "runuser":
        return proc.pid

    def find():
        for line in processes_mentioning(str(OCIBUILD)):
            pid = int(line.split(":")[0])
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == proc.pid and not line.split(": ", 1)[1].startswith(("runuser", "env ")):
                return pid
        return None
    return wait_for(find, "the rootless ocibuild process", timeout=180)


@SLOW          # a compile that takes seconds, interrupted, then a build again
@pytest.mark.parametrize("builder,how", [pytest.param(b, how, marks=needs(b)) for b, how in [
    ("podman", "SIGTERM"),            # to the ocibuild process only
    ("podman-rootless", "SIGTERM"),
    ("docker", "SIGTERM"),
    ("podman", "SIGINT-group"),       # Ctrl-C: the whole process group, the engine client included
    ("docker", "SIGINT-group"),
]])
def test_interrupt_during_the_compile_leaves_nothing(builder, how, matrix, work, require_engine):
    engine = require_engine(builder)
    src, slow = slow_grpc_copy(work)
    out = out_dir(work, "out", builder)
    tmp = out_dir(work, "tmp", builder)      # ocibuild's own temporary files go here (TMPDIR)
    before = container_ids(engine)
    source_before = tree_state(src)
    errfile = work / "stderr"
    argv = [src, "--import-path", GRPC_IMPORT_PATH, *outputs(out, "ocibuild-test/interrupted:v1")]
    with open(errfile, "w") as err:
        if builder == "podman-rootless":
            env = {**rootless_env(), "TMPDIR": str(tmp)}
            cmd = ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                   str(OCIBUILD), "build", "--builder", "podman", *map(str, argv)]
            env = None
        else:
            cmd = [str(OCIBUILD), "build", "--builder", builder, *map(str, argv)]
            env = {**{k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}, "TMPDIR": str(tmp)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd="/",
                                start_new_session=True, env=env)
    try:
        # The compile has started: the go compiler is working on the slow file.
        wait_for(lambda: proc.poll() is not None or processes_mentioning(slow), "the compiler", timeout=180)
        assert proc.poll() is None, f"the build ended before it was interrupted:\n{errfile.read_text()}"
        if how == "SIGTERM":
            os.kill(ocibuild_pid(proc), signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        stdout, _ = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = errfile.read_text()
    assert proc.returncode != 0
    assert stdout == ""
    last = stderr.splitlines()[-1]
    assert last.startswith("error:") and "interrupted" in last, stderr
    assert os.listdir(out) == [], f"output left: {os.listdir(out)}"
    assert [n for n in os.listdir(tmp) if n.startswith("ocibuild")] == [], os.listdir(tmp)
    assert tree_state(src) == source_before, "the interrupted build modified the source"
    assert_no_new_container(engine, before, podman_name(stderr) if engine.is_podman else None)
    wait_for(lambda: not processes_mentioning(slow), "the interrupted compile to stop", timeout=120)
    # The next build works, and gives the usual image.
    again = out_dir(work, "again", builder)
    r = run_build(builder, SOURCES["grpc-gopath"].path, "--import-path", GRPC_IMPORT_PATH,
                  *outputs(again, "ocibuild-test/again:v1"))
    assert printed_digest(r) == matrix.digest("grpc-gopath")
