"""The engine builders against real engines: DockerBuilder (docker buildx,
docker driver of dockerd 20.10 / BuildKit 0.8), PodmanBuilder rootful, and
PodmanBuilder rootless (as the ordinary user `ocibuild`, from a subprocess
run with runuser), next to the host's Go.

All of them must give the same binary for the same source, fail a compile
error with the compiler's own messages, leave no container (also when
interrupted), never touch the source, and rebuild warm.

Engine tests are mandatory: an unreachable engine or a missing builder image
FAILS the test (conftest.require_engine); nothing here is skipped."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import site
import subprocess
import sys
import tarfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOTLESS_USER, processes_mentioning, sha256_file, tree_state, unique_name, wait_for

from ocibuild.builders.docker import DockerBuilder
from ocibuild.builders.images import DEFAULT_IMAGE, LOADED_REPO, ensure_image
from ocibuild.builders.podman import NAME_PREFIX, PodmanBuilder
from ocibuild.diagnoses import needs_network_hint
from ocibuild.engines import Engine
from ocibuild.errors import InputError, OcibuildError
from ocibuild.gosource import GOPATH, GoBuild, detect
from ocibuild.oci.model import Platform

IMAGE = DEFAULT_IMAGE
CHAINCODE = FIXTURES / "chaincode"
BROKEN = FIXTURES / "broken"
NEEDS_NETWORK = FIXTURES / "needs-network"
BUILDERS = ["docker", "podman", "podman-rootless"]
SYSTEM_GOPATH = "/usr/share/gocode"
HANG_GUARD = 900
ENGINE, ROOT, SLOW = pytest.mark.engine, pytest.mark.root, pytest.mark.slow


def needs(kind: str) -> tuple:
    """An engine builder needs `engine`; the rootless one runs as the user
    `ocibuild` (runuser): `root` too."""
    return (ENGINE, ROOT) if kind == "podman-rootless" else (ENGINE,)


def by_kind(kinds, *marks) -> list:
    return [pytest.param(k, marks=(*needs(k), *marks)) for k in kinds]

# A GOPATH-mode package using one of Debian's Go library packages (in the
# builder image and on the host under /usr/share/gocode).
GOPATH_MAIN = """package main

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

func main() {
	fmt.Println(len(protowire.AppendVarint(nil, 300)))
}
"""


# --- running a builder ------------------------------------------------------------

@dataclass
class Result:
    """What one compile did: the binary's sha256 (or the error), what the
    builder said, and what was left in its output directory."""
    sha256: str | None = None
    error: str | None = None           # exception class name
    message: str = ""
    output: str = ""                   # BuildError.output
    says: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    owner: int | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.says)

    def ok(self) -> str:
        assert self.error is None, f"compile failed: {self.error}: {self.message}\n{self.text}"
        return self.sha256


def make_builder(kind: str, image: str = IMAGE, **kw):
    return DockerBuilder(image, os.environ, **kw) if kind == "docker" else PodmanBuilder(image, **kw)


def compile_here(kind: str, source: Path, out: Path, import_path: str | None = None,
                 image: str = IMAGE, network: bool = False) -> Result:
    """Compile in this process with DockerBuilder or rootful PodmanBuilder."""
    job = GoBuild(detect(str(source), import_path), Platform.host(), network=network)
    res = Result()
    try:
        path = make_builder(kind, image).compile(job, str(out), res.says.append)
        res.sha256, res.owner = sha256_file(Path(path)), os.stat(path).st_uid
        assert Path(path) == out / "chaincode"
    except OcibuildError as e:
        res.error, res.message, res.output = type(e).__name__, str(e), getattr(e, "output", "")
    res.files = sorted(os.listdir(out))
    return res


# The same, in a fresh interpreter (as the rootless user, or to be interrupted).
SNIPPET = r"""
import hashlib, json, os, signal, site, sys
args = json.loads(sys.argv[1])
for d in args["sitedirs"]:
    site.addsitedir(d)

def terminated(signum, frame):
    raise KeyboardInterrupt          # as ocibuild's CLI does
signal.signal(signal.SIGTERM, terminated)

from ocibuild.builders.docker import DockerBuilder
from ocibuild.builders.podman import PodmanBuilder
from ocibuild.errors import OcibuildError
from ocibuild.gosource import GoBuild, detect
from ocibuild.oci.model import Platform

print("pid", os.getpid(), flush=True)
job = GoBuild(detect(args["source"], args["import_path"]), Platform.host())
out = args["out"]
builder = (DockerBuilder(args["image"], os.environ) if args["builder"] == "docker"
           else PodmanBuilder(args["image"]))
res = {}
try:
    path = builder.compile(job, out, lambda line: print("say", line, flush=True))
    with open(path, "rb") as f:
        res = {"sha256": "sha256:" + hashlib.sha256(f.read()).hexdigest(),
               "owner": os.stat(path).st_uid}
except OcibuildError as e:
    res = {"error": type(e).__name__, "message": str(e), "output": getattr(e, "output", "")}
except KeyboardInterrupt:
    res = {"error": "KeyboardInterrupt"}
res["files"] = sorted(os.listdir(out))
print("result", json.dumps(res), flush=True)
sys.exit(130 if res.get("error") == "KeyboardInterrupt" else 0)
"""


def parse_snippet(stdout: str, stderr: str) -> Result:
    res = Result()
    for line in stdout.splitlines():
        if line.startswith("say "):
            res.says.append(line[4:])
        elif line.startswith("result "):
            d = json.loads(line[7:])
            res.sha256, res.error = d.get("sha256"), d.get("error")
            res.message, res.output = d.get("message", ""), d.get("output", "")
            res.files, res.owner = d.get("files", []), d.get("owner")
            return res
    raise AssertionError(f"the builder subprocess printed no result:\n{stdout}\n{stderr}")


@dataclass(frozen=True)
class Rootless:
    """How to run Python as the rootless user: the interpreter, the
    site-packages to add, and a clean environment."""
    python: tuple[str, ...]
    sitedirs: tuple[str, ...]
    uid: int
    env: tuple[str, ...]

    def argv(self, args: dict) -> list[str]:
        return ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *self.env, *self.python,
                "-c", SNIPPET, json.dumps({**args, "sitedirs": list(self.sitedirs)})]


@pytest.fixture(scope="session")
def rootless(require_engine) -> Rootless:
    """The rootless podman user, able to run ocibuild's code. FAILS when the
    user cannot, saying what scripts/setup must provide."""
    require_engine("podman-rootless")
    pw = pwd.getpwnam(ROOTLESS_USER)
    env = (f"PATH={os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}", f"HOME={pw.pw_dir}",
           f"USER={ROOTLESS_USER}", f"LOGNAME={ROOTLESS_USER}",
           f"XDG_RUNTIME_DIR=/run/user/{pw.pw_uid}", "LANG=C.UTF-8")
    probe = "import sys, site\nfor d in sys.argv[1:]: site.addsitedir(d)\nimport ocibuild.builders.podman\n"
    venv_python = sys.executable
    system_python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for python, sitedirs in (((venv_python,), ()),
                             ((system_python, "-I"), tuple(site.getsitepackages()))):
        r = subprocess.run(["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *env, *python,
                            "-c", probe, *sitedirs], capture_output=True, text=True, cwd="/",
                           timeout=60)
        if r.returncode == 0:
            if tried:
                warnings.warn(
                    f"user {ROOTLESS_USER} cannot run {venv_python} ({tried[0]}); the rootless "
                    f"tests use {system_python} with the venv's site-packages instead. "
                    "scripts/setup should create .venv from an interpreter every user can run "
                    "(e.g. /usr/bin/python3), or make it readable.", stacklevel=2)
            return Rootless(python, sitedirs, pw.pw_uid, env)
        tried.append(f"{' '.join(python)}: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    pytest.fail(f"user {ROOTLESS_USER} cannot run ocibuild's code ({'; '.join(tried)}): "
                "scripts/setup must give it an interpreter it can run and read access to "
                "the checkout and the venv", pytrace=False)


def rootless_readable(rootless: Rootless, path: Path) -> None:
    r = subprocess.run(["runuser", "-u", ROOTLESS_USER, "--", "find", str(path), "!", "-readable"],
                       capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), (
        f"user {ROOTLESS_USER} cannot read all of {path}: {r.stdout}{r.stderr}; "
        "scripts/setup must make the checkout world-readable (chmod -R o+rX)")


def rootless_out(tmp_root: Path, rootless: Rootless) -> Path:
    out = fresh_dir(tmp_root)
    os.chown(out, rootless.uid, -1)
    return out


def compile_rootless(rootless: Rootless, source: Path, out: Path,
                     import_path: str | None = None, image: str = IMAGE) -> Result:
    rootless_readable(rootless, source)
    args = {"builder": "podman", "image": image, "source": str(source),
            "import_path": import_path, "out": str(out)}
    r = subprocess.run(rootless.argv(args), capture_output=True, text=True, cwd="/",
                       timeout=HANG_GUARD)
    return parse_snippet(r.stdout, r.stderr)


def compile_with(kind: str, source: Path, tmp_root: Path, request, import_path=None,
                 image: str = IMAGE, network: bool = False) -> Result:
    """Compile `source` with builder `kind` (docker, podman, podman-rootless)
    into a fresh output directory under `tmp_root` (readable by the rootless user)."""
    require = request.getfixturevalue("require_engine")
    require(kind)
    if kind == "podman-rootless":
        rl = request.getfixturevalue("rootless")
        return compile_rootless(rl, source, rootless_out(tmp_root, rl), import_path, image)
    return compile_here(kind, source, fresh_dir(tmp_root), import_path, image, network)


def host_build(source: Path, out_dir: Path, import_path: str | None = None) -> str:
    """The host's Go with the one reproducible command line (GoBuild.argv/env)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the host Go toolchain (`go`) is not installed; run scripts/setup", pytrace=False)
    job = GoBuild(detect(str(source), import_path), Platform.host())
    out = out_dir / "host-chaincode"
    cwd = source
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    if job.source.mode == GOPATH:
        gopath = out_dir / f"host-gopath-{random.getrandbits(32):08x}"
        cwd = gopath / "src" / job.source.import_path
        shutil.copytree(source, cwd)
        env.update(job.env(f"{gopath}:{SYSTEM_GOPATH}"))
    else:
        env.update(job.env())
    assert env["CGO_ENABLED"] == "0"
    argv = job.argv(str(out))
    argv[0] = go
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, f"host go build of {source} failed:\n{r.stdout}{r.stderr}"
    return sha256_file(out)


@pytest.fixture(scope="session")
def require_engine(require_engine):
    """conftest's `require_engine(name)`, also FAILING when that engine lacks
    the Go builder image (scripts/setup loads it): an engine is required,
    and checked, only by the tests that use it."""
    checked: set[str] = set()

    def require(name: str):
        engine = require_engine(name)
        if name not in checked:
            if not engine.has_image(IMAGE):
                pytest.fail(f"{name} has no {IMAGE}; scripts/setup builds and loads it", pytrace=False)
            checked.add(name)
        return engine
    return require


@pytest.fixture
def work(shared_tmp) -> Path:
    """A scratch directory every user can read (sources, output dirs)."""
    return shared_tmp


def containers(engine) -> set[str]:
    r = engine("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Image}} {{.Names}}", check=True)
    return set(r.stdout.splitlines())


def builder_containers(engine, image: str = IMAGE) -> set[str]:
    """Containers that a builder may have made: by name prefix or builder image."""
    return {c for c in containers(engine) if (NAME_PREFIX in c or image in c) and "ocibuild-builder-" not in c}


def assert_no_container_left(engine, before: set[str], says: list[str]) -> None:
    """Podman: the build's own container (named in what it said) is gone.
    Docker: BuildKit's are not containers, and no new one appeared. (Other
    builds may run meanwhile, so podman is checked by name only.)"""
    if engine.is_podman:
        name = podman_container_name(says)
        assert engine("container", "exists", name).returncode == 1, f"container {name} is left"
    else:
        new = builder_containers(engine) - before
        assert not new, f"docker containers left behind: {new}"


def podman_container_name(says: list[str]) -> str:
    for line in says:
        m = re.search(r"podman container (\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"the podman builder did not name its container: {says}")


def fresh_dir(root: Path) -> Path:
    d = root / f"out-{random.getrandbits(32):08x}"
    d.mkdir()
    return d


def copy_source(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# --- one source, one binary -------------------------------------------------------

@ENGINE
@ROOT
@SLOW
def test_every_builder_gives_the_host_go_binary(work, request):
    """The stdlib-only chaincode module: docker, podman, rootless podman and
    the host's Go give the same bytes; the source is untouched."""
    before = tree_state(CHAINCODE)
    shas = {"host": host_build(CHAINCODE, work)}
    for kind in BUILDERS:
        res = compile_with(kind, CHAINCODE, work, request)
        shas[kind] = res.ok()
        assert res.files == ["chaincode"], f"{kind} left {res.files} in its output directory"
    assert len(set(shas.values())) == 1, f"binaries differ: {shas}"
    assert tree_state(CHAINCODE) == before, "a build changed the source directory"


@ENGINE
@ROOT
@SLOW
def test_gopath_mode_with_debian_go_libraries(work, request):
    """No go.mod: GOPATH mode, importing a package from Debian's
    /usr/share/gocode — the same binary from every builder and the host."""
    src = work / "gopath-src" / "wirecc"
    src.mkdir(parents=True)
    (src / "main.go").write_text(GOPATH_MAIN)
    ip = "example.org/wirecc"
    before = tree_state(src)
    shas = {"host": host_build(src, work, ip)}
    for kind in BUILDERS:
        shas[kind] = compile_with(kind, src, work, request, import_path=ip).ok()
    assert len(set(shas.values())) == 1, f"binaries differ: {shas}"
    assert tree_state(src) == before


@ENGINE
def test_gopath_tree_with_its_own_dependencies(work, require_engine):
    """A Fabric GOPATH-mode package packs its dependencies beside it under
    src/: the whole tree is the GOPATH entry /chaincode/input."""
    from ocibuild.gosource import GoSource as PackageGoSource
    tree = work / "gopath-tree"
    app, dep = tree / "src/example.org/app", tree / "src/example.org/dep"
    app.mkdir(parents=True)
    dep.mkdir(parents=True)
    (dep / "dep.go").write_text('package dep\n\nconst Greeting = "hello from dep"\n')
    (app / "main.go").write_text('package main\n\nimport (\n\t"fmt"\n\n\t"example.org/dep"\n)\n\n'
                                 'func main() { fmt.Println(dep.Greeting) }\n')
    src = PackageGoSource(str(app), GOPATH, "example.org/app", gopath_root=str(tree))
    job = GoBuild(src, Platform.host())
    before = tree_state(tree)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"),
           **job.env(f"{tree}:{SYSTEM_GOPATH}")}
    argv = job.argv(str(work / "host-app"))
    r = subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 0, r.stderr
    shas = {"host": sha256_file(work / "host-app")}
    for kind in ("docker", "podman"):
        require_engine(kind)
        out = fresh_dir(work)
        said: list[str] = []
        shas[kind] = sha256_file(Path(make_builder(kind).compile(job, str(out), said.append)))
    assert len(set(shas.values())) == 1, f"binaries differ: {shas}"
    assert tree_state(tree) == before


@ENGINE
@ROOT
def test_rootless_binary_belongs_to_the_user(work, request, rootless):
    res = compile_with("podman-rootless", CHAINCODE, work, request)
    res.ok()
    assert res.owner == rootless.uid


@ENGINE
def test_dockerignore_in_the_source_is_not_applied(work, request):
    """BuildKit would drop what a .dockerignore names; the other builders see
    every file, so the docker builder must too (and the source keeps it)."""
    src = copy_source(CHAINCODE, work / "with-dockerignore")
    (src / ".dockerignore").write_text("config.go\n*.json\n")
    before = tree_state(src)
    docker = compile_with("docker", src, work, request).ok()
    assert docker == host_build(CHAINCODE, work)
    assert tree_state(src) == before


# --- failures ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", by_kind(BUILDERS))
def test_compile_error_shows_the_compiler_and_leaves_nothing(kind, work, request, require_engine):
    engine = require_engine(kind)
    before_tree = tree_state(BROKEN)
    before = builder_containers(engine)
    res = compile_with(kind, BROKEN, work, request)
    assert res.error == "BuildError", f"{kind}: expected BuildError, got {res.error}: {res.message}"
    assert re.search(r"main\.go:12:\d+: cannot use", res.text), \
        f"the compiler's message did not reach say():\n{res.text}"
    assert "see the compiler messages above" in res.message and "\n" not in res.message
    assert res.files == [], f"{kind} left {res.files} in its output directory"
    assert_no_container_left(engine, before, res.says)
    assert tree_state(BROKEN) == before_tree


@ENGINE
@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_unvendored_module_fails_without_network(kind, work, request, require_engine):
    engine = require_engine(kind)
    before = builder_containers(engine)
    res = compile_with(kind, NEEDS_NETWORK, work, request)
    assert res.error == "BuildError", f"{kind}: expected BuildError, got {res.error}: {res.message}"
    assert "example.com/x" in res.text, res.text
    job = GoBuild(detect(str(NEEDS_NETWORK)), Platform.host())
    assert needs_network_hint(job, res.output), \
        f"the error output does not say the network is needed:\n{res.output}"
    assert res.files == []
    assert_no_container_left(engine, before, res.says)


@ENGINE
@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_builder_image_missing_from_the_engine(kind, work, request, require_engine):
    require_engine(kind)
    name = "localhost/" + unique_name("absent") + ":1"
    res = compile_with(kind, CHAINCODE, work, request, image=name)
    assert res.error == "InputError"
    assert f"builder image {name} not found in {kind}" in res.message
    assert "--builder-image docker-archive:FILE" in res.message
    assert res.files == []


def test_docker_unreachable(monkeypatch, work):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{work}/no-dockerd.sock")
    res = compile_here("docker", CHAINCODE, fresh_dir(work))
    assert res.error == "EngineError", res.message
    assert "start dockerd" in res.message and "--builder podman" in res.message
    assert "\n" not in res.message


def test_podman_not_installed(monkeypatch, work):
    monkeypatch.setenv("PATH", str(work))
    res = compile_here("podman", CHAINCODE, fresh_dir(work))
    assert res.error == "EngineError", res.message
    assert "podman is not installed" in res.message and "--builder docker" in res.message


# --- builder images from archives ----------------------------------------------------

@pytest.fixture
def tiny_image(build_image, work, require_engine, engine_cleanup):
    """A small image without `go`, written by ocibuild as a docker-archive
    (with a name), an oci-archive and an oci layout (both without one).
    Returns (name, config digest, paths); removed from docker and podman after."""
    engines = [require_engine("docker"), require_engine("podman")]
    content = work / "hello.txt"
    content.write_bytes(os.urandom(64))      # a config digest of its own
    name = "localhost/" + unique_name("tiny-builder") + ":1"
    da, oa, ol = work / "tiny-docker.tar", work / "tiny-oci.tar", work / "tiny-layout"
    build_image("--base", "scratch", "--add", f"{content}:/hello.txt",
                "--output", f"docker-archive:{da}:{name}", "--output", f"oci-archive:{oa}",
                "--output", f"oci:{ol}")
    with tarfile.open(da) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        config = "sha256:" + hashlib.sha256(tar.extractfile(manifest[0]["Config"]).read()).hexdigest()
    derived = f"{LOADED_REPO}:{config.partition(':')[2]}"
    for engine in engines:
        engine_cleanup.image(engine, name)
        engine_cleanup.image(engine, derived)
    return {"name": name, "config": config, "derived": derived,
            "docker-archive": da, "oci-archive": oa, "oci": ol}


@ENGINE
@pytest.mark.parametrize("kind", ["docker", "podman"])
@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive", "oci"])
def test_archive_builder_image_is_loaded_once(kind, transport, tiny_image):
    ref = f"{transport}:{tiny_image[transport]}"
    want = tiny_image["name"] if transport == "docker-archive" else tiny_image["derived"]
    said: list[str] = []
    assert Engine(kind).image_id(want) is None
    assert ensure_image(Engine(kind), ref, said.append) == want
    assert Engine(kind).image_id(want) == tiny_image["config"]
    assert any("loading the builder image" in s for s in said), said
    said.clear()
    assert ensure_image(Engine(kind), ref, said.append) == want
    assert said == [], f"loaded again although present: {said}"


@ENGINE
@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_archive_replaces_a_different_image_of_the_same_name(kind, tiny_image, build_image, work,
                                                            require_engine):
    engine = require_engine(kind)
    ensure_image(Engine(kind), f"docker-archive:{tiny_image['docker-archive']}", lambda s: None)
    other = work / "other.tar"
    content = work / "other.txt"
    content.write_bytes(os.urandom(64))
    build_image("--base", "scratch", "--add", f"{content}:/other.txt",
                "--output", f"docker-archive:{other}:{tiny_image['name']}")
    said: list[str] = []
    assert ensure_image(Engine(kind), f"docker-archive:{other}", said.append) == tiny_image["name"]
    try:
        assert said, "an image of the same name but other content was taken as the archive's"
        assert Engine(kind).image_id(tiny_image["name"]) != tiny_image["config"]
    finally:
        # The first image lost its name: remove it by ID (the fixture removes the name).
        engine("image", "rm", tiny_image["config"].partition(":")[2])


@ENGINE
@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_builder_image_without_go(kind, tiny_image, work):
    res = compile_here(kind, CHAINCODE, fresh_dir(work), image=f"docker-archive:{tiny_image['docker-archive']}")
    assert res.error == "InputError", f"{res.error}: {res.message}"
    assert "has no `go` on PATH" in res.message
    assert res.files == []


def test_bad_archive_is_refused(work):
    junk = work / "junk.tar"
    junk.write_text("not a tar\n")
    for ref, want in ((f"docker-archive:{junk}", "is not a readable tar archive"),
                      (f"docker-archive:{work}/absent.tar", "does not exist")):
        with pytest.raises(InputError, match=want):
            ensure_image(Engine("docker"), ref, lambda s: None)


@ENGINE
@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_go_builder_archive_already_loaded(kind, work, request):
    """The air-gapped way: --builder-image docker-archive:FILE of the Go
    builder; present already (scripts/setup), so not loaded again, and the
    binary is the usual one."""
    archives = sorted(Path("/var/cache/ocibuild").glob("go-builder-bookworm-*.tar"))
    if len(archives) != 1:
        pytest.fail(f"expected one Go builder archive from scripts/setup, found {archives}", pytrace=False)
    archive = archives[0]
    said: list[str] = []
    assert ensure_image(Engine(kind), f"docker-archive:{archive}", said.append) == IMAGE
    assert said == []
    res = compile_with(kind, CHAINCODE, work, request, image=f"docker-archive:{archive}")
    assert res.ok() == host_build(CHAINCODE, work)


# --- warm rebuilds --------------------------------------------------------------------

@pytest.mark.parametrize("kind", by_kind(BUILDERS, SLOW))
def test_warm_rebuild_after_a_one_line_change(kind, work, request):
    src = copy_source(CHAINCODE, work / "edited")
    first = compile_with(kind, src, work, request).ok()
    again = compile_with(kind, src, work, request).ok()
    assert again == first
    main = src / "main.go"
    main.write_text(main.read_text() + f"\nconst rebuildNonce = {random.getrandbits(40)}\n")
    changed = compile_with(kind, src, work, request)
    assert changed.ok() != first
    assert changed.ok() == host_build(src, work)


# --- interrupts --------------------------------------------------------------------------

def slow_module(root: Path, functions: int = 12000) -> Path:
    """A module whose one package takes several seconds to compile, and is
    new to every cache (a random constant)."""
    root.mkdir()
    (root / "go.mod").write_text("module example.org/slow\n\ngo 1.19\n")
    nonce = random.getrandbits(40)
    body = [f"package main\n\nimport \"fmt\"\n\nconst nonce = {nonce}\n"]
    for i in range(functions):
        body.append(f"func f{i}(x int) int {{ y := x*{i + 1} + nonce; "
                    f"for j := 0; j < {i % 7 + 1}; j++ {{ y ^= y>>3 + j }}; return y }}\n")
    body.append("func main() {\n\ts := 0\n")
    body.extend(f"\ts += f{i}({i})\n" for i in range(functions))
    body.append("\tfmt.Println(s)\n}\n")
    (root / "main.go").write_text("".join(body))
    return root


@SLOW          # a compile that takes seconds, interrupted, then a build again
@pytest.mark.parametrize("kind,how", [pytest.param(k, how, marks=needs(k)) for k, how in [
    ("podman", "SIGTERM"),          # to the process only: the CLI turns it into KeyboardInterrupt
    ("podman", "SIGINT-group"),     # Ctrl-C: the whole process group, podman included
    ("podman-rootless", "SIGTERM"),
    ("docker", "SIGTERM"),
    ("docker", "SIGINT-group"),
]])
def test_interrupt_leaves_no_container_and_no_output(kind, how, work, request, require_engine):
    engine = require_engine(kind)
    src = slow_module(work / "slow")
    args = {"builder": "docker" if kind == "docker" else "podman", "image": IMAGE,
            "source": str(src), "import_path": None}
    if kind == "podman-rootless":
        rl = request.getfixturevalue("rootless")
        out = rootless_out(work, rl)
        argv = rl.argv({**args, "out": str(out)})
    else:
        out = work / "out"
        out.mkdir()
        argv = [sys.executable, "-c", SNIPPET, json.dumps({**args, "out": str(out), "sitedirs": []})]
    before = builder_containers(engine)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/", start_new_session=True)
    try:
        lines = []
        pid = None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("pid "):
                pid = int(line.split()[1])
            if line.startswith("say compiling"):
                break
        assert pid, f"the builder subprocess did not start:\n{''.join(lines)}{proc.stderr.read()}"
        if kind == "docker":
            wait_for(lambda: processes_mentioning(f"dest={out}/"), "docker buildx build to start")
            time.sleep(2)                   # into the RUN step: the compile takes much longer
            marker = str(out)
        else:
            name = podman_container_name([line[4:] for line in lines if line.startswith("say ")])
            wait_for(lambda: engine("ps", "--filter", f"name={name}", "--format",
                                    "{{.Names}}").stdout.strip(), f"container {name} to run")
            marker = name
        if how == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = parse_snippet("".join(lines) + stdout, stderr)
    assert res.error == "KeyboardInterrupt", f"{res.error}: {res.message}\n{stdout}\n{stderr}"
    assert proc.returncode == 130
    assert res.files == [] and os.listdir(out) == [], f"output left: {os.listdir(out)}"
    assert_no_container_left(engine, before, res.says)
    wait_for(lambda: not processes_mentioning(marker), f"processes of the build ({marker}) to end", 30)
    # The next build works (no stale lock, container or cache state).
    compile_with(kind, CHAINCODE, work, request).ok()
