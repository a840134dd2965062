"""The names a Fabric peer computes, checked against vectors derived from
its documented behaviour (the hash computed here, independently, on the
literal string the peer hashes) and from Fabric's own unit tests
(core/container/dockercontroller TestGetVMNameForDocker, Test_buildImage;
core/chaincode/persistence TestLabels)."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from fabric_corpus import f, gz, package, tar_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from ocibuild.errors import InputError, PackageError
from ocibuild.fabric.common import Limits, valid_label
from ocibuild.fabric.names import package_id, package_id_of, peer_image_name
from ocibuild.fabric.writer import write_golang


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# (network id, peer id, ccid) -> sanitised lower-case prefix, and the exact string hashed
VECTORS = [
    # Fabric's TestGetVMNameForDocker cases (2.x, ccid as label:hash or name:version)
    (("dev", "peer0", "mycc:1.0"), "dev-peer0-mycc-1.0", "dev-peer0-mycc-1.0"),
    (("", "peer1", "mycc:1.0"), "peer1-mycc-1.0", "peer1-mycc-1.0"),
    (("Dev", "Peer0", "myCC:1.0"), "dev-peer0-mycc-1.0", "Dev-Peer0-myCC-1.0"),
    (("Dev$dev", "Peer*0", "myCC:1.0"), "dev-dev-peer-0-mycc-1.0", "Dev$dev-Peer*0-myCC-1.0"),
    (("dev", "", "mycc:1.0"), "dev-mycc-1.0", "dev-mycc-1.0"),
    (("dev", "peer0", "myCC:1.0"), "dev-peer0-mycc-1.0", "dev-peer0-myCC-1.0"),
    # Derived from the documented algorithm: a 2.x package ID, a test-network peer
    (("dev", "peer0.org1.example.com", "basic_1.0:" + "ab" * 32),
     "dev-peer0.org1.example.com-basic_1.0-" + "ab" * 32,
     "dev-peer0.org1.example.com-basic_1.0-" + "ab" * 32),
    # Characters outside [a-zA-Z0-9-_.] become '-' only after hashing; ':' before.
    (("net", "peer@host", "cc+v2:ff"), "net-peer-host-cc-v2-ff", "net-peer@host-cc+v2-ff"),
    (("", "", "mycc:1.0"), "mycc-1.0", "mycc-1.0"),
]


@pytest.mark.parametrize("ids, prefix, hashed", VECTORS)
def test_image_name_vectors(ids, prefix, hashed):
    assert peer_image_name(*ids) == f"{prefix}-{sha(hashed)}"


def test_image_name_literal_vector_from_fabric():
    # Fabric's Test_buildImage: ccid "simple", no network or peer id.
    assert peer_image_name("", "", "simple") == \
        "simple-a7a39b72f29718e653e73503210fbb597057b7a1c77d1fe321a1afcff041d4e1"


@pytest.mark.parametrize("ids", [
    ("", "peer..0", "cc:1"),             # two separators in a row
    ("-net", "peer0", "cc:1"),           # starts with a separator
    ("dev", "peer0", "basic__1:ab"),     # a valid label the peer still cannot name an image for
    ("dev", "peer0", "cc:1-"),           # separator then '-' of the hash join
])
def test_image_name_refused_like_the_peer(ids):
    with pytest.raises(InputError, match="breaks Docker's repository naming rules"):
        peer_image_name(*ids)


def test_image_name_needs_a_ccid():
    with pytest.raises(InputError, match="chaincode id"):
        peer_image_name("dev", "peer0", "")


@settings(max_examples=200, deadline=None)
@given(net=st.text(max_size=12), peer=st.text(max_size=12), label=st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
       digest=st.binary(min_size=32, max_size=32))
def test_image_name_property(net, peer, label, digest):
    # The same algorithm, written the other way round: join the non-empty
    # parts, ':' to '-', hash; sanitise and lower-case for the name part.
    ccid = f"{label}:{digest.hex()}"
    hashed = "-".join([p for p in (net, peer) if p] + [ccid]).replace(":", "-")
    expected = re.sub(r"[^a-zA-Z0-9_.-]", "-", hashed).lower() + "-" + sha(hashed)
    if re.fullmatch(r"[a-z0-9]+(([._-][a-z0-9]+)+)?", expected):
        assert peer_image_name(net, peer, ccid) == expected
    else:
        with pytest.raises(InputError):
            peer_image_name(net, peer, ccid)


# Fabric's TestLabels vectors
LABELS = {"": False, ".": False, "0": True, ":": False, "_": False, "a": True, "a#": False, "a$": False,
          "a%": False, "a-": True, "a++b": True, "a+b": True, "a+bb": True, "a--b": True, "a-b": True,
          "a-bb": True, "a::b": False, "a:b": False, "a__b": True, "a_b": True, "a_bb": True, "aa": True,
          # ours: ASCII only, whole string (no trailing newline slipping past '$')
          "é": False, "a\n": False, "1.0": True, "a b": False}


@pytest.mark.parametrize("label, ok", sorted(LABELS.items()))
def test_label_rule(label, ok):
    assert valid_label(label) is ok


def test_package_id_is_label_and_sha256_of_the_file(tmp_path):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(meta={"type": "golang", "path": "example.com/cc", "label": "cc_1.0"}))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert package_id(str(path)) == f"cc_1.0:{digest}" == package_id_of("cc_1.0", digest)


def test_package_id_of_a_written_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "go.mod").write_text("module example.com/cc\n")
    (src / "main.go").write_text("package main\nfunc main() {}\n")
    out = tmp_path / "cc.tar.gz"
    returned = write_golang(str(out), str(src), "cc_1.0")
    assert returned == package_id(str(out)) == "cc_1.0:" + hashlib.sha256(out.read_bytes()).hexdigest()


def test_package_id_covers_bytes_after_the_archive(tmp_path):
    # The peer hashes the whole file, padding included.
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    a.write_bytes(package())
    b.write_bytes(package() + bytes(100))
    assert package_id(str(a)) != package_id(str(b))
    assert package_id(str(b)).endswith(hashlib.sha256(b.read_bytes()).hexdigest())


def test_package_id_checks_the_label(tmp_path):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package(meta={"type": "golang", "path": "example.com/cc", "label": "no good"}))
    with pytest.raises(PackageError, match="label 'no good' is invalid"):
        package_id(str(path))


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"not a package", "is not a chaincode package .* a package ID is that of a lifecycle package"),
    (gz(tar_bytes([f("metadata.json", b'{"type":"golang","path":"a/b","label":"x"}')])), "missing code package"),
])
def test_package_id_refuses_non_packages(tmp_path, data, message):
    path = tmp_path / "x"
    path.write_bytes(data)
    with pytest.raises(PackageError, match=message):
        package_id(str(path))


def test_package_id_of_a_directory_is_refused(tmp_path):
    with pytest.raises(PackageError, match="is not a regular file"):
        package_id(str(tmp_path))


def test_package_id_does_not_extract(tmp_path):
    path = tmp_path / "cc.tar.gz"
    path.write_bytes(package())
    before = sorted(os.listdir(tmp_path))
    package_id(str(path), Limits())
    assert sorted(os.listdir(tmp_path)) == before
