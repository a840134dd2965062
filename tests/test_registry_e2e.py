"""Pushing to and pulling bases from REAL registries, through the CLI.

The environment (tests/registry_harness.py), all on 127.0.0.1, started and
stopped here, nothing left running or installed afterwards:

- `main`: Debian's docker-registry (distribution 2.8) with TLS (a throw-away
  CA, installed as /etc/docker/certs.d/127.0.0.1:PORT/ca.crt for the session)
  and htpasswd (bcrypt) auth. Requests are counted from its access log.
- `token`: the same registry configured for Bearer tokens, and a token
  server of ours (TLS) issuing RS256 JWTs for the scopes each user may have;
  it records what was asked.
- `proxied`: a plain-HTTP registry (htpasswd, relative Location URLs) behind
  a TLS proxy of ours that records requests and injects faults (400 with a
  JSON error, 429/503 with Retry-After, a lying HEAD, blob downloads
  redirected to another origin).
- `untrusted`: a TLS registry whose CA is NOT installed for its port.
- Dedicated registries per test where one is killed, stopped or filled with
  gigabytes.

Every ocibuild run gets its own DOCKER_CONFIG, XDG_RUNTIME_DIR,
XDG_CONFIG_HOME and OCIBUILD_CACHE_DIR: nothing of the machine's own logins
or cache is read or written. A missing docker-registry or skopeo is a
failure, never a skip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES, OCIBUILD, printed_digest, read_layout, run_ocibuild, sha256_file, tree_state
from registry_harness import (
    CERTS_D,
    OCI_INDEX,
    OCI_MANIFEST,
    REGISTRY_BIN,
    BlobHost,
    CaDirs,
    ConnCounter,
    Fault,
    Proxy,
    Registry,
    TokenServer,
    die_with_parent,
    free_port,
    helper_calls,
    make_certs,
    secret_forms,
    skopeo,
    write_cred_helper,
    write_docker_config,
    write_htpasswd,
    write_podman_auth,
)

USERS = {"alice": f"Al1ce-{secrets.token_hex(8)}",       # pull and push everywhere
         "reader": f"Re4der-{secrets.token_hex(8)}"}     # pull only (token registry)
ALICE = ("alice", USERS["alice"])
READER = ("reader", USERS["reader"])
WRONG = ("alice", f"Wr0ng-{secrets.token_hex(8)}")
# The environment ocibuild must not take from the machine running the tests.
UNSET = ("SOURCE_DATE_EPOCH", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR",
         "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "OCIBUILD_CACHE_DIR")
MB = 1000 * 1000
GIB = 1 << 30
SLOW = pytest.mark.slow
# Every test runs against the harness's registries, whose CA is installed
# under /etc/docker/certs.d (root).
pytestmark = [pytest.mark.registry, pytest.mark.root]


def _acl(user: str, repo: str) -> set[str]:
    if user == "alice":
        return {"pull", "push"}
    if user == "reader" or repo.startswith("public/"):     # public/*: anyone may pull
        return {"pull"}
    return set()


def repo_name(purpose: str) -> str:
    return f"e2e/{purpose}-{uuid.uuid4().hex[:10]}"


# --- the environment ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    if not REGISTRY_BIN.exists():
        pytest.fail(f"{REGISTRY_BIN} is missing: apt-get install docker-registry (scripts/setup does)",
                    pytrace=False)
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is missing: apt-get install skopeo (scripts/setup does)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the registry tests install CA certificates under /etc/docker/certs.d and "
                    "must run as root", pytrace=False)
    return make_certs(tmp_path_factory.mktemp("registry-certs"))


@pytest.fixture(scope="session")
def ca_dirs(certs):
    CaDirs.sweep()
    cas = CaDirs(certs.ca_cert)
    yield cas
    cas.remove_all()


@pytest.fixture(scope="session")
def htpasswd(tmp_path_factory):
    return write_htpasswd(tmp_path_factory.mktemp("registry-auth") / "htpasswd", USERS)


@pytest.fixture(scope="session")
def main_registry(tmp_path_factory, certs, ca_dirs, htpasswd):
    reg = Registry(tmp_path_factory.mktemp("registry-main"), tls=certs, htpasswd=htpasswd)
    reg.start()
    ca_dirs.trust(reg.hostport)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def untrusted_registry(tmp_path_factory, certs, htpasswd):
    """TLS with the test CA, which is NOT installed for this port."""
    reg = Registry(tmp_path_factory.mktemp("registry-untrusted"), tls=certs, htpasswd=htpasswd)
    reg.start()
    yield reg
    reg.stop()


@dataclass
class TokenEnv:
    registry: Registry
    tokens: TokenServer


@pytest.fixture(scope="session")
def token_env(tmp_path_factory, certs, ca_dirs):
    tokens = TokenServer(certs, USERS, _acl)
    tokens.start()
    ca_dirs.trust(tokens.hostport)
    reg = Registry(tmp_path_factory.mktemp("registry-token"), tls=certs, token=tokens.registry_auth())
    try:
        reg.start()
        ca_dirs.trust(reg.hostport)
        yield TokenEnv(reg, tokens)
    finally:
        reg.stop()
        tokens.stop()


@dataclass
class Proxied:
    plain: Registry         # plain HTTP, htpasswd, relative Location URLs
    proxy: Proxy            # TLS in front of it, trusted, counting, faults
    blobs: BlobHost         # another origin for redirected blob downloads


@pytest.fixture(scope="session")
def proxied_env(tmp_path_factory, certs, ca_dirs, htpasswd):
    plain = Registry(tmp_path_factory.mktemp("registry-plain"), tls=None, htpasswd=htpasswd,
                     relative_urls=True)
    plain.start()
    proxy = Proxy(plain, certs)
    blobs = BlobHost(plain, certs)
    try:
        proxy.start()
        ca_dirs.trust(proxy.hostport)
        blobs.start()
        ca_dirs.trust(blobs.hostport)
        yield Proxied(plain, proxy, blobs)
    finally:
        blobs.stop()
        proxy.stop()
        plain.stop()


@pytest.fixture
def proxied(proxied_env):
    """The proxied registry, its faults and redirects cleared after the test."""
    yield proxied_env
    proxied_env.proxy.clear()


@pytest.fixture
def new_registry(tmp_path_factory, certs, ca_dirs, htpasswd):
    """`new_registry()` -> a dedicated TLS + htpasswd registry (trusted),
    stopped and its storage deleted after the test."""
    made: list[Registry] = []

    def make() -> Registry:
        reg = Registry(tmp_path_factory.mktemp("registry-own"), tls=certs, htpasswd=htpasswd)
        made.append(reg)
        reg.start()
        ca_dirs.trust(reg.hostport)
        return reg
    yield make
    for reg in made:
        reg.stop()
        ca_dirs.untrust(reg.hostport)
        shutil.rmtree(reg.root, ignore_errors=True)


class Client:
    """How ocibuild is run here: its own docker config (logins), podman
    auth dir, XDG dirs and blob cache, nothing from the machine's."""

    def __init__(self, root: Path, logins: dict[str, tuple[str, str]]):
        self.root = root
        self.docker_dir = root / "docker"
        self.runtime_dir = root / "run"
        self.bin = root / "bin"
        for d in (self.docker_dir, self.runtime_dir, self.bin, root / "xdg-config", root / "xdg-cache"):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        self.logins = dict(logins)
        self.config_json = self.docker_dir / "config.json"
        self.write_config(auths=self.logins)
        self._caches = 0
        self.cache = self.fresh_cache()

    def write_config(self, **kw) -> Path:
        return write_docker_config(self.docker_dir, **kw)

    def login(self, hostport: str, creds: tuple[str, str]) -> None:
        self.logins[hostport] = creds
        self.write_config(auths=self.logins)

    def fresh_cache(self) -> Path:
        """A new, empty blob cache for the next runs (another machine's)."""
        self._caches += 1
        self.cache = self.root / f"cache{self._caches}"
        return self.cache

    @property
    def env(self) -> dict:
        return {"DOCKER_CONFIG": str(self.docker_dir), "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "XDG_CONFIG_HOME": str(self.root / "xdg-config"),
                "XDG_CACHE_HOME": str(self.root / "xdg-cache"), "OCIBUILD_CACHE_DIR": str(self.cache),
                "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def full_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        env.update(self.env)
        return env

    def run(self, *args, cwd=None, quiet: bool = True) -> subprocess.CompletedProcess:
        return run_ocibuild(*(("-q",) if quiet else ()), *args, env=self.env, unset=UNSET, cwd=cwd)

    def assemble(self, *args) -> str:
        return printed_digest(self.run("assemble", *args))


@pytest.fixture
def client(tmp_path, main_registry, token_env, proxied_env, untrusted_registry):
    """A Client logged in (docker config `auths`) as alice everywhere."""
    hosts = [main_registry.hostport, token_env.registry.hostport, proxied_env.proxy.hostport,
             proxied_env.plain.hostport, untrusted_registry.hostport]
    return Client(tmp_path / "client", {h: ALICE for h in hosts})


def unique_file(d: Path, name: str = "payload.txt") -> Path:
    """A small file whose content no other test has: its layer is new to
    every registry."""
    p = d / name
    p.write_text(f"{name} {uuid.uuid4().hex}\n")
    return p


def one_error(r: subprocess.CompletedProcess, *, secrets_: tuple[tuple[str, str], ...] = (), code: int = 5) -> str:
    """The CLI's error contract: exit `code` (5, a registry error, unless
    said), nothing on stdout, exactly one `error: ` line (-q), no traceback,
    no secret. Returns the line."""
    assert r.returncode == code, f"expected exit {code}, got {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stdout == "", f"stdout must be empty on error: {r.stdout!r}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line: {r.stderr!r}"
    for user, password in secrets_:
        for form in secret_forms(user, password):
            assert form not in r.stderr, f"a secret of {user} is in stderr: {r.stderr!r}"
    return lines[0]


def assert_sessions_closed(reg: Registry, repo: str, reqs) -> None:
    """Every upload session a push opened was finished or cancelled: the
    registry holds no abandoned one."""
    opened = sum(a.is_upload_start for a in reqs)
    closed = sum(bool(a.uploaded_digest) or a.is_upload_cancel for a in reqs)
    assert opened == closed, f"{opened} upload session(s) opened, {closed} finished or cancelled"
    assert reg.open_uploads(repo) == [], f"abandoned upload sessions: {reg.open_uploads(repo)}"


def content_state(root: Path) -> dict:
    """tree_state without directory mtimes: what a reader of the outputs
    sees (a staging directory made and removed inside an existing layout
    bumps its mtime, and changes nothing in it)."""
    return {k: (v[:2] if v[0] == "dir" else v) for k, v in tree_state(root).items()}


def skopeo_digest(ref: str, *, creds=ALICE, tls_verify: bool = True) -> str:
    args = ["inspect", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if creds:
        args += ["--creds", f"{creds[0]}:{creds[1]}"]
    r = skopeo(*args, ref)
    assert r.returncode == 0, f"skopeo inspect {ref} failed: {r.stderr}"
    return json.loads(r.stdout)["Digest"]


# --- push and read back ---------------------------------------------------------------------

def test_push_reads_back_with_skopeo_same_digest_same_bytes(client, main_registry, tmp_path):
    repo = repo_name("push")
    f = unique_file(tmp_path)
    digest = client.assemble("--base", "static", "--add", f"{f}:/data/payload.txt",
                             "--output", main_registry.ref(f"{repo}:v1"),
                             "--output", f"oci:{tmp_path / 'local'}:v1")
    local = read_layout(tmp_path / "local", "v1")
    assert local.digest == digest

    # skopeo, by tag and by digest: the digest ocibuild printed.
    assert skopeo_digest(main_registry.ref(f"{repo}:v1")) == digest
    assert skopeo_digest(main_registry.ref(f"{repo}@{digest}")) == digest

    # The registry serves the very bytes, with the OCI media type as Content-Type.
    status, headers, body = main_registry.manifest(repo, "v1", ALICE)
    assert status == 200
    assert headers["content-type"] == OCI_MANIFEST
    assert headers["docker-content-digest"] == digest
    assert body == local.manifest_bytes

    # skopeo copies it back into an OCI layout: same manifest and config bytes.
    r = skopeo("copy", "--src-creds", "alice:" + ALICE[1], main_registry.ref(f"{repo}:v1"),
               f"oci:{tmp_path / 'copy'}:v1")
    assert r.returncode == 0, r.stderr
    copy = read_layout(tmp_path / "copy", "v1")
    assert copy.manifest_bytes == local.manifest_bytes
    assert copy.config_bytes == local.config_bytes
    for d in copy.layer_digests:
        assert sha256_file(tmp_path / "copy" / "blobs" / "sha256" / d.split(":")[1]) == d


@SLOW          # a Go build with the host's toolchain
def test_chaincode_build_pushes(client, main_registry, tmp_path):
    repo = repo_name("chaincode")
    r = client.run("build", "--builder", "host", str(FIXTURES / "chaincode"),
                   "--output", main_registry.ref(f"{repo}:v1"))
    digest = printed_digest(r)
    got = skopeo("inspect", "--creds", "alice:" + ALICE[1], main_registry.ref(f"{repo}:v1"))
    assert got.returncode == 0, got.stderr
    info = json.loads(got.stdout)
    assert info["Digest"] == digest
    assert info["Labels"].get("org.hyperledger.fabric.chaincode.type") == "GOLANG", info["Labels"]


def test_second_push_uploads_nothing_and_a_new_image_only_its_new_blobs(client, main_registry, tmp_path):
    repo = repo_name("dedup")
    one, two = unique_file(tmp_path, "one.txt"), unique_file(tmp_path, "two.txt")
    # The image's own blobs and manifests (its SBOM referrer's push: test_referrers.py).
    first = ["--sbom", "none", "--base", "static", "--add", f"{one}:/data/one.txt"]

    mark = main_registry.mark()
    d1 = client.assemble(*first, "--output", main_registry.ref(f"{repo}:v1"))
    reqs = main_registry.requests(mark)
    assert [a for a in reqs if a.is_upload_start], "the first push uploaded nothing?"
    # The manifest goes last (by digest, then by tag: the tag appears only
    # once everything it points to is there).
    writes = [a for a in reqs if a.method not in ("GET", "HEAD")]
    puts = [a.path for a in writes if a.is_manifest_put]
    assert set(puts) <= {f"/v2/{repo}/manifests/v1", f"/v2/{repo}/manifests/{d1}"}, puts
    assert writes[-1].path == f"/v2/{repo}/manifests/v1", [(a.method, a.path) for a in writes]

    assert_sessions_closed(main_registry, repo, reqs)

    # The same image again: every blob is there; no byte uploaded, no mount.
    # (An upload session opened only to prove push access, then cancelled,
    # carries no data: it is allowed, and must not be left open.)
    mark = main_registry.mark()
    assert client.assemble(*first, "--output", main_registry.ref(f"{repo}:v1")) == d1
    reqs = main_registry.requests(mark)
    wasted = [(a.method, a.path, a.status) for a in reqs if a.is_upload_data or a.is_mount]
    assert wasted == [], f"the second push of the same image uploaded: {wasted}"
    assert_sessions_closed(main_registry, repo, reqs)
    failed = [(a.method, a.path, a.status) for a in reqs
              if a.status >= 400 and a.path != "/v2/" and a.method != "HEAD"]   # /v2/: the challenge
    assert failed == [], failed
    assert skopeo_digest(main_registry.ref(f"{repo}:v1")) == d1

    # A new image on the same base: only its new layer and its config go up,
    # each in one monolithic upload (small blobs: no PATCH).
    mark = main_registry.mark()
    d2 = client.assemble("--sbom", "none", "--base", "static", "--add", f"{two}:/data/two.txt",
                         "--output", main_registry.ref(f"{repo}:v2"),
                         "--output", f"oci:{tmp_path / 'two'}:v2")
    img2 = read_layout(tmp_path / "two", "v2")
    reqs = main_registry.requests(mark)
    uploaded = sorted(a.uploaded_digest for a in reqs if a.uploaded_digest)
    assert uploaded == sorted([img2.layer_digests[-1], img2.config_digest]), \
        f"uploaded {uploaded}; expected only the new layer and the config"
    assert [a for a in reqs if a.method == "PATCH"] == [], "small blobs should go up in one request"
    assert_sessions_closed(main_registry, repo, reqs)
    assert [a for a in reqs if a.is_mount] == []
    assert skopeo_digest(main_registry.ref(f"{repo}:v2")) == d2


# --- bases from a registry ------------------------------------------------------------------

def test_base_from_registry_is_extended_and_its_layers_mounted_not_uploaded(client, main_registry, tmp_path):
    base_repo, app_repo = repo_name("base"), repo_name("app")
    fb, fa = unique_file(tmp_path, "base.txt"), unique_file(tmp_path, "app.txt")
    b = client.assemble("--base", "static", "--add", f"{fb}:/data/base.txt",
                        "--output", main_registry.ref(f"{base_repo}:v1"),
                        "--output", f"oci:{tmp_path / 'base'}:v1")
    base = read_layout(tmp_path / "base", "v1")

    # Another machine (an empty cache) pulls the base by tag, extends it and
    # pushes to another repository of the same registry.
    client.fresh_cache()
    mark = main_registry.mark()
    d = client.assemble("--sbom", "none", "--base", main_registry.ref(f"{base_repo}:v1"),
                        "--add", f"{fa}:/data/app.txt",
                        "--output", main_registry.ref(f"{app_repo}:v1"),
                        "--output", f"oci:{tmp_path / 'app'}:v1")
    app = read_layout(tmp_path / "app", "v1")
    assert app.layer_digests[:len(base.layer_digests)] == base.layer_digests
    assert app.diff_ids[:len(base.diff_ids)] == base.diff_ids
    assert len(app.layer_digests) == len(base.layer_digests) + 1

    reqs = main_registry.requests(mark)
    mounts = [a for a in reqs if a.is_mount]
    assert sorted(a.query["mount"] for a in mounts) == sorted(base.layer_digests), \
        f"expected the base layers to be mounted: {[(a.query, a.status) for a in mounts]}"
    assert all(a.query.get("from") == base_repo and a.status == 201 for a in mounts), \
        [(a.query, a.status) for a in mounts]
    uploaded = sorted(a.uploaded_digest for a in reqs if a.uploaded_digest)
    assert uploaded == sorted([app.layer_digests[-1], app.config_digest]), \
        f"uploaded {uploaded}: base layers must be mounted, not uploaded"
    assert skopeo_digest(main_registry.ref(f"{app_repo}:v1")) == d

    # Pinned by digest: the same base, the same layers.
    pinned = client.assemble("--base", main_registry.ref(f"{base_repo}@{b}"),
                             "--add", f"{fa}:/data/app.txt", "--output", f"oci:{tmp_path / 'pinned'}:v1")
    p = read_layout(tmp_path / "pinned", "v1")
    assert p.digest == pinned
    assert p.layer_digests == app.layer_digests


def test_pinned_cached_base_needs_no_network(client, new_registry, tmp_path):
    reg = new_registry()
    client.login(reg.hostport, ALICE)
    repo = repo_name("pinned")
    fb, fa = unique_file(tmp_path, "base.txt"), unique_file(tmp_path, "app.txt")
    b = client.assemble("--base", "static", "--add", f"{fb}:/data/base.txt",
                        "--output", reg.ref(f"{repo}:v1"))
    client.fresh_cache()
    args = ["--base", reg.ref(f"{repo}@{b}"), "--add", f"{fa}:/data/app.txt"]
    first = client.assemble(*args, "--output", f"oci:{tmp_path / 'first'}:v1")
    assert any(client.cache.rglob("*")), "nothing was cached"

    # Second time, registry up: not one request.
    mark = reg.mark()
    assert client.assemble(*args, "--output", f"oci:{tmp_path / 'second'}:v1") == first
    reqs = reg.requests(mark)
    assert reqs == [], f"a pinned, cached base still made requests: {[(a.method, a.path) for a in reqs]}"

    # Registry gone, its port answered by a listener that counts callers: it
    # still works (air-gapped), and nobody called.
    reg.stop()
    counter = ConnCounter(reg.port)
    try:
        assert client.assemble(*args, "--output", f"oci:{tmp_path / 'offline'}:v1") == first
    finally:
        counter.close()
    assert counter.count == 0, f"{counter.count} connection(s) to the stopped registry"
    assert read_layout(tmp_path / "offline", "v1").manifest_bytes == \
        read_layout(tmp_path / "first", "v1").manifest_bytes


@dataclass
class MultiPlatform:
    ref: str                     # docker://... of the index
    images: dict                 # platform -> LayoutImage of its manifest


@pytest.fixture(scope="module", params=["oci", "v2s2"])
def multi_platform(request, tmp_path_factory, main_registry) -> MultiPlatform:
    """An index of two images (linux/amd64, linux/arm64) made here, pushed
    with `skopeo copy --all`: as is (an OCI index), or converted to Docker's
    manifest list and schema 2 manifests."""
    tmp = tmp_path_factory.mktemp("multi")
    builder = Client(tmp / "client", {main_registry.hostport: ALICE})
    lay = tmp / "layout"
    images = {}
    for plat in ("linux/amd64", "linux/arm64"):
        arch = plat.split("/")[1]
        f = unique_file(tmp, f"{arch}.txt")
        builder.assemble("--base", "scratch", "--platform", plat, "--add", f"{f}:/data/{arch}.txt",
                         "--output", f"oci:{lay}:{arch}")
        images[plat] = read_layout(lay, arch)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": len(img.manifest_bytes),
         "platform": {"architecture": plat.split("/")[1], "os": "linux"}}
        for plat, img in images.items()]}
    data = json.dumps(index).encode()
    idx_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (lay / "blobs" / "sha256" / idx_digest.split(":")[1]).write_bytes(data)
    top = json.loads((lay / "index.json").read_text())
    top["manifests"].append({"mediaType": OCI_INDEX, "digest": idx_digest, "size": len(data),
                             "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (lay / "index.json").write_text(json.dumps(top))
    ref = main_registry.ref(f"{repo_name('multi')}:v1")
    fmt = ["--format", "v2s2"] if request.param == "v2s2" else []
    r = skopeo("copy", "--all", *fmt, "--dest-creds", "alice:" + ALICE[1], f"oci:{lay}:multi", ref)
    assert r.returncode == 0, r.stderr
    status, headers, _ = main_registry.manifest(ref.split("/", 3)[3].split(":")[0], "v1", ALICE)
    assert status == 200 and headers["content-type"] == (
        OCI_INDEX if request.param == "oci" else "application/vnd.docker.distribution.manifest.list.v2+json")
    return MultiPlatform(ref, images)


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_base_index_chooses_the_platform(client, multi_platform, tmp_path, platform):
    f = unique_file(tmp_path, "app.txt")
    client.assemble("--base", multi_platform.ref, "--platform", platform,
                    "--add", f"{f}:/data/app.txt", "--output", f"oci:{tmp_path / 'out'}:v1")
    out = read_layout(tmp_path / "out", "v1")
    assert out.layer_digests[:-1] == multi_platform.images[platform].layer_digests
    assert out.config["architecture"] == platform.split("/")[1]


def test_base_index_without_the_platform(client, multi_platform, tmp_path):
    r = client.run("assemble", "--base", multi_platform.ref, "--platform", "linux/s390x",
                   "--output", f"oci:{tmp_path / 'out'}")
    line = one_error(r, secrets_=(ALICE,), code=3)
    assert "s390x" in line, line
    assert not (tmp_path / "out").exists()


def test_docker_schema2_base_gives_an_all_oci_image(client, main_registry, tmp_path):
    """Most bases in registries are Docker schema 2: extended, the result
    is OCI throughout (no mixed media-type families), on the same layers."""
    repo = repo_name("docker-v2s2")
    f = unique_file(tmp_path, "base.txt")
    client.assemble("--base", "static", "--add", f"{f}:/data/base.txt", "--output", f"oci:{tmp_path / 'b'}:v1")
    base = read_layout(tmp_path / "b", "v1")
    r = skopeo("copy", "--format", "v2s2", "--dest-creds", "alice:" + ALICE[1], f"oci:{tmp_path / 'b'}:v1",
               main_registry.ref(f"{repo}:v1"))
    assert r.returncode == 0, r.stderr
    status, headers, body = main_registry.manifest(repo, "v1", ALICE)
    assert headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"
    g = unique_file(tmp_path, "app.txt")
    client.assemble("--base", main_registry.ref(f"{repo}:v1"), "--add", f"{g}:/data/app.txt",
                    "--output", f"oci:{tmp_path / 'out'}:v1",
                    "--output", main_registry.ref(f"{repo}-ext:v1"))
    out = read_layout(tmp_path / "out", "v1")
    assert out.layer_digests[:-1] == base.layer_digests
    types = [out.manifest.get("mediaType"), out.manifest["config"]["mediaType"],
             *(layer["mediaType"] for layer in out.manifest["layers"])]
    assert all("vnd.oci." in t for t in types), f"not OCI throughout: {types}"
    status, headers, _ = main_registry.manifest(f"{repo}-ext", "v1", ALICE)
    assert status == 200 and headers["content-type"] == OCI_MANIFEST


def test_corrupt_blob_on_pull_is_refused_and_not_cached(client, main_registry, tmp_path):
    repo = repo_name("corrupt")
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(256 * 1024))          # random: the gzip layer is as big
    client.assemble("--base", "scratch", "--add", f"{f}:/data/big.bin",
                    "--output", main_registry.ref(f"{repo}:v1"), "--output", f"oci:{tmp_path / 'src'}:v1")
    layer = read_layout(tmp_path / "src", "v1").layer_digests[-1]
    data_path = main_registry.blob_data(layer)
    good = data_path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF                     # same size, other content
    data_path.write_bytes(bytes(bad))
    try:
        client.fresh_cache()
        r = client.run("assemble", "--base", main_registry.ref(f"{repo}:v1"),
                       "--output", f"oci-archive:{tmp_path / 'out.tar'}")
        line = one_error(r, secrets_=(ALICE,), code=3)                # a corrupt blob: bad input
        assert layer in line or layer.split(":")[1][:12] in line, line
        assert any(w in line.lower() for w in ("corrupt", "mismatch", "does not match", "hashes to")), line
        assert not (tmp_path / "out.tar").exists()
        for p in client.cache.rglob("*"):          # nothing cached under the layer's name but the truth
            if p.is_file() and layer.split(":")[1] in p.name:
                assert sha256_file(p) == layer, f"corrupt content cached as {p}"
    finally:
        data_path.write_bytes(good)
    # Repaired registry, same cache: it works (nothing bad was kept).
    client.assemble("--base", main_registry.ref(f"{repo}:v1"), "--output", f"oci:{tmp_path / 'ok'}:v1")


# --- a k8s chaincode package naming an image in a registry ------------------------------------

def one_line(r: subprocess.CompletedProcess) -> str:
    """The stdout of a successful run: exactly one line."""
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1, repr(r.stdout)
    return r.stdout.strip()


def read_k8s_package(pkg: Path) -> tuple[dict, dict]:
    """(metadata.json, image.json) of a k8s lifecycle package, read with tarfile only."""
    with tarfile.open(pkg, "r:gz") as outer:
        assert outer.getnames() == ["metadata.json", "code.tar.gz"], outer.getnames()
        meta = json.load(outer.extractfile("metadata.json"))
        code = outer.extractfile("code.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as inner:
        assert inner.getnames() == ["image.json"], inner.getnames()
        return meta, json.load(inner.extractfile("image.json"))


@pytest.mark.parametrize("by", ["digest", "tag"])
def test_k8s_package_takes_the_digest_of_a_registry_image(client, main_registry, tmp_path, by):
    """`fabric package --type k8s --image docker://HOST/REPO@sha256:...` (or
    `:TAG`): image.json names the pushed manifest's digest, the printed
    package ID is `fabric package-id`'s, and the package is the very one
    `--image-digest` gives."""
    repo = repo_name(f"k8s-{by}")
    f = unique_file(tmp_path)
    digest = client.assemble("--base", "static", "--add", f"{f}:/data/payload.txt",
                             "--output", main_registry.ref(f"{repo}:v1"))
    assert skopeo_digest(main_registry.ref(f"{repo}:v1")) == digest
    image = main_registry.ref(f"{repo}@{digest}" if by == "digest" else f"{repo}:v1")
    label = f"k8s-{by}_{uuid.uuid4().hex[:8]}"
    name = f"{main_registry.hostport}/{repo}"
    pkg = tmp_path / "k8s.tar.gz"
    pid = one_line(client.run("fabric", "package", "--type", "k8s", "--label", label, "--image-name", name,
                              "--image", image, "--output", pkg))
    meta, image_json = read_k8s_package(pkg)
    assert meta == {"type": "k8s", "label": label}
    assert image_json == {"name": name, "digest": digest}
    assert pid == f"{label}:{sha256_file(pkg).partition(':')[2]}"
    assert one_line(client.run("fabric", "package-id", pkg)) == pid
    same = tmp_path / "same.tar.gz"
    assert one_line(client.run("fabric", "package", "--type", "k8s", "--label", label, "--image-name", name,
                               "--image-digest", digest, "--output", same)) == pid
    assert same.read_bytes() == pkg.read_bytes()


def test_k8s_package_image_from_an_untrusted_registry_needs_insecure_registry(client, untrusted_registry,
                                                                               tmp_path):
    reg = untrusted_registry
    repo = repo_name("k8s-insecure")
    f = unique_file(tmp_path)
    digest = client.assemble("--base", "static", "--add", f"{f}:/data/payload.txt",
                             "--output", reg.ref(f"{repo}:v1"), "--insecure-registry", reg.hostport)
    pkg = tmp_path / "k8s.tar.gz"
    args = ["fabric", "package", "--type", "k8s", "--label", "k8s_insecure", "--image-name", "reg/cc",
            "--image", reg.ref(f"{repo}:v1"), "--output", pkg]
    line = one_error(client.run(*args), secrets_=(ALICE,))
    assert reg.hostport in line and "--insecure-registry" in line, line
    assert not pkg.exists()
    pid = one_line(client.run(*args, "--insecure-registry", reg.hostport))
    assert read_k8s_package(pkg)[1] == {"name": "reg/cc", "digest": digest}
    assert one_line(client.run("fabric", "package-id", pkg)) == pid


# --- Bearer tokens --------------------------------------------------------------------------

def test_bearer_push_pull_mount_and_scopes(client, token_env, tmp_path):
    reg, tokens = token_env.registry, token_env.tokens
    base_repo, app_repo = repo_name("bearer-base"), repo_name("bearer-app")
    fb, fa = unique_file(tmp_path, "base.txt"), unique_file(tmp_path, "app.txt")

    n = len(tokens.requests)
    b = client.assemble("--base", "static", "--add", f"{fb}:/data/base.txt",
                        "--output", reg.ref(f"{base_repo}:v1"), "--output", f"oci:{tmp_path / 'base'}:v1")
    base = read_layout(tmp_path / "base", "v1")
    asked = tokens.since(n)
    assert asked, "ocibuild never asked the token server"
    assert all(t.ok and t.user == "alice" for t in asked), [(t.user, t.ok) for t in asked]
    assert any(t.asked(base_repo) >= {"pull", "push"} for t in asked), [t.scopes for t in asked]
    assert skopeo_digest(reg.ref(f"{base_repo}:v1")) == b

    # Pull the base through Bearer too, extend it, push to another repository:
    # the mount needs one token with push on the target and pull on the source.
    client.fresh_cache()
    n = len(tokens.requests)
    mark = reg.mark()
    d = client.assemble("--base", reg.ref(f"{base_repo}:v1"), "--add", f"{fa}:/data/app.txt",
                        "--output", reg.ref(f"{app_repo}:v1"), "--output", f"oci:{tmp_path / 'app'}:v1")
    asked = tokens.since(n)
    assert any("pull" in t.asked(base_repo) for t in asked), [t.scopes for t in asked]
    assert any(t.asked(app_repo) >= {"pull", "push"} for t in asked), [t.scopes for t in asked]
    assert any("push" in t.asked(app_repo) and "pull" in t.asked(base_repo) for t in asked), \
        f"no token request covered the mount (push on target + pull on source): {[t.scopes for t in asked]}"
    assert all(t.user == "alice" for t in asked)
    mounts = [a for a in reg.requests(mark) if a.is_mount]
    assert sorted(a.query["mount"] for a in mounts if a.status == 201) == sorted(base.layer_digests), \
        [(a.query, a.status) for a in mounts]
    assert skopeo_digest(reg.ref(f"{app_repo}:v1")) == d
    assert read_layout(tmp_path / "app", "v1").layer_digests[:-1] == base.layer_digests


def test_bearer_wrong_password_and_pull_only_user(client, token_env, tmp_path):
    reg, tokens = token_env.registry, token_env.tokens
    f = unique_file(tmp_path)
    repo = repo_name("bearer-denied")

    client.login(reg.hostport, WRONG)
    n = len(tokens.requests)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"))
    line = one_error(r, secrets_=(WRONG, ALICE))
    assert str(client.config_json) in line, f"the error should name the credentials' source: {line}"
    assert reg.hostport in line, line
    assert any(not t.ok for t in tokens.since(n)), "the token server never saw the wrong password"

    # reader may pull but not push: a clear refusal, no tag; its pull works.
    client.login(reg.hostport, READER)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"))
    line = one_error(r, secrets_=(READER, ALICE))
    assert reg.hostport in line and str(client.config_json) in line, line
    client.login(reg.hostport, ALICE)
    d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"))
    client.login(reg.hostport, READER)
    client.fresh_cache()
    client.assemble("--base", reg.ref(f"{repo}@{d}"), "--output", f"oci:{tmp_path / 'pulled'}:v1")
    client.assemble("--base", "static", "--add", f"{f}:/f", "--output", f"oci:{tmp_path / 'local'}:v1")
    assert read_layout(tmp_path / "pulled", "v1").layer_digests == \
        read_layout(tmp_path / "local", "v1").layer_digests


def test_bearer_anonymous_pull_of_a_public_base(client, token_env, tmp_path):
    """As for public images on Docker Hub: no credentials at all, an
    anonymous token for pull; a private repository is refused clearly."""
    reg, tokens = token_env.registry, token_env.tokens
    repo = "public/" + repo_name("anon").split("/", 1)[1]
    f = unique_file(tmp_path)
    d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"),
                        "--output", f"oci:{tmp_path / 'src'}:v1")
    client.config_json.unlink()                     # nobody logged in anywhere
    client.fresh_cache()
    n = len(tokens.requests)
    client.assemble("--base", reg.ref(f"{repo}@{d}"), "--output", f"oci:{tmp_path / 'out'}:v1")
    asked = tokens.since(n)
    assert asked and all(t.user == "" and t.ok for t in asked), [(t.user, t.scopes) for t in asked]
    assert read_layout(tmp_path / "out", "v1").layer_digests == read_layout(tmp_path / "src", "v1").layer_digests

    private = repo_name("private")
    r = client.run("assemble", "--base", reg.ref(f"{private}:v1"), "--output", f"oci:{tmp_path / 'no'}")
    line = one_error(r)
    assert reg.hostport in line and "login" in line, line


def test_bearer_stale_token_is_renewed(client, token_env, tmp_path):
    """The registry refuses a token the client believes valid: the client
    gets a new one and carries on."""
    reg, tokens = token_env.registry, token_env.tokens
    repo = repo_name("bearer-stale")
    f = unique_file(tmp_path)
    n = len(tokens.requests)
    tokens.expire_next = 1
    try:
        d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"))
    finally:
        tokens.expire_next = 0
    asked = tokens.since(n)
    assert len([t for t in asked if "push" in t.asked(repo)]) >= 2, [t.scopes for t in asked]
    assert skopeo_digest(reg.ref(f"{repo}:v1")) == d


# --- credentials sources --------------------------------------------------------------------

def _set_source(client: Client, source: str, host: str, creds: tuple[str, str]) -> str:
    """Put `creds` for `host` in one credentials source; returns what an
    error message must name for it."""
    others = {h: c for h, c in client.logins.items() if h != host}
    log = client.root / "helper.log"
    if source == "auths":
        client.write_config(auths={**others, host: creds})
        return str(client.config_json)
    if source == "credHelpers":
        write_cred_helper(client.bin, "ocitest", {host: creds}, log)
        # auths holds a wrong password: credHelpers[host] must win.
        client.write_config(auths={**others, host: WRONG if creds != WRONG else ALICE},
                            cred_helpers={host: "ocitest"})
        return "ocitest"
    if source == "credsStore":
        write_cred_helper(client.bin, "ocitest", {host: creds}, log)
        client.write_config(auths=others, creds_store="ocitest")
        return "ocitest"
    if source == "podman":
        client.config_json.unlink()
        return str(write_podman_auth(client.runtime_dir, {host: creds}))
    raise ValueError(source)


SOURCES = ["auths", "credHelpers", "credsStore", "podman"]


@pytest.mark.parametrize("source", SOURCES)
def test_credentials_from_each_source(client, main_registry, tmp_path, source):
    _set_source(client, source, main_registry.hostport, ALICE)
    repo = repo_name(f"creds-{source.lower()}")
    f = unique_file(tmp_path)
    d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", main_registry.ref(f"{repo}:v1"))
    assert skopeo_digest(main_registry.ref(f"{repo}:v1")) == d
    if source in ("credHelpers", "credsStore"):
        calls = helper_calls(client.root / "helper.log")
        assert ("get", main_registry.hostport) in [(a, s.split("://")[-1]) for a, s in calls], calls


@pytest.mark.parametrize("source", SOURCES)
def test_bad_credentials_name_their_source_never_the_secret(client, main_registry, tmp_path, source):
    named = _set_source(client, source, main_registry.hostport, WRONG)
    f = unique_file(tmp_path)
    repo = repo_name("badcreds")
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f",
                   "--output", main_registry.ref(f"{repo}:v1"))
    line = one_error(r, secrets_=(WRONG, ALICE))
    assert named in line, f"the error should name {named!r}: {line}"
    assert main_registry.hostport in line, line
    assert main_registry.manifest(repo, "v1", ALICE)[0] == 404
    # Not with progress messages, not even in a --debug traceback.
    for flags in ((), ("--debug",)):
        r = client.run(*flags, "assemble", "--base", "static", "--add", f"{f}:/f",
                       "--output", main_registry.ref(f"{repo}:v1"), quiet=False)
        assert r.returncode != 0
        for form in secret_forms(*WRONG) + secret_forms(*ALICE):
            assert form not in r.stderr + r.stdout, f"a secret leaked with {flags or 'progress'}"


def test_missing_credential_helper_is_named(client, main_registry, tmp_path):
    client.write_config(auths={}, creds_store="ocitest-missing")
    f = unique_file(tmp_path)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f",
                   "--output", main_registry.ref(f"{repo_name('nohelper')}:v1"))
    line = one_error(r)
    assert "docker-credential-ocitest-missing" in line and str(client.config_json) in line, line


def test_malformed_docker_config_is_named(client, main_registry, tmp_path):
    client.config_json.write_text('{"auths": {')
    f = unique_file(tmp_path)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f",
                   "--output", main_registry.ref(f"{repo_name('badjson')}:v1"))
    line = one_error(r)
    assert str(client.config_json) in line, line


def test_no_credentials_at_all(client, main_registry, tmp_path):
    client.config_json.unlink()
    f = unique_file(tmp_path)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f",
                   "--output", main_registry.ref(f"{repo_name('anon')}:v1"))
    line = one_error(r)
    assert main_registry.hostport in line and "login" in line, line


# --- TLS and plain HTTP ---------------------------------------------------------------------

def test_untrusted_ca_names_the_certs_dirs_and_insecure_registry_works(client, untrusted_registry, tmp_path):
    reg = untrusted_registry
    f = unique_file(tmp_path)
    repo = repo_name("untrusted")
    args = ["assemble", "--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1")]
    line = one_error(client.run(*args), secrets_=(ALICE,))
    dirs = [f"/etc/docker/certs.d/{reg.hostport}", f"/etc/containers/certs.d/{reg.hostport}"]
    assert any(d in line for d in dirs), f"the error should name a certs.d directory to fill: {line}"
    assert "--insecure-registry" in line, line

    d = printed_digest(client.run(*args, "--insecure-registry", reg.hostport))
    assert skopeo_digest(reg.ref(f"{repo}:v1"), tls_verify=False) == d
    # as a base too
    client.fresh_cache()
    assert one_error(client.run("assemble", "--base", reg.ref(f"{repo}:v1"),
                                "--output", f"oci:{tmp_path / 'x'}")).startswith("error: ")
    printed_digest(client.run("assemble", "--base", reg.ref(f"{repo}:v1"), "--insecure-registry",
                              reg.hostport, "--output", f"oci:{tmp_path / 'y'}"))


def test_ca_from_containers_certs_d(client, untrusted_registry, certs, tmp_path):
    """podman's /etc/containers/certs.d/HOST:PORT/ca.crt is read as well as docker's."""
    reg = untrusted_registry
    cas = CaDirs(certs.ca_cert, CERTS_D[1])
    cas.trust(reg.hostport)
    try:
        f = unique_file(tmp_path)
        repo = repo_name("podman-ca")
        d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"))
        assert skopeo_digest(reg.ref(f"{repo}:v1")) == d
    finally:
        cas.remove_all()


def test_plain_http_registry_on_loopback_needs_no_insecure_registry(client, proxied, tmp_path):
    plain = proxied.plain
    f = unique_file(tmp_path)
    repo = repo_name("plain")
    args = ["assemble", "--base", "static", "--add", f"{f}:/f", "--output", plain.ref(f"{repo}:v1")]
    d = printed_digest(client.run(*args))
    assert skopeo_digest(plain.ref(f"{repo}:v1"), tls_verify=False) == d
    assert printed_digest(client.run(*args, "--insecure-registry", plain.hostport)) == d


# --- errors a user meets --------------------------------------------------------------------

def test_unknown_host(client, tmp_path):
    f = unique_file(tmp_path)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f",
                   "--output", "docker://no-such-registry.invalid:5000/e2e/x:v1")
    line = one_error(r)
    assert "no-such-registry.invalid" in line, line


def test_refused_port(client, tmp_path):
    port = free_port()                   # nothing listens there
    f = unique_file(tmp_path)
    start = time.monotonic()
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f",
                   "--output", f"docker://127.0.0.1:{port}/e2e/x:v1")
    line = one_error(r)
    assert f"127.0.0.1:{port}" in line and "refused" in line, line
    assert time.monotonic() - start < 120, "gave up only after minutes"


def test_missing_base_404(client, main_registry, tmp_path):
    repo = repo_name("missing")
    r = client.run("assemble", "--base", main_registry.ref(f"{repo}:v1"), "--output", f"oci:{tmp_path / 'o'}")
    line = one_error(r, secrets_=(ALICE,))
    assert repo in line, line
    assert any(w in line.lower() for w in ("not found", "unknown", "404", "no such")), line
    assert not (tmp_path / "o").exists()
    # a missing digest in an existing repository too
    f = unique_file(tmp_path)
    client.assemble("--base", "static", "--add", f"{f}:/f", "--output", main_registry.ref(f"{repo}:v1"))
    r = client.run("assemble", "--base", main_registry.ref(f"{repo}@sha256:{'0' * 64}"),
                   "--output", f"oci:{tmp_path / 'o'}")
    line = one_error(r, secrets_=(ALICE,))
    assert "0" * 64 in line or repo in line, line


def test_manifest_rejected_shows_the_registry_error(client, proxied, tmp_path):
    proxy = proxied.proxy
    repo = repo_name("rejected")
    proxy.fault(Fault(lambda m, p, q: m == "PUT" and p.startswith(f"/v2/{repo}/manifests/"), 400,
                      json.dumps({"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid",
                                              "detail": "the test proxy refuses it"}]}).encode(),
                      {"Content-Type": "application/json"}))
    f = unique_file(tmp_path)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f", "--output", proxy.ref(f"{repo}:v1"))
    line = one_error(r, secrets_=(ALICE,))
    assert "MANIFEST_INVALID" in line and "manifest invalid" in line, line
    assert proxied.plain.manifest(repo, "v1", ALICE)[0] == 404


def test_registry_own_error_for_a_blob_it_lacks(client, proxied, tmp_path):
    """A HEAD that lies (says a layer is there): the real registry refuses
    the manifest with MANIFEST_BLOB_UNKNOWN, and that is what the user sees."""
    proxy = proxied.proxy
    repo = repo_name("lying")
    f = unique_file(tmp_path)
    args = ["--base", "static", "--add", f"{f}:/f"]
    client.assemble(*args, "--output", f"oci:{tmp_path / 'l'}:v1")
    img = read_layout(tmp_path / "l", "v1")
    layer = img.manifest["layers"][-1]
    proxy.fault(Fault(lambda m, p, q: m == "HEAD" and p == f"/v2/{repo}/blobs/{layer['digest']}", 200, b"",
                      {"Content-Length": str(layer["size"]), "Docker-Content-Digest": layer["digest"],
                       "Content-Type": "application/octet-stream"}))
    r = client.run("assemble", *args, "--output", proxy.ref(f"{repo}:v1"))
    line = one_error(r, secrets_=(ALICE,))
    assert "MANIFEST_BLOB_UNKNOWN" in line, line
    assert proxied.plain.manifest(repo, "v1", ALICE)[0] == 404


@pytest.mark.parametrize("status, retry_after, method, what", [
    (429, "2", "PUT", "manifests"),
    (503, None, "POST", "blobs/uploads/"),
    (502, "1", "HEAD", "blobs/"),
])
def test_retries_on_429_and_5xx_honouring_retry_after(client, proxied, tmp_path, status, retry_after,
                                                      method, what):
    proxy = proxied.proxy
    repo = repo_name("flaky")
    headers = {"Content-Type": "application/json"}
    if retry_after:
        headers["Retry-After"] = retry_after
    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "try again"}]}).encode()

    def match(m, p, q):
        return m == method and p.startswith(f"/v2/{repo}/{what}")
    fault = proxy.fault(Fault(match, status, body, headers, times=1))
    n = len(proxy.records)
    f = unique_file(tmp_path)
    d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", proxy.ref(f"{repo}:v1"))
    assert fault.hits == 1
    hits = [r for r in proxy.since(n) if match(r.method, r.path, r.query)]
    assert len(hits) >= 2 and hits[0].injected and not hits[1].injected, \
        [(r.method, r.path, r.status) for r in hits]
    if retry_after:
        waited = hits[1].when - hits[0].when
        assert waited >= float(retry_after) - 0.1, f"retried after {waited:.2f}s, Retry-After was {retry_after}"
    assert skopeo_digest(proxy.ref(f"{repo}:v1")) == d


def test_persistent_5xx_gives_up_with_the_registry_error(client, proxied, tmp_path):
    proxy = proxied.proxy
    repo = repo_name("down")
    proxy.fault(Fault(lambda m, p, q: m == "PUT" and p.startswith(f"/v2/{repo}/manifests/"), 503,
                      json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "registry in maintenance"}]}).encode(),
                      {"Content-Type": "application/json", "Retry-After": "0"}))
    n = len(proxy.records)
    f = unique_file(tmp_path)
    r = client.run("assemble", "--base", "static", "--add", f"{f}:/f", "--output", proxy.ref(f"{repo}:v1"))
    line = one_error(r, secrets_=(ALICE,))
    assert "503" in line and "registry in maintenance" in line, line
    puts = [x for x in proxy.since(n) if x.method == "PUT" and "/manifests/" in x.path]
    assert len(puts) >= 2, f"no retry: {len(puts)} manifest PUT(s)"
    assert proxied.plain.manifest(repo, "v1", ALICE)[0] == 404


@pytest.mark.parametrize("cut_after", [0, 5 << 20], ids=["before-the-chunk", "mid-chunk"])
def test_chunked_upload_cut_resumes_or_starts_over(client, proxied, tmp_path, cut_after):
    """The connection is cut during the second chunk. The client asks the
    session where it stands (GET) and goes on from there. Distribution 2.8
    can resume only if the cut chunk left no byte: a partial chunk makes
    the session refuse the client's upload state for good ("upload resumed
    at wrong offset", 404 to GET and DELETE), and then the client must
    start a new session. Either way the push succeeds, with the right blob."""
    proxy = proxied.proxy
    repo = repo_name("resume")
    big = tmp_path / "random.bin"
    big.write_bytes(os.urandom(40 << 20))        # > the 16 MiB chunk size: a chunked upload

    def patch(m, p, q):
        return m == "PATCH" and p.startswith(f"/v2/{repo}/blobs/uploads/")
    fault = proxy.fault(Fault(patch, after=1, times=1, cut_after=cut_after))
    n = len(proxy.records)
    d = client.assemble("--base", "scratch", "--compression", "none", "--add", f"{big}:/data/random.bin",
                        "--output", proxy.ref(f"{repo}:v1"), "--output", f"oci:{tmp_path / 'l'}:v1")
    assert fault.hits == 1, "the cut never happened"
    layer = read_layout(tmp_path / "l", "v1").layer_digests[-1]
    recs = proxy.since(n)
    cut_at = next(i for i, r in enumerate(recs) if r.injected)
    after = recs[cut_at + 1:]
    asked = [r for r in after if r.method == "GET" and r.path == recs[cut_at].path]
    assert asked, "after the cut, the client never asked the session where it stood"
    sessions = {r.path.rsplit("/", 1)[1] for r in recs if patch(r.method, r.path, r.query)}
    if cut_after == 0:
        assert asked[0].status == 204
        assert len(sessions) == 1, "the upload started over although the session could go on"
        resumed = [r for r in after if patch(r.method, r.path, r.query)]
        assert len(resumed) == 2, f"{len(resumed)} chunks after the cut: expected the 2nd (again) and the 3rd"
    else:
        assert asked[0].status == 404          # distribution 2.8: this session is done for
        assert len(sessions) == 2
    finished = [r for r in recs if r.method == "PUT" and r.query.get("digest") == layer]
    assert [r.status for r in finished] == [201], [(r.path, r.status) for r in finished]
    assert skopeo_digest(proxy.ref(f"{repo}:v1")) == d


def test_redirected_blob_download_gets_no_authorization(client, proxied, tmp_path):
    proxy, blobs = proxied.proxy, proxied.blobs
    repo = "redirect/" + repo_name("base").split("/", 1)[1]
    f = unique_file(tmp_path)
    client.assemble("--base", "static", "--add", f"{f}:/f", "--output", proxy.ref(f"{repo}:v1"),
                    "--output", f"oci:{tmp_path / 'src'}:v1")
    proxy.redirect_blobs("redirect/", blobs)
    n, m = len(proxy.records), len(blobs.requests)
    client.fresh_cache()
    client.assemble("--base", proxy.ref(f"{repo}:v1"), "--output", f"oci:{tmp_path / 'out'}:v1")
    redirected = [r for r in proxy.since(n) if r.status == 307]
    assert redirected and all(r.authorization for r in redirected), \
        "the registry side should have been asked with credentials"
    fetched = blobs.requests[m:]
    assert fetched, "no blob was fetched from the redirect target"
    assert not any(auth for _, auth in fetched), f"Authorization was sent to another origin: {fetched}"
    assert read_layout(tmp_path / "out", "v1").layer_digests == read_layout(tmp_path / "src", "v1").layer_digests


# --- all outputs or none ------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["refused", "bad-credentials", "untrusted", "manifest-rejected"])
def test_local_outputs_all_or_none(client, main_registry, untrusted_registry, proxied, tmp_path, failure):
    work = tmp_path / "work"
    work.mkdir()
    f = unique_file(tmp_path)
    existing = work / "existing"
    client.assemble("--base", "static", "--add", f"{f}:/f", "--output", f"oci:{existing}:v0")
    repo = repo_name("allornone")
    if failure == "refused":
        remote = f"docker://127.0.0.1:{free_port()}/{repo}:v1"
    elif failure == "bad-credentials":
        client.login(main_registry.hostport, WRONG)
        remote = main_registry.ref(f"{repo}:v1")
    elif failure == "untrusted":
        remote = untrusted_registry.ref(f"{repo}:v1")
    else:        # refused at the very end: the manifest PUT, after every blob went up
        proxied.proxy.fault(Fault(lambda m, p, q: m == "PUT" and "/manifests/" in p and repo in p, 400,
                                  json.dumps({"errors": [{"code": "MANIFEST_INVALID",
                                                          "message": "manifest invalid"}]}).encode(),
                                  {"Content-Type": "application/json"}))
        remote = proxied.proxy.ref(f"{repo}:v1")
    before = content_state(work)
    g = unique_file(tmp_path, "new.txt")
    r = client.run("assemble", "--base", "static", "--add", f"{g}:/g",
                   "--output", f"oci-archive:{work / 'x.tar'}", "--output", f"oci:{existing}:v1",
                   "--output", f"oci:{work / 'new-layout'}:v1", "--output", remote)
    one_error(r, secrets_=(WRONG, ALICE))
    assert not (work / "x.tar").exists(), "oci-archive written although the registry output failed"
    assert content_state(work) == before, "local outputs changed although the registry output failed"


# --- a registry that dies -------------------------------------------------------------------

@SLOW
def test_registry_killed_mid_push_retries_then_fails_and_leaves_no_tag(client, new_registry, tmp_path):
    reg = new_registry()
    client.login(reg.hostport, ALICE)
    repo = repo_name("killed")
    big = tmp_path / "random.bin"
    with open(big, "wb") as fh:
        for _ in range(16):
            fh.write(os.urandom(16 << 20))               # 256 MiB that no compression shrinks
    proc = subprocess.Popen([str(OCIBUILD), "-q", "assemble", "--base", "static", "--compression", "none",
                             "--add", f"{big}:/data/random.bin", "--output", reg.ref(f"{repo}:v1")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client.full_env(),
                            preexec_fn=die_with_parent)
    counter = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if reg.uploading() >= 8 << 20:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the push ended before the registry could be killed: {proc.communicate()}"
        reg.kill()
        counter = ConnCounter(reg.port)      # who calls the dead registry's port
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if counter:
            counter.close()
        big.unlink()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = one_error(r, secrets_=(ALICE,))
    assert reg.hostport in line, line
    assert counter.count >= 1, "the client did not retry after the connection broke"

    # The registry back on the same storage: no tag points at a partial image.
    reg.start()
    status, _, body = reg.manifest(repo, "v1", ALICE)
    assert status == 404, f"a tag exists after a failed push: {status} {body[:200]!r}"
    r = skopeo("inspect", "--creds", "alice:" + ALICE[1], reg.ref(f"{repo}:v1"))
    assert r.returncode != 0 and "manifest unknown" in r.stderr, r.stderr
    # and a push now succeeds
    f = unique_file(tmp_path)
    d = client.assemble("--base", "static", "--add", f"{f}:/f", "--output", reg.ref(f"{repo}:v1"))
    assert skopeo_digest(reg.ref(f"{repo}:v1")) == d


# --- a multi-GB layer in flat memory --------------------------------------------------------

def _peak_rss_of(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int]:
    # A fresh Python between us and the command: RUSAGE_CHILDREN holds only it.
    probe = ("import resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stderr.write(p.stderr)\n"
             "print(p.returncode, p.stdout.strip() or '-', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env)
    code, stdout, kib = out.stdout.split()
    return subprocess.CompletedProcess(cmd, int(code), stdout + "\n", out.stderr), int(kib) * 1024


@SLOW
def test_multi_gib_layer_pushed_in_flat_memory(client, new_registry, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    # The layer exists up to four times at once: ocibuild's work store or
    # the pulled-blob cache, the registry's blob, the layout written from
    # the pulled base, and the work store of that run. Keep 4 GiB spare.
    size = min(3 * GIB, (free - 4 * GIB) // 4 // GIB * GIB)
    if size < GIB:
        pytest.fail(f"only {free / GIB:.1f} GiB free under {tmp_path}: this test needs at least 8 GiB")
    reg = new_registry()
    client.login(reg.hostport, ALICE)
    repo = repo_name("huge")
    big = tmp_path / "sparse.bin"
    with open(big, "wb") as fh:
        fh.truncate(size)                 # no disk, reads as `size` zero bytes
    mark = reg.mark()
    try:
        r, peak = _peak_rss_of([str(OCIBUILD), "-q", "assemble", "--base", "scratch", "--compression", "none",
                                "--add", f"{big}:/data/sparse.bin", "--output", reg.ref(f"{repo}:v1")],
                               client.full_env())
        digest = printed_digest(r)
        assert peak < 200 * MB, f"peak RSS {peak / MB:.0f} MB pushing a {size / GIB:.0f} GiB layer"
        status, _, body = reg.manifest(repo, "v1", ALICE)
        assert status == 200
        layer = json.loads(body)["layers"][-1]
        assert layer["size"] > size
        stored = reg.blob_data(layer["digest"])
        assert stored.stat().st_size == layer["size"]
        assert sha256_file(stored) == layer["digest"]
        assert skopeo_digest(reg.ref(f"{repo}:v1")) == digest
        patches = [a for a in reg.requests(mark) if a.method == "PATCH"]
        assert patches, "a multi-GiB blob should go up in chunks (PATCH)"
        big.unlink()

        # Pulled back as a base (another machine: an empty cache): flat too.
        client.fresh_cache()
        out = tmp_path / "pulled"
        r, peak = _peak_rss_of([str(OCIBUILD), "-q", "assemble", "--base", reg.ref(f"{repo}:v1"),
                                "--output", f"oci:{out}:v1"], client.full_env())
        printed_digest(r)
        assert peak < 200 * MB, f"peak RSS {peak / MB:.0f} MB pulling a {size / GIB:.0f} GiB base"
        assert read_layout(out, "v1").layer_digests == [layer["digest"]]
    finally:
        big.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "pulled", ignore_errors=True)
        shutil.rmtree(client.root, ignore_errors=True)
