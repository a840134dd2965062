"""SBOMs attached as OCI 1.1 referrers: listed in a layout's (and an
archive's) index.json, pushed to a registry through the referrers API or,
on a registry without it, the fallback tag `sha256-<hex>`; found back by
`ocibuild sbom` and by skopeo/HTTP; parsed by a real SPDX parser."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import test_registry_unit
from conftest import FIXTURES, printed_digest, read_layout, run_ocibuild, unique_name
from test_build_cli import one_error_line
from test_registry_unit import FakeRegistry, Reply, make_image

from ocibuild.errors import RegistryError
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.imageset import ImageSet, referrer
from ocibuild.oci.reference import FileRef, parse_registry_ref
from ocibuild.outputs import write_all
from ocibuild.outputs.files import LayoutOutput
from ocibuild.registry.options import RegistryOptions
from ocibuild.registry.pull import Puller
from ocibuild.registry.push import RegistryOutput, fallback_tag

serve = test_registry_unit.serve      # the fake registry's HTTP server, a fixture
SPDX = "application/spdx+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def spdx_parse(doc: bytes, tmp_path: Path):
    """Parsed and validated by spdx-tools; the document."""
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(doc)
    parsed = parse_file(str(path))
    assert validate_full_spdx_document(parsed) == []
    return parsed


def go_modules(binary: Path) -> set[tuple[str, str]]:
    """(path, version) of every dep `go version -m` lists for `binary`."""
    out = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True, check=True).stdout
    deps = set()
    for line in out.splitlines():
        f = line.strip().split("\t")
        if f[0] in ("dep", "=>"):
            deps.add((f[1], f[2]))
    return deps


# --- layouts and archives ---------------------------------------------------------------

@pytest.fixture(scope="module")
def vendored_build(tmp_path_factory):
    """The vendored fixture built by the host builder into a layout and an archive."""
    d = tmp_path_factory.mktemp("sbom-build")
    r = run_ocibuild("build", str(FIXTURES / "vendored"), "--builder", "host",
                     "--output", f"oci:{d / 'layout'}:cc", "--output", f"oci-archive:{d / 'cc.tar'}:cc")
    return printed_digest(r), d


def test_the_layout_lists_the_sbom_beside_the_image(vendored_build, tmp_path):
    digest, d = vendored_build
    index = json.loads((d / "layout" / "index.json").read_text())
    refs = [m for m in index["manifests"] if m.get("artifactType") == SPDX]
    assert len(refs) == 1 and len(index["manifests"]) == 2
    manifest = json.loads((d / "layout" / "blobs" / "sha256" / refs[0]["digest"][7:]).read_bytes())
    assert manifest["subject"]["digest"] == digest
    assert manifest["artifactType"] == SPDX
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [SPDX]


def test_sbom_lists_what_go_version_m_lists(vendored_build, tmp_path):
    digest, d = vendored_build
    image = read_layout(d / "layout", "cc")
    top = (d / "layout" / "blobs" / "sha256" / image.manifest["layers"][-1]["digest"][7:]).read_bytes()
    import gzip
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as tf:
        (tmp_path / "chaincode").write_bytes(tf.extractfile("usr/local/bin/chaincode").read())
    for ref in (f"oci:{d / 'layout'}:cc", f"oci-archive:{d / 'cc.tar'}:cc"):
        r = run_ocibuild("sbom", ref)
        assert r.returncode == 0, r.stderr
        doc = spdx_parse(r.stdout.encode(), tmp_path)
        listed = {(p.name, p.version) for p in doc.packages}
        assert go_modules(tmp_path / "chaincode") <= listed, listed
        assert ("example.com/greet", "v1.0.0") in listed
        assert any(p.name == "stdlib" for p in doc.packages)
        assert {"ca-certificates", "tzdata"} <= {p.name for p in doc.packages}


def test_same_source_same_sbom_bytes(vendored_build, tmp_path):
    digest, d = vendored_build
    r = run_ocibuild("build", str(FIXTURES / "vendored"), "--builder", "host",
                     "--output", f"oci:{tmp_path / 'l'}:cc")
    assert printed_digest(r) == digest
    again = run_ocibuild("sbom", f"oci:{tmp_path / 'l'}:cc").stdout
    assert again == run_ocibuild("sbom", f"oci:{d / 'layout'}:cc").stdout


def test_sbom_none_attaches_nothing(tmp_path, static_binary):
    r = run_ocibuild("assemble", "--sbom", "none", "--add", f"{static_binary.path}:/usr/local/bin/cc",
                     "--output", f"oci:{tmp_path / 'l'}")
    printed_digest(r)
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    assert len(index["manifests"]) == 1 and "artifactType" not in index["manifests"][0]
    line = one_error_line(run_ocibuild("sbom", f"oci:{tmp_path / 'l'}"))
    assert "has no SPDX SBOM attached" in line


def test_an_unreadable_build_info_is_said_once(tmp_path, static_binary):
    """A Go binary whose .go.buildinfo section is gone: the image is fine,
    the SBOM says what it could not read, stderr says so once."""
    data = bytearray(static_binary.path.read_bytes())
    at = data.find(b".go.buildinfo\0")
    assert at > 0
    data[at:at + 13] = b".xx.xxxxxxxxx"          # the section is no longer found by name
    (tmp_path / "cc").write_bytes(bytes(data))
    (tmp_path / "cc").chmod(0o755)
    r = run_ocibuild("assemble", "--add", f"{tmp_path / 'cc'}:/usr/local/bin/cc", "--add",
                     f"{tmp_path / 'cc'}:/usr/local/bin/cc2", "--output", f"oci:{tmp_path / 'l'}")
    printed_digest(r)
    warnings = [line for line in r.stderr.splitlines() if "warning: SBOM" in line]
    assert len(warnings) == 2 and all("buildinfo" in w for w in warnings), r.stderr   # one per binary
    doc = run_ocibuild("sbom", f"oci:{tmp_path / 'l'}").stdout
    spdx_parse(doc.encode(), tmp_path)
    assert "buildinfo" in doc


def test_engines_keep_no_referrers():
    line = one_error_line(run_ocibuild("sbom", "docker-daemon:whatever:latest"))
    assert "keeps no referrers" in line


# --- registries: the fallback tag, the referrers API, a refusal -------------------------

def _set(seed: int = 0) -> ImageSet:
    image = make_image(100, seed=seed)
    return ImageSet((image,), referrers=(referrer(image.descriptor(), SPDX, b'{"spdx": %d}' % seed, 0),))


def _out(reg, name: str, tmp_path) -> RegistryOutput:
    options = RegistryOptions(insecure=frozenset({reg.host}), cache_dir=str(tmp_path / "cache"))
    return RegistryOutput(parse_registry_ref(f"{reg.host}/{name}"), options)


def test_a_registry_without_the_api_gets_the_fallback_tag(serve, tmp_path):
    reg = FakeRegistry(serve)
    first, second = _set(1), _set(1)
    # Someone attached another artifact to the same image before.
    other = referrer(first.images[0].descriptor(), "application/vnd.example+json", b"{}", 0)
    with WorkStore(str(tmp_path)) as work:
        write_all([_out(reg, "acme/cc:other", tmp_path)], ImageSet(first.images, referrers=(other,)), work)
        write_all([_out(reg, "acme/cc:v1", tmp_path)], second, work)
    tag = fallback_tag(first.images[0].digest)
    assert tag == "sha256-" + first.images[0].digest[7:]
    body, ct = reg.manifests[("acme/cc", tag)]
    assert ct == INDEX
    listed = {m["digest"]: m["artifactType"] for m in json.loads(body)["manifests"]}
    assert listed == {other.digest: "application/vnd.example+json", second.referrers[0].digest: SPDX}
    with Puller(parse_registry_ref(f"{reg.host}/acme/cc:v1"), _out(reg, "x", tmp_path).options) as p:
        assert p.referrers(first.images[0].digest, SPDX) == [b'{"spdx": 1}']


class ReferrersRegistry(FakeRegistry):
    """A registry with the referrers API (OCI-Subject on PUT, GET /referrers/)."""

    def handle(self, r):
        if r.path.startswith("/v2/") and "/referrers/" in r.path:
            repo, subject = r.path[4:].split("/referrers/")
            found = [{"mediaType": ct, "digest": d, "size": len(b), "artifactType": json.loads(b)["artifactType"]}
                     for (rp, d), (b, ct) in self.manifests.items()
                     if rp == repo and d.startswith("sha256:") and
                     json.loads(b).get("subject", {}).get("digest") == subject]
            return Reply(200, {"Content-Type": INDEX},
                         json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": found}).encode())
        reply = super().handle(r)
        if r.method == "PUT" and "/manifests/" in r.path and "subject" in json.loads(r.body):
            reply.headers["OCI-Subject"] = json.loads(r.body)["subject"]["digest"]
        return reply


def test_a_registry_with_the_api_indexes_referrers_itself(serve, tmp_path):
    reg = ReferrersRegistry(serve)
    found = _set(2)
    with WorkStore(str(tmp_path)) as work:
        write_all([_out(reg, "acme/cc:v1", tmp_path)], found, work)
    assert reg.tags("acme/cc") == {"v1"}                 # no fallback tag
    with Puller(parse_registry_ref(f"{reg.host}/acme/cc:v1"), _out(reg, "x", tmp_path).options) as p:
        assert p.referrers(found.images[0].digest, SPDX) == [b'{"spdx": 2}']


class RefusingRegistry(FakeRegistry):
    """Refuses any manifest with a subject (an old registry that validates strictly)."""

    def manifest(self, r, repo, ref):
        if r.method == "PUT" and "subject" in json.loads(r.body):
            return self.error(400, "MANIFEST_INVALID", "manifest invalid", "unknown field subject")
        return super().manifest(r, repo, ref)


def test_a_refused_referrer_writes_nothing(serve, tmp_path):
    reg = RefusingRegistry(serve)
    layout = LayoutOutput(FileRef("oci", str(tmp_path / "l"), "v1"))
    with WorkStore(str(tmp_path)) as work, pytest.raises(RegistryError, match="manifest invalid"):
        write_all([_out(reg, "acme/cc:v1", tmp_path), layout], _set(3), work)
    assert reg.tags("acme/cc") == set()
    assert not (tmp_path / "l").exists()


# --- the real distribution registry (no referrers API) ------------------------------------

@pytest.mark.registry
def test_pushed_sbom_is_found_through_the_fallback_tag(plain_registry, vendored_build, tmp_path):
    digest, d = vendored_build
    repo = f"sbom/{unique_name('push').lower()}"
    r = run_ocibuild("build", str(FIXTURES / "vendored"), "--builder", "host",
                     "--output", f"docker://{plain_registry.hostport}/{repo}:v1",
                     "--insecure-registry", plain_registry.hostport)
    assert printed_digest(r) == digest
    tag = "sha256-" + digest[7:]
    req = urllib.request.Request(f"http://{plain_registry.hostport}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": INDEX})
    with urllib.request.urlopen(req, timeout=30) as resp:
        listed = json.loads(resp.read())["manifests"]
    assert [m["artifactType"] for m in listed] == [SPDX]
    # the referrers API is not there: distribution 2.8 answers 404
    try:
        urllib.request.urlopen(f"http://{plain_registry.hostport}/v2/{repo}/referrers/{digest}", timeout=30)
        raise AssertionError("the registry has a referrers API after all")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{plain_registry.hostport}/{repo}:{tag}"], capture_output=True, text=True)
    assert raw.returncode == 0 and json.loads(raw.stdout)["manifests"][0]["digest"] == listed[0]["digest"]
    back = run_ocibuild("sbom", f"docker://{plain_registry.hostport}/{repo}:v1",
                        "--insecure-registry", plain_registry.hostport)
    assert back.returncode == 0, back.stderr
    assert back.stdout == run_ocibuild("sbom", f"oci:{d / 'layout'}:cc").stdout
    doc = spdx_parse(back.stdout.encode(), tmp_path)
    assert hashlib.sha256(back.stdout.encode()).hexdigest()        # parsed; same bytes as the layout's
    assert any(p.name == "example.com/greet" for p in doc.packages)
