"""Golden values and content of the built-in bases.

The static base layer is built from layers/static.json with every mtime 0
and owner/mode fixed by the definition, so its diff_id (sha256 of the
uncompressed tar) is a constant: a change here means every chaincode image
built on `static` changes digest. If the definition is changed on purpose,
update the constants below in the same commit.

The gzip digest is pinned too. It is reproducible only because the deflate
code is pinned: ISA-L through `isal==1.9.1` (pyproject.toml) at level 2
(compression.GZIP_LEVEL), fed in fixed 1 MiB blocks, with ocibuild's own
fixed gzip header. Another isal version, level or block size may change it
(the diff_id would not change). zstd output is not pinned: `zstandard` is
not pinned to one version."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from ocibuild.errors import InputError
from ocibuild.oci.assembly import Add, Request
from ocibuild.oci.bases import builtin_base, builtin_names
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.compression import GZIP_LEVEL, compression
from ocibuild.oci.model import OCI_LAYER, Platform
from ocibuild.transports import assemble_image

STATIC_DIFF_ID = "sha256:895cfa51d64b139d3529d6847b73a6ade3380c199fbdf533fd11e596417e6cd6"
STATIC_TAR_SIZE = 9728
# isal 1.9.1, level 2, fed in 1 MiB blocks (see the module docstring)
STATIC_GZIP_DIGEST = "sha256:5ff48f4ffce96a7828249fbd2425e3056291e7aa1d7d6618256f1ad69a8f9a16"
STATIC_GZIP_SIZE = 590

AMD64 = Platform("linux", "amd64")


def static_layer(store, comp="gzip"):
    image, paths = builtin_base("static", store, compression(comp))
    assert len(image.layers) == 1
    return image, paths, image.layers[0]


def static_members():
    with WorkStore() as store:
        _, _, layer = static_layer(store, "none")
        with layer.open_tar() as f:
            data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        contents = {m.name: tf.extractfile(m).read() for m in members.values() if m.isfile()}
    return contents, members


def test_builtin_names():
    assert builtin_names() == ["scratch", "static"]


def test_static_diff_id_is_golden_for_every_compression():
    with WorkStore() as store:
        for comp in ("gzip", "zstd", "none"):
            _, _, layer = static_layer(store, comp)
            assert layer.diff_id == STATIC_DIFF_ID, comp


def test_static_uncompressed_layer_is_the_golden_tar():
    with WorkStore() as store:
        _, _, layer = static_layer(store, "none")
        with open(store.path(layer.descriptor.digest), "rb") as f:
            data = f.read()
    assert len(data) == STATIC_TAR_SIZE
    assert "sha256:" + hashlib.sha256(data).hexdigest() == STATIC_DIFF_ID
    assert layer.descriptor.digest == STATIC_DIFF_ID
    assert layer.descriptor.media_type == OCI_LAYER


def test_static_gzip_digest_is_golden():
    import isal
    assert isal.__version__ == "1.9.1" and GZIP_LEVEL == 2   # what the golden value assumes
    with WorkStore() as store:
        _, _, layer = static_layer(store, "gzip")
        with open(store.path(layer.descriptor.digest), "rb") as f:
            blob = f.read()
    assert layer.descriptor.digest == STATIC_GZIP_DIGEST
    assert layer.descriptor.size == STATIC_GZIP_SIZE == len(blob)
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == STATIC_GZIP_DIGEST
    assert layer.descriptor.media_type == OCI_LAYER + "+gzip"


def test_static_layer_ignores_source_date_epoch(tmp_path):
    """Only the added layer takes SOURCE_DATE_EPOCH; the base layer stays at mtime 0."""
    f = tmp_path / "cc"
    f.write_bytes(b"x")
    with WorkStore() as work:
        images = [assemble_image(Request(adds=(Add(str(f), "/usr/local/bin/cc"),), platform=AMD64,
                                created=created), work) for created in (0, 1700000000)]
        for image in images:
            base = image.layers[0]
            assert base.diff_id == STATIC_DIFF_ID
            assert base.descriptor.digest == STATIC_GZIP_DIGEST
            assert image.config_doc["rootfs"]["diff_ids"][0] == STATIC_DIFF_ID
            with base.open_tar() as t, tarfile.open(fileobj=t, mode="r|") as tf:
                assert {m.mtime for m in tf} == {0}
    assert images[0].digest != images[1].digest


def test_static_passwd_group_and_nsswitch():
    contents, members = static_members()
    passwd = contents["etc/passwd"].decode().splitlines()
    assert "root:x:0:0:root:/root:/sbin/nologin" in passwd
    assert "chaincode:x:500:500:chaincode:/home/chaincode:/sbin/nologin" in passwd
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" in passwd
    users = {line.split(":")[0]: line.split(":")[2:4] for line in passwd}
    assert users["root"] == ["0", "0"] and users["chaincode"] == ["500", "500"]
    assert users["nonroot"] == ["65532", "65532"]
    group = contents["etc/group"].decode().splitlines()
    gids = {line.split(":")[0]: line.split(":")[2] for line in group}
    assert gids["root"] == "0" and gids["chaincode"] == "500" and gids["nonroot"] == "65532"
    assert "passwd: files" in contents["etc/nsswitch.conf"].decode().splitlines()
    for name in ("etc/passwd", "etc/group", "etc/nsswitch.conf"):
        m = members[name]
        assert (m.type, m.mode, m.uid, m.gid) == (tarfile.REGTYPE, 0o644, 0, 0), name


def test_static_directories_modes_and_owners():
    _, members = static_members()
    expect = {
        "tmp": (0o1777, 0, 0),
        "etc/hyperledger/fabric": (0o775, 500, 500),
        "etc/hyperledger": (0o755, 0, 0),
        "home/chaincode": (0o700, 500, 500),
        "home/nonroot": (0o700, 65532, 65532),
        "root": (0o700, 0, 0),
        "usr/local/bin": (0o755, 0, 0),
    }
    for name, (mode, uid, gid) in expect.items():
        m = members[name]
        assert m.isdir(), name
        assert (m.mode, m.uid, m.gid) == (mode, uid, gid), name


def test_static_layer_is_sorted_with_parents_and_plain_headers():
    _, members = static_members()
    names = list(members)
    assert names == sorted(names, key=lambda n: tuple(n.split("/")))
    seen = set()
    for n in names:
        parent = n.rsplit("/", 1)[0] if "/" in n else None
        assert parent is None or parent in seen, n
        seen.add(n)
    for m in members.values():
        assert (m.mtime, m.uname, m.gname, m.pax_headers) == (0, "", "", {}), m.name


def test_static_paths_match_its_layer():
    _, members = static_members()
    with WorkStore() as store:
        _, paths, _ = static_layer(store)
    assert set(paths) == set(members)


def test_static_config_defaults():
    with WorkStore() as store:
        image, _, _ = static_layer(store)
        run = image.config_doc["config"]
        assert run["User"] == "65532:65532"
        assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in run["Env"]
        assert image.config_doc["rootfs"] == {"type": "layers", "diff_ids": [STATIC_DIFF_ID]}
        # and an image built on it keeps them
        built = assemble_image(Request(adds=(), base="static", platform=AMD64), store)
        assert built.config_doc["config"]["User"] == "65532:65532"
        assert [layer.diff_id for layer in built.layers] == [STATIC_DIFF_ID]


def test_scratch_has_no_layers(tmp_path):
    with WorkStore() as store:
        image, paths = builtin_base("scratch", store, compression("gzip"))
        assert image.layers == () and not paths
        assert image.config_doc["rootfs"]["diff_ids"] == []
        assert image.manifest_doc["layers"] == []
        assert image.config_doc["config"]["User"] == "65532:65532"

        empty = assemble_image(Request(adds=(), base="scratch", platform=AMD64), store)
        assert empty.layers == () and empty.manifest_doc["layers"] == []
        assert empty.config_doc["rootfs"]["diff_ids"] == []

        f = tmp_path / "cc"
        f.write_bytes(b"x")
        one = assemble_image(Request(adds=(Add(str(f), "/usr/local/bin/cc"),), base="scratch",
                            platform=AMD64), store)
        assert len(one.layers) == 1
        with one.layers[0].open_tar() as t, tarfile.open(fileobj=t, mode="r|") as tf:
            names = [m.name for m in tf]
        # nothing below it, so the parents come in the new layer
        assert names == ["usr", "usr/local", "usr/local/bin", "usr/local/bin/cc"]


def test_unknown_base_refused():
    with WorkStore() as store:
        with pytest.raises(InputError, match="nosuchbase"):
            assemble_image(Request(adds=(), base="nosuchbase", platform=AMD64), store)
