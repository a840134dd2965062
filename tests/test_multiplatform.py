"""Multi-platform images: `--platform LIST` cross-compiles one binary per
platform (GOOS/GOARCH, no emulation), assembles one image each and writes
them under one OCI index — the same index digest on every builder; index
outputs (oci:, oci-archive:, docker://) get all of it, single-platform
outputs (docker-archive:, engines) the host's image. Checked with skopeo,
oci-image-tool, docker, podman and a real registry."""

from __future__ import annotations

import gzip
import io
import json
import platform
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, printed_digest, run_ocibuild, unique_name
from registry_harness import Registry
from test_build_cli import CHAINCODE_ENV, needs, one_error_line, out_dir, run_build

PLATFORMS = "linux/amd64,linux/arm64"
CHAINCODE = FIXTURES / "chaincode"
BUILDERS = ["docker", "podman", "podman-rootless", "host"]
EM_AARCH64, EM_X86_64 = 0xB7, 0x3E
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def index_of(layout: Path, ref: str) -> tuple[str, dict]:
    top = json.loads((layout / "index.json").read_text())
    desc = next(d for d in top["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    return desc["digest"], json.loads(blob(layout, desc["digest"]))


def elf_machine_of_binary(layout: Path, manifest_digest: str, path: str = "usr/local/bin/chaincode") -> int:
    """The ELF e_machine of `path` in the image's top layer (read here, not by ocibuild)."""
    manifest = json.loads(blob(layout, manifest_digest))
    top = blob(layout, manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as tf:
        data = tf.extractfile(path).read(20)
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module")
def built(shared) -> dict[str, tuple[str, Path, str]]:
    """The sample chaincode for amd64 and arm64, by each builder: (printed
    digest, output directory holding layout/ and image.tar)."""
    out = {}
    for b in BUILDERS:
        d = out_dir(shared, "multi", b)
        r = run_build(b, CHAINCODE, "--platform", PLATFORMS, "--output", f"oci:{d / 'layout'}:cc",
                      "--output", f"docker-archive:{d / 'image.tar'}:ocibuild-test/multi:{b}",
                      "--metadata-file", str(d / "meta.json"))
        out[b] = (printed_digest(r), d, r.stderr)
    return out


@pytest.mark.engine
@pytest.mark.slow
def test_every_builder_gives_one_index(built):
    digests = {b: digest for b, (digest, _, _) in built.items()}
    assert len(set(digests.values())) == 1, digests
    digest, d, _ = built["docker"]
    top, index = index_of(d / "layout", "cc")
    assert top == digest
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}]


@pytest.mark.engine
@pytest.mark.slow
def test_validators_accept_the_index(built):
    digest, d, _ = built["host"]
    layout = d / "layout"
    raw = skopeo("inspect", "--raw", f"oci:{layout}:cc")
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    for arch in ("amd64", "arm64"):
        r = skopeo("inspect", "--override-arch", arch, f"oci:{layout}:cc")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["Architecture"] == arch
    # the whole index copies (every platform), verified by skopeo on the way
    r = skopeo("copy", "--all", f"oci:{layout}:cc", f"oci:{d / 'copy'}:cc")
    assert r.returncode == 0, r.stderr
    # oci-image-tool 1.0.0-rc1 predates image indexes in layouts ("unknown media type" for an
    # index named by a ref): it checks the index, each manifest and each config against the schemas.
    _, index = index_of(layout, "cc")
    checks = [("imageIndex", digest)]
    for m in index["manifests"]:
        checks += [("manifest", m["digest"]), ("config", json.loads(blob(layout, m["digest"]))["config"]["digest"])]
    for kind, d in checks:
        r = subprocess.run(["oci-image-tool", "validate", "--type", kind,
                            str(layout / "blobs" / "sha256" / d.removeprefix("sha256:"))],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "Validation succeeded" in r.stdout, (kind, r.stdout + r.stderr)


@pytest.mark.engine
@pytest.mark.slow
def test_each_binary_is_for_its_platform(built):
    _, d, _ = built["podman"]
    _, index = index_of(d / "layout", "cc")
    machines = {m["platform"]["architecture"]: elf_machine_of_binary(d / "layout", m["digest"])
                for m in index["manifests"]}
    assert machines == {"amd64": EM_X86_64, "arm64": EM_AARCH64}


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("engine_name", [pytest.param(e, marks=needs(e)) for e in ("docker", "podman")])
def test_the_host_image_of_the_set_runs(built, engine_name, require_engine, engine_cleanup):
    """The docker-archive holds the host's image (stderr says so), and it runs."""
    engine = require_engine(engine_name)
    digest, d, stderr = built["docker"]
    assert f"the linux/{HOST_ARCH} image only" in stderr, stderr
    name = "ocibuild-test/multi:docker"
    engine("load", "--input", str(d / "image.tar"), check=True)
    engine_cleanup.image(engine, name)
    _, index = index_of(d / "layout", "cc")
    host = next(m for m in index["manifests"] if m["platform"]["architecture"] == HOST_ARCH)
    config = json.loads(blob(d / "layout", host["digest"]))["config"]["digest"]
    assert engine.image_id(name) == config
    env = [x for k, v in sorted(CHAINCODE_ENV.items()) for x in ("-e", f"{k}={v}")]
    r = engine("run", "--rm", "--network", "none", *env, name, "chaincode", "-peer.address=127.0.0.1:7052", "-once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "starting" in r.stdout


@pytest.mark.engine
@pytest.mark.slow
def test_metadata_file_describes_the_set(built):
    import jsonschema
    schema = json.loads((Path(__file__).parents[1] / "ocibuild" / "schemas" / "metadata.json").read_text())
    digest, d, _ = built["docker"]
    meta = json.loads((d / "meta.json").read_text())
    jsonschema.validate(meta, schema)
    assert meta["digest"] == digest
    assert meta["platforms"] == ["linux/amd64", "linux/arm64"]
    _, index = index_of(d / "layout", "cc")
    assert [i["digest"] for i in meta["images"]] == [m["digest"] for m in index["manifests"]]
    by_transport = {o["transport"]: o for o in meta["outputs"]}
    assert by_transport["oci"]["digest"] == digest
    assert by_transport["docker-archive"]["platforms"] == [f"linux/{HOST_ARCH}"]
    assert by_transport["docker-archive"]["bytes"] == (d / "image.tar").stat().st_size
    assert meta["builder"] == "docker"
    assert {"compile linux/amd64", "compile linux/arm64", "assemble", "write"} <= set(meta["timings"])


# --- a registry ------------------------------------------------------------------------

def get(reg: Registry, path: str, accept: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://{reg.hostport}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.engine
@pytest.mark.registry
@pytest.mark.slow
def test_pushed_as_an_index(built, plain_registry):
    digest, d, _ = built["host"]
    repo = f"multi/{unique_name('push').lower()}"
    ref = f"docker://{plain_registry.hostport}/{repo}:v1"
    r = run_build("host", CHAINCODE, "--platform", PLATFORMS, "--output", ref,
                  "--insecure-registry", plain_registry.hostport)
    assert printed_digest(r) == digest
    status, body = get(plain_registry, f"/v2/{repo}/manifests/v1", INDEX)
    assert status == 200 and json.loads(body)["mediaType"] == INDEX
    assert "sha256:" + __import__("hashlib").sha256(body).hexdigest() == digest
    for m in json.loads(body)["manifests"]:
        status, _ = get(plain_registry, f"/v2/{repo}/manifests/{m['digest']}", MANIFEST)
        assert status == 200, m
    r = skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64",
               f"docker://{plain_registry.hostport}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Architecture"] == "arm64"


# --- refused before anything is compiled ---------------------------------------------------

def _fails_fast(*args, builder: str = "host") -> str:
    start = time.monotonic()
    r = run_ocibuild("build", str(CHAINCODE), "--builder", builder, *args)
    line = one_error_line(r)
    assert time.monotonic() - start < 30     # a guard against a compile, not a benchmark
    return line


@pytest.mark.parametrize("platforms, says", [
    ("linux/amd64,linux/arm65", "no such GOARCH"),
    ("linux/amd64,windows/amd64", "not Linux"),
    ("linux/amd64,linux/amd64", "listed twice"),
    ("linux/arm64,linux/arm64/v8", "listed twice"),
    ("linux/amd64,", "malformed platform"),
])
def test_bad_platform_lists_are_refused(tmp_path, platforms, says):
    line = _fails_fast("--platform", platforms, "--output", f"oci:{tmp_path / 'l'}")
    assert says in line, line
    assert not (tmp_path / "l").exists()


def test_a_single_platform_output_needs_the_host_in_the_set(tmp_path):
    other = "linux/s390x,linux/riscv64"
    line = _fails_fast("--platform", other, "--output", f"docker-archive:{tmp_path / 'd.tar'}:x/y:1",
                       "--output", f"oci:{tmp_path / 'l'}")
    assert "holds one platform's image" in line and f"linux/{HOST_ARCH}" in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_base_without_a_platform_is_refused_before_compiling(tmp_path, static_binary):
    base = tmp_path / "base"
    r = run_ocibuild("assemble", "--add", f"{static_binary.path}:/usr/local/bin/x", "--platform",
                     f"linux/{HOST_ARCH}", "--output", f"oci:{base}:b")
    printed_digest(r)
    other = "arm64" if HOST_ARCH == "amd64" else "amd64"
    line = _fails_fast("--base", f"oci:{base}:b", "--platform", f"linux/{HOST_ARCH},linux/{other},linux/s390x",
                       "--output", f"oci:{tmp_path / 'l'}")
    assert f"has no image for linux/{other}, linux/s390x" in line and f"it has: linux/{HOST_ARCH}" in line, line


# --- assemble ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cross_binaries(tmp_path_factory) -> dict[str, Path]:
    """A static Go program for amd64 and arm64, built by the host's go."""
    d = tmp_path_factory.mktemp("cross")
    (d / "go.mod").write_text("module example.com/hi\n\ngo 1.19\n")
    (d / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi") }\n')
    out = {}
    for arch in ("amd64", "arm64"):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(d), "GOCACHE": str(d / "cache"), "GOARCH": arch,
               "CGO_ENABLED": "0", "GOFLAGS": "", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
        subprocess.run(["go", "build", "-trimpath", "-o", f"hi-{arch}", "."], cwd=d, env=env, check=True)
        out[arch] = d / f"hi-{arch}"
    return out


def test_assemble_adds_per_platform(cross_binaries, tmp_path):
    layout = tmp_path / "l"
    args = ["assemble", "--add", f"linux/amd64={cross_binaries['amd64']}:/usr/local/bin/hi",
            "--add", f"linux/arm64={cross_binaries['arm64']}:/usr/local/bin/hi",
            "--add", f"{FIXTURES / 'chaincode' / 'go.mod'}:/etc/hi/go.mod", "--sbom", "none"]
    digest = printed_digest(run_ocibuild(*args, "--output", f"oci:{layout}:v1"))
    # the same without naming --platform: the platforms come from the adds, in order
    assert printed_digest(run_ocibuild(*args, "--platform", PLATFORMS, "--output", f"oci:{tmp_path / 'm'}")) \
        == digest
    top, index = index_of(layout, "v1")
    assert top == digest
    for m in index["manifests"]:
        arch = m["platform"]["architecture"]
        assert elf_machine_of_binary(layout, m["digest"], "usr/local/bin/hi") == (
            EM_AARCH64 if arch == "arm64" else EM_X86_64)
        manifest = json.loads(blob(layout, m["digest"]))
        top = gzip.decompress(blob(layout, manifest["layers"][-1]["digest"]))
        with tarfile.open(fileobj=io.BytesIO(top)) as tf:
            assert "etc/hi/go.mod" in tf.getnames()      # an add without a platform: in every image


@pytest.mark.parametrize("adds, says", [
    (["linux/arm64={amd64}:/usr/local/bin/hi"], "is a binary for linux/amd64, not for linux/arm64"),
    (["linux/riscv64={amd64}:/usr/local/bin/hi"], "is not in --platform"),
])
def test_assemble_refuses_mismatched_adds(cross_binaries, tmp_path, adds, says):
    argv = ["assemble", "--platform", PLATFORMS, "--output", f"oci:{tmp_path / 'l'}"]
    for a in adds:
        argv += ["--add", a.format(amd64=cross_binaries["amd64"], arm64=cross_binaries["arm64"])]
    if "riscv64" not in adds[0]:
        argv += ["--add", f"linux/amd64={cross_binaries['amd64']}:/usr/local/bin/hi"]
    line = one_error_line(run_ocibuild(*argv))
    assert says in line, line
    assert not (tmp_path / "l").exists()


def test_a_tree_may_hold_binaries_for_other_platforms(cross_binaries, tmp_path):
    """A directory added whole (a Go tree, whose testdata has 386 and arm
    binaries) may hold ELF files for other platforms, as long as one of its
    binaries is for the image's; a tree with none for it is refused, and a
    file added by name must always be for it."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "testdata").mkdir()
    shutil.copy(cross_binaries["amd64"], tree / "bin" / "hi")
    shutil.copy(cross_binaries["arm64"], tree / "testdata" / "arm64-sample")
    r = run_ocibuild("assemble", "--platform", "linux/amd64", "--add", f"{tree}:/opt/t", "--sbom", "none",
                     "--output", f"oci:{tmp_path / 'ok'}")
    assert r.returncode == 0, r.stderr
    (tree / "bin" / "hi").unlink()
    line = one_error_line(run_ocibuild("assemble", "--platform", "linux/amd64", "--add", f"{tree}:/opt/t",
                                       "--output", f"oci:{tmp_path / 'no'}"))
    assert "/opt/t/testdata/arm64-sample is a binary for linux/arm64, not for linux/amd64" in line, line
    assert not (tmp_path / "no").exists()
    line = one_error_line(run_ocibuild("assemble", "--platform", "linux/amd64", "--add", f"{tree}:/opt/t",
                                       "--add", f"{cross_binaries['arm64']}:/usr/local/bin/hi",
                                       "--add", f"{cross_binaries['amd64']}:/usr/local/bin/other",
                                       "--output", f"oci:{tmp_path / 'no'}"))
    assert "/usr/local/bin/hi is a binary for linux/arm64" in line, line


def test_a_builder_that_ignores_goarch_is_caught(cross_binaries):
    """build checks each compiled binary's ELF machine against its platform."""
    from ocibuild.build import check_machine
    from ocibuild.errors import InputError
    from ocibuild.oci.model import Platform
    check_machine(str(cross_binaries["arm64"]), Platform("linux", "arm64"))
    with pytest.raises(InputError, match="made a binary for linux/amd64, not one for linux/arm64"):
        check_machine(str(cross_binaries["amd64"]), Platform("linux", "arm64"))
    with pytest.raises(InputError, match="made no ELF binary"):
        check_machine(str(FIXTURES / "chaincode" / "go.mod"), Platform("linux", "arm64"))


def test_metadata_and_digest_files_of_an_assemble(cross_binaries, tmp_path):
    import jsonschema
    schema = json.loads((Path(__file__).parents[1] / "ocibuild" / "schemas" / "metadata.json").read_text())
    r = run_ocibuild("assemble", "--add", f"{cross_binaries['amd64']}:/usr/local/bin/hi",
                     "--output", f"oci-archive:{tmp_path / 'a.tar'}:v1",
                     "--metadata-file", str(tmp_path / "meta.json"), "--digest-file", str(tmp_path / "digest"))
    digest = printed_digest(r)
    assert r.stdout == digest + "\n"                     # stdout stays one line
    assert (tmp_path / "digest").read_text() == digest
    meta = json.loads((tmp_path / "meta.json").read_text())
    jsonschema.validate(meta, schema)
    assert meta["digest"] == digest and meta["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert meta["builder"] is None and meta["toolchain"] is None
    assert meta["platforms"] == ["linux/amd64"]
    (image,) = meta["images"]
    assert image["sbom"] and image["digest"] == digest
    assert meta["outputs"][0]["bytes"] == (tmp_path / "a.tar").stat().st_size


def test_a_metadata_file_in_a_missing_directory_is_refused_first(cross_binaries, tmp_path):
    line = one_error_line(run_ocibuild("assemble", "--add", f"{cross_binaries['amd64']}:/usr/local/bin/hi",
                                       "--output", f"oci:{tmp_path / 'l'}",
                                       "--metadata-file", str(tmp_path / "no" / "meta.json")))
    assert "does not exist" in line and not (tmp_path / "l").exists()
