"""Reading bases: oci:, oci-archive:, docker-archive: as ocibuild writes them
and as skopeo writes them; extending them; and every way a source can be
broken, through the Python API and through the CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocibuild.errors import BlobError, InputError, OcibuildError
from ocibuild.oci.assembly import Add, Request
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.compression import compression
from ocibuild.oci.model import ANN_BASE_DIGEST, ANN_BASE_NAME, OCI_LAYER, REF_NAME, Platform, parse_json
from ocibuild.oci.reference import parse_reference
from ocibuild.outputs import write_all
from ocibuild.transports import assemble_image, open_image, open_output

OCIBUILD = str(Path(sys.executable).parent / "ocibuild")
AMD64 = Platform("linux", "amd64")
# skopeo is an independent reader these tests compare against; scripts/setup
# installs it, so its absence fails the tests rather than skipping them.
SKOPEO = shutil.which("skopeo") or "skopeo"


@dataclass(frozen=True)
class Made:
    root: Path
    digest: str
    config: str
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...]

    @property
    def layout(self):
        return self.root / "layout"

    @property
    def oci_archive(self):
        return self.root / "image.tar"

    @property
    def docker_archive(self):
        return self.root / "docker.tar"

    @property
    def skopeo_oci(self):
        return self.root / "skopeo-oci.tar"

    @property
    def skopeo_docker(self):
        return self.root / "skopeo-docker.tar"


def _write(image, work, *refs):
    outs = [open_output(r, 0) for r in refs]
    for o in outs:
        o.check()
    write_all(outs, image, work)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    root = tmp_path_factory.mktemp("sources")
    payload = root / "app"
    payload.write_bytes(random.Random(1).randbytes(64 * 1024))
    os.chmod(payload, 0o755)
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(payload), "/usr/local/bin/app"),), platform=AMD64), work)
        m = Made(root, image.digest, image.config.descriptor.digest,
                 tuple(layer.descriptor.digest for layer in image.layers),
                 tuple(layer.diff_id for layer in image.layers))
        _write(image, work, f"oci:{m.layout}:v1", f"oci-archive:{m.oci_archive}:v1",
               f"docker-archive:{m.docker_archive}:example/app:v1")
    for dest in (f"oci-archive:{m.skopeo_oci}:v1",
                 f"docker-archive:{m.skopeo_docker}:example/app:v1"):
        subprocess.run([SKOPEO, "copy", "-q", f"oci:{m.layout}:v1", dest],
                       check=True, capture_output=True)
    return m


def _payload(tmp_path) -> Path:
    p = tmp_path / "extra"
    p.write_bytes(b"extra file\n")
    return p


def _full_read(image) -> None:
    """Read every blob through its verifying reader."""
    image.config.read()
    for lay in image.layers:
        with lay.open_tar() as t:
            while t.read(1 << 20):
                pass
        lay.read()


# --- reading what ocibuild writes --------------------------------------------

@pytest.mark.parametrize("kind", ["oci", "oci-archive", "docker-archive"])
def test_read_back_ocibuild_output(made, kind):
    path = {"oci": made.layout, "oci-archive": made.oci_archive,
            "docker-archive": made.docker_archive}[kind]
    name = "example/app:v1" if kind == "docker-archive" else "v1"
    for r in (f"{kind}:{path}:{name}", f"{kind}:{path}"):      # with and without the name
        image = open_image(r)
        assert image.config.descriptor.digest == made.config
        assert tuple(layer.descriptor.digest for layer in image.layers) == made.layers
        assert tuple(layer.diff_id for layer in image.layers) == made.diff_ids
        assert image.platform == AMD64
        assert image.digest == made.digest
        _full_read(image)


# --- reading what skopeo writes ----------------------------------------------

def test_read_skopeo_oci_archive(made):
    for ref in (f"oci-archive:{made.skopeo_oci}:v1", f"oci-archive:{made.skopeo_oci}"):
        image = open_image(ref)
        assert image.digest == made.digest          # skopeo kept the manifest as it was
        assert tuple(layer.diff_id for layer in image.layers) == made.diff_ids
        _full_read(image)


def test_read_skopeo_docker_archive(made):
    with tarfile.open(made.skopeo_docker) as tf:
        names = tf.getnames()
    assert not any(n.startswith("blobs/") for n in names)    # old style: no OCI layout in it
    for ref in (f"docker-archive:{made.skopeo_docker}",
                f"docker-archive:{made.skopeo_docker}:docker.io/example/app:v1"):
        image = open_image(ref)
        assert image.config.descriptor.digest == made.config
        assert tuple(layer.diff_id for layer in image.layers) == made.diff_ids
        # skopeo stores the layers uncompressed: the digest is the diff_id
        assert tuple(layer.descriptor.digest for layer in image.layers) == made.diff_ids
        assert {layer.descriptor.media_type for layer in image.layers} == {OCI_LAYER}
        _full_read(image)


def test_read_skopeo_docker_archive_by_short_name(made):
    # skopeo records docker.io/example/app:v1; the familiar name must find it
    # (was a bug: RepoTags were compared literally)
    image = open_image(f"docker-archive:{made.skopeo_docker}:example/app:v1")
    assert image.config.descriptor.digest == made.config
    with pytest.raises(InputError, match="example/app:v2"):
        open_image(f"docker-archive:{made.skopeo_docker}:example/app:v2")


# --- extending a base --------------------------------------------------------

BASES = {
    "ocibuild-oci": lambda m: f"oci:{m.layout}:v1",
    "ocibuild-oci-archive": lambda m: f"oci-archive:{m.oci_archive}:v1",
    "ocibuild-docker-archive": lambda m: f"docker-archive:{m.docker_archive}:example/app:v1",
    "skopeo-oci-archive": lambda m: f"oci-archive:{m.skopeo_oci}:v1",
    "skopeo-docker-archive": lambda m: f"docker-archive:{m.skopeo_docker}",
}


@pytest.mark.parametrize("which", list(BASES))
def test_extending_keeps_base_layers_and_records_it(made, tmp_path, which):
    ref = BASES[which](made)
    base = open_image(ref)
    base_layers = [layer.descriptor.digest for layer in base.layers]
    extra = _payload(tmp_path)
    out = tmp_path / "out.tar"
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(extra), "/usr/local/bin/extra"),), base=ref), work)
        _write(image, work, f"oci-archive:{out}:new")
        assert [layer.descriptor.digest for layer in image.layers[:-1]] == base_layers
        assert len(image.layers) == len(base.layers) + 1
        cfg = image.config_doc
        assert cfg["rootfs"]["diff_ids"][:-1] == [layer.diff_id for layer in base.layers]
        assert cfg["rootfs"]["diff_ids"][-1] == image.layers[-1].diff_id
        assert len(cfg["history"]) == len(base.config_doc.get("history") or []) + 1
        assert cfg["config"]["User"] == "65532:65532"            # the base's config is kept
        ann = image.manifest_doc["annotations"]
        # The base's name (not its host path, which would make the digest depend
        # on where the file sits); an unnamed base records only its digest.
        named = parse_reference(ref).ref
        assert ann.get(ANN_BASE_NAME) == (named or None)
        assert str(tmp_path) not in json.dumps(ann)
        assert ann[ANN_BASE_DIGEST] == base.digest
        if which != "skopeo-docker-archive":      # the digest ocibuild printed for the base
            assert ann[ANN_BASE_DIGEST] == made.digest
        # the new layer holds only the new file: the base has its parents
        with image.layers[-1].open_tar() as t, tarfile.open(fileobj=t, mode="r|") as tf:
            assert [m.name for m in tf] == ["usr/local/bin/extra"]
        # every manifest layer descriptor is of the OCI family
        assert all(d["mediaType"].startswith(OCI_LAYER) for d in image.manifest_doc["layers"])
    back = open_image(f"oci-archive:{out}:new")
    assert back.digest == image.digest
    _full_read(back)
    r = subprocess.run([SKOPEO, "inspect", "--raw", f"oci-archive:{out}:new"],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    assert parse_json(r.stdout, "manifest")["annotations"][ANN_BASE_DIGEST] == base.digest


# --- broken sources ----------------------------------------------------------

def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x55]))


def _flip_member(archive: Path, name: str) -> None:
    with tarfile.open(archive) as tf:
        m = tf.getmember(name)
    _flip(archive, m.offset_data + m.size // 2)


def _copy_layout(made, tmp_path) -> Path:
    dst = tmp_path / "base"
    shutil.copytree(made.layout, dst)
    return dst


def _copy(src: Path, tmp_path) -> Path:
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    return dst


def _rewrite_without(archive: Path, drop: str) -> None:
    tmp = archive.with_suffix(".new")
    with tarfile.open(archive) as src, tarfile.open(tmp, "w") as dst:
        for m in src.getmembers():
            if m.name != drop:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    os.replace(tmp, archive)


# Each scenario: (made, tmp_path) -> (base reference, error class, words the message must hold)

def corrupt_layer_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    _flip(lay / "blobs/sha256" / made.layers[-1][7:], 200)
    return f"oci:{lay}:v1", BlobError, [made.layers[-1]]


def corrupt_config_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    _flip(lay / "blobs/sha256" / made.config[7:], 10)
    return f"oci:{lay}:v1", BlobError, [made.config, "corrupt"]


def corrupt_manifest_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    _flip(lay / "blobs/sha256" / made.digest[7:], 30)
    return f"oci:{lay}:v1", BlobError, [made.digest, "corrupt"]


def truncated_layer_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    p = lay / "blobs/sha256" / made.layers[-1][7:]
    os.truncate(p, p.stat().st_size // 2)
    return f"oci:{lay}:v1", BlobError, [made.layers[-1], "truncated"]


def missing_layer_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    (lay / "blobs/sha256" / made.layers[-1][7:]).unlink()
    return f"oci:{lay}:v1", BlobError, [made.layers[-1][7:], "missing"]


def missing_config_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    (lay / "blobs/sha256" / made.config[7:]).unlink()
    return f"oci:{lay}:v1", BlobError, [made.config[7:], "missing"]


def missing_ref_oci(made, tmp_path):
    return f"oci:{made.layout}:nope", InputError, ["'nope'", "v1"]


def multiple_images_oci(made, tmp_path):
    lay = _copy_layout(made, tmp_path)
    extra = _payload(tmp_path)
    with WorkStore() as work:
        other = assemble_image(Request(adds=(Add(str(extra), "/x"),), base="scratch", platform=AMD64), work)
        _write(other, work, f"oci:{lay}:v2")
    return f"oci:{lay}", InputError, ["2 images", "v1", "v2"]


def not_a_layout(made, tmp_path):
    d = tmp_path / "notalayout"
    d.mkdir()
    (d / "README").write_text("hello\n")
    return f"oci:{d}", InputError, [str(d), "not an OCI layout"]


def no_such_directory(made, tmp_path):
    return f"oci:{tmp_path / 'nowhere'}", InputError, [str(tmp_path / "nowhere")]


def corrupt_layer_oci_archive(made, tmp_path):
    arc = _copy(made.oci_archive, tmp_path)
    _flip_member(arc, "blobs/sha256/" + made.layers[-1][7:])
    return f"oci-archive:{arc}:v1", BlobError, [made.layers[-1]]


def truncated_oci_archive(made, tmp_path):
    arc = _copy(made.oci_archive, tmp_path)
    with tarfile.open(arc) as tf:
        m = tf.getmember("blobs/sha256/" + made.layers[-1][7:])
    os.truncate(arc, m.offset_data + m.size // 2)           # cut inside a member
    return f"oci-archive:{arc}:v1", InputError, [str(arc)]


def truncated_oci_archive_between_members(made, tmp_path):
    # Cut where a header would start: tarfile alone takes that for the end.
    arc = _copy(made.oci_archive, tmp_path)
    with tarfile.open(arc) as tf:
        m = tf.getmember("blobs/sha256/" + made.layers[-1][7:])
    os.truncate(arc, m.offset_data + -(-m.size // 512) * 512)
    return f"oci-archive:{arc}:v1", InputError, [str(arc), "truncated"]


def missing_blob_oci_archive(made, tmp_path):
    arc = _copy(made.oci_archive, tmp_path)
    _rewrite_without(arc, "blobs/sha256/" + made.layers[-1][7:])
    return f"oci-archive:{arc}:v1", BlobError, [made.layers[-1][7:], "missing"]


def missing_ref_oci_archive(made, tmp_path):
    return f"oci-archive:{made.oci_archive}:nope", InputError, ["'nope'"]


def not_a_tar(made, tmp_path):
    p = tmp_path / "notatar.tar"
    p.write_bytes(b"this is not a tar archive\n" * 40)
    return f"oci-archive:{p}", InputError, [str(p), "tar"]


def empty_file(made, tmp_path):
    p = tmp_path / "empty.tar"
    p.write_bytes(b"")
    return f"docker-archive:{p}", InputError, [str(p)]


def no_such_archive(made, tmp_path):
    return f"oci-archive:{tmp_path / 'nothing.tar'}", InputError, [str(tmp_path / "nothing.tar")]


def corrupt_layer_docker_archive(made, tmp_path):
    arc = _copy(made.docker_archive, tmp_path)
    _flip_member(arc, "blobs/sha256/" + made.layers[-1][7:])
    return f"docker-archive:{arc}", BlobError, [made.layers[-1][7:]]


def missing_ref_docker_archive(made, tmp_path):
    return (f"docker-archive:{made.docker_archive}:example/app:nope", InputError,
            ["example/app:nope", "example/app:v1"])


def corrupt_layer_skopeo_docker_archive(made, tmp_path):
    arc = _copy(made.skopeo_docker, tmp_path)
    name = made.diff_ids[-1][7:] + ".tar"
    _flip_member(arc, name)
    return f"docker-archive:{arc}", BlobError, [name, "corrupt"]


def missing_layer_skopeo_docker_archive(made, tmp_path):
    arc = _copy(made.skopeo_docker, tmp_path)
    name = made.diff_ids[-1][7:] + ".tar"
    _rewrite_without(arc, name)
    return f"docker-archive:{arc}", BlobError, [name, "missing"]


SCENARIOS = [corrupt_layer_oci, corrupt_config_oci, corrupt_manifest_oci, truncated_layer_oci,
             missing_layer_oci, missing_config_oci, missing_ref_oci, multiple_images_oci,
             not_a_layout, no_such_directory, corrupt_layer_oci_archive, truncated_oci_archive,
             truncated_oci_archive_between_members,
             missing_blob_oci_archive, missing_ref_oci_archive, not_a_tar, empty_file,
             no_such_archive, corrupt_layer_docker_archive, missing_ref_docker_archive,
             corrupt_layer_skopeo_docker_archive, missing_layer_skopeo_docker_archive]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_broken_base_raises_the_right_error(made, tmp_path, scenario):
    ref, exc, words = scenario(made, tmp_path)
    extra = _payload(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with WorkStore() as work:
        with pytest.raises(exc) as info:
            image = assemble_image(Request(adds=(Add(str(extra), "/usr/local/bin/extra"),), base=ref), work)
            # a corruption the tar reader did not reach must still be caught on the way out
            _write(image, work, f"oci-archive:{out}/image.tar")
    assert isinstance(info.value, OcibuildError)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert os.listdir(out) == []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_broken_base_through_the_cli(made, tmp_path, scenario):
    ref, exc, words = scenario(made, tmp_path)
    extra = _payload(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    r = subprocess.run([OCIBUILD, "assemble", "--base", ref, "--add", f"{extra}:/usr/local/bin/extra",
                        "--output", f"oci-archive:{out}/image.tar", "--output", f"oci:{out}/layout"],
                       capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmpdir)})
    assert r.returncode == 3, r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert all(line.startswith("ocibuild: ") for line in lines if line not in errors), r.stderr
    for w in words:
        assert w in errors[0], f"{w!r} not in {errors[0]!r}"
    assert os.listdir(out) == []                # no output, no partial file
    assert os.listdir(tmpdir) == []             # the work store is gone too


def test_debug_shows_the_traceback(made, tmp_path):
    r = subprocess.run([OCIBUILD, "--debug", "assemble", "--base", f"oci:{made.layout}:nope",
                        "--output", f"oci:{tmp_path}/x"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "InputError" in r.stderr
    assert not (tmp_path / "x").exists()


def test_open_image_errors_name_the_source(made, tmp_path):
    """open_image alone (no build) already refuses what it can see."""
    with pytest.raises(InputError, match="nope"):
        open_image(f"oci:{made.layout}:nope")
    ref, exc, words = corrupt_config_oci(made, tmp_path)
    with pytest.raises(BlobError, match=made.config):
        open_image(ref)
    with pytest.raises(InputError, match="not an OCI layout"):
        open_image(f"oci:{tmp_path}")


def test_corrupt_base_layer_is_caught_when_writing_into_the_same_layout(tmp_path):
    # (was a bug: assembly.layer_paths stopped at the end-of-archive marker, so
    # the digest was never checked, and the layout output skips blobs it has)
    # A plain tar of 2*10240 + 512 bytes: tarfile's 10240-byte reads stop right
    # after the first zero block, leaving the last 512 bytes of the blob unread.
    data = tmp_path / "data"
    data.write_bytes(random.Random(2).randbytes(20480 + 512 - 3 * 512))
    lay = tmp_path / "lay"
    with WorkStore() as work:
        base = assemble_image(Request(adds=(Add(str(data), "/data"),), base="scratch",
                             compression=compression("none"), platform=AMD64), work)
        assert base.layers[0].descriptor.size == 20992
        _write(base, work, f"oci:{lay}:base")
    _flip(lay / "blobs/sha256" / base.layers[0].descriptor.digest[7:], 5000)
    before = (lay / "index.json").read_bytes()
    extra = _payload(tmp_path)
    with WorkStore() as work:
        with pytest.raises(BlobError, match=base.layers[0].descriptor.digest):
            image = assemble_image(Request(adds=(Add(str(extra), "/extra"),), base=f"oci:{lay}:base"), work)
            _write(image, work, f"oci:{lay}:extended")
    assert (lay / "index.json").read_bytes() == before


# --- multi-platform indexes --------------------------------------------------

def test_platform_picked_from_a_nested_index(tmp_path):
    import hashlib
    import json

    from ocibuild.oci.model import OCI_INDEX
    lay = tmp_path / "lay"
    extra = _payload(tmp_path)
    digests = {}
    with WorkStore() as work:
        for plat in (Platform("linux", "amd64"), Platform("linux", "arm64", "v8")):
            image = assemble_image(Request(adds=(Add(str(extra), "/x"),), platform=plat), work)
            _write(image, work, f"oci:{lay}:{plat.architecture}")
            digests[plat.architecture] = image.descriptor()
    nested = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                         "manifests": [d.to_json() for d in digests.values()]}).encode()
    hexd = hashlib.sha256(nested).hexdigest()
    (lay / "blobs" / "sha256" / hexd).write_bytes(nested)
    index = json.loads((lay / "index.json").read_bytes())
    index["manifests"].append({"mediaType": OCI_INDEX, "digest": "sha256:" + hexd,
                               "size": len(nested), "annotations": {REF_NAME: "multi"}})
    (lay / "index.json").write_text(json.dumps(index))

    arm = open_image(f"oci:{lay}:multi", Platform("linux", "arm64"))
    assert arm.digest == digests["arm64"].digest
    assert arm.platform == Platform("linux", "arm64", "v8")
    amd = open_image(f"oci:{lay}:multi", Platform("linux", "amd64"))
    assert amd.digest == digests["amd64"].digest
    with pytest.raises(InputError, match="s390x"):
        open_image(f"oci:{lay}:multi", Platform("linux", "s390x"))

    with WorkStore() as work:     # --platform picks the base's manifest, too
        image = assemble_image(Request(adds=(Add(str(extra), "/y"),), base=f"oci:{lay}:multi",
                              platform=Platform("linux", "arm64")), work)
        assert image.platform.architecture == "arm64"
        assert image.manifest_doc["annotations"][ANN_BASE_DIGEST] == digests["arm64"].digest
        assert [layer.descriptor.digest for layer in image.layers[:-1]] == [
            layer.descriptor.digest for layer in arm.layers]


def test_base_for_another_platform_refused(made, tmp_path):
    extra = _payload(tmp_path)
    with WorkStore() as work:
        with pytest.raises(InputError, match="arm64"):
            assemble_image(Request(adds=(Add(str(extra), "/y"),), base=f"oci:{made.layout}:v1",
                          platform=Platform("linux", "arm64")), work)
