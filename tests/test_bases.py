"""Golden values and content of the built-in bases.

The static-bare base layer is built from layers/static-bare.json, and the
static one from layers/static.json (which extends it) plus the Debian data
archives it names (layers/ca-certificates.tar.xz, layers/tzdata.tar.xz),
with every mtime 0 and owner/mode fixed by the definition, so each diff_id
(sha256 of the uncompressed tar) is a constant: a change here means every
chaincode image built on that base changes digest. If a definition or its
data is changed on purpose (scripts/update-bases), update the constants
below in the same commit. static-bare's layer is the one `static` had
before it gained CA certificates and time zones, byte for byte.

More of `static` (its data files, certificates, zones, in an engine):
tests/test_static_base.py.

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

BARE_DIFF_ID = "sha256:895cfa51d64b139d3529d6847b73a6ade3380c199fbdf533fd11e596417e6cd6"
BARE_TAR_SIZE = 9728
# isal 1.9.1, level 2, fed in 1 MiB blocks (see the module docstring)
BARE_GZIP_DIGEST = "sha256:5ff48f4ffce96a7828249fbd2425e3056291e7aa1d7d6618256f1ad69a8f9a16"
BARE_GZIP_SIZE = 590

# static: static-bare + Debian ca-certificates 20230311+deb12u1 + tzdata 2026b-0+deb12u1
STATIC_DIFF_ID = "sha256:73c53ea324e4f10fe510ce3c0000fd5f0b6bcfe71c1030f97ceb592af86260d7"
STATIC_TAR_SIZE = 1236480
STATIC_GZIP_DIGEST = "sha256:8689cf16ed4653f4ec3266f8c4f0e43a7e797c204591e6c35908db1540780b77"
STATIC_GZIP_SIZE = 312659

GOLDEN = {   # base: (diff_id, tar size, gzip digest, gzip size)
    "static-bare": (BARE_DIFF_ID, BARE_TAR_SIZE, BARE_GZIP_DIGEST, BARE_GZIP_SIZE),
    "static": (STATIC_DIFF_ID, STATIC_TAR_SIZE, STATIC_GZIP_DIGEST, STATIC_GZIP_SIZE),
}
BASES = pytest.mark.parametrize("base", sorted(GOLDEN))

AMD64 = Platform("linux", "amd64")


def static_layer(store, comp="gzip", base="static"):
    image, paths = builtin_base(base, store, compression(comp))
    assert len(image.layers) == 1
    return image, paths, image.layers[0]


def static_members(base="static"):
    with WorkStore() as store:
        _, _, layer = static_layer(store, "none", base)
        with layer.open_tar() as f:
            data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        contents = {m.name: tf.extractfile(m).read() for m in members.values() if m.isfile()}
    return contents, members


def test_builtin_names():
    assert builtin_names() == ["scratch", "static", "static-bare"]


@BASES
def test_static_diff_id_is_golden_for_every_compression(base):
    with WorkStore() as store:
        for comp in ("gzip", "zstd", "none"):
            _, _, layer = static_layer(store, comp, base)
            assert layer.diff_id == GOLDEN[base][0], comp


@BASES
def test_static_uncompressed_layer_is_the_golden_tar(base):
    diff_id, tar_size, _, _ = GOLDEN[base]
    with WorkStore() as store:
        _, _, layer = static_layer(store, "none", base)
        with open(store.path(layer.descriptor.digest), "rb") as f:
            data = f.read()
    assert len(data) == tar_size
    assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
    assert layer.descriptor.digest == diff_id
    assert layer.descriptor.media_type == OCI_LAYER


@BASES
def test_static_gzip_digest_is_golden(base):
    import isal
    assert isal.__version__ == "1.9.1" and GZIP_LEVEL == 2   # what the golden value assumes
    _, _, gzip_digest, gzip_size = GOLDEN[base]
    with WorkStore() as store:
        _, _, layer = static_layer(store, "gzip", base)
        with open(store.path(layer.descriptor.digest), "rb") as f:
            blob = f.read()
    assert layer.descriptor.digest == gzip_digest
    assert layer.descriptor.size == gzip_size == len(blob)
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == gzip_digest
    assert layer.descriptor.media_type == OCI_LAYER + "+gzip"


def test_static_bare_is_static_without_the_debian_data():
    """static = static-bare's entries, exactly, plus certificates and zones."""
    _, bare = static_members("static-bare")
    _, full = static_members("static")
    assert set(bare) < set(full)
    for name, m in bare.items():
        f = full[name]
        assert (f.type, f.mode, f.uid, f.gid, f.size, f.linkname) == (m.type, m.mode, m.uid, m.gid, m.size,
                                                                     m.linkname), name
    added = set(full) - set(bare)
    assert all(n.startswith(("etc/ssl", "usr/share")) for n in added), sorted(added)[:5]


@BASES
def test_static_layer_ignores_source_date_epoch(tmp_path, base):
    """Only the added layer takes SOURCE_DATE_EPOCH; the base layer stays at mtime 0."""
    diff_id, _, gzip_digest, _ = GOLDEN[base]
    f = tmp_path / "cc"
    f.write_bytes(b"x")
    with WorkStore() as work:
        images = [assemble_image(Request(adds=(Add(str(f), "/usr/local/bin/cc"),), base=base, platform=AMD64,
                                created=created), work) for created in (0, 1700000000)]
        for image in images:
            layer = image.layers[0]
            assert layer.diff_id == diff_id
            assert layer.descriptor.digest == gzip_digest
            assert image.config_doc["rootfs"]["diff_ids"][0] == diff_id
            with layer.open_tar() as t, tarfile.open(fileobj=t, mode="r|") as tf:
                assert {m.mtime for m in tf} == {0}
    assert images[0].digest != images[1].digest


def test_default_base_is_static():
    with WorkStore() as work:
        image = assemble_image(Request(adds=(), platform=AMD64), work)
        assert [layer.diff_id for layer in image.layers] == [STATIC_DIFF_ID]


@BASES
def test_static_passwd_group_and_nsswitch(base):
    contents, members = static_members(base)
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


@BASES
def test_static_directories_modes_and_owners(base):
    _, members = static_members(base)
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


@BASES
def test_static_layer_is_sorted_with_parents_and_plain_headers(base):
    _, members = static_members(base)
    names = list(members)
    assert names == sorted(names, key=lambda n: tuple(n.split("/")))
    seen = set()
    for n in names:
        parent = n.rsplit("/", 1)[0] if "/" in n else None
        assert parent is None or parent in seen, n
        seen.add(n)
    for m in members.values():
        assert (m.mtime, m.uname, m.gname, m.pax_headers) == (0, "", "", {}), m.name


@BASES
def test_static_paths_match_its_layer(base):
    _, members = static_members(base)
    with WorkStore() as store:
        _, paths, _ = static_layer(store, base=base)
    assert set(paths) == set(members)


@BASES
def test_static_config_defaults(base):
    diff_id = GOLDEN[base][0]
    with WorkStore() as store:
        image, _, _ = static_layer(store, base=base)
        run = image.config_doc["config"]
        assert run["User"] == "65532:65532"
        assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in run["Env"]
        assert image.config_doc["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
        # and an image built on it keeps them
        built = assemble_image(Request(adds=(), base=base, platform=AMD64), store)
        assert built.config_doc["config"]["User"] == "65532:65532"
        assert [layer.diff_id for layer in built.layers] == [diff_id]


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
