"""Bytes pinned across rewrites of the tar writer, the tree walk and the blob
copies: a varied host tree (long and non-ASCII names, names that sort
differently by component than as strings, symlinks short, long and
dangling, hard links, empty, odd-sized and multi-chunk files, executables,
an undecodable name) gives exactly the digests the tarfile-based writer
gave before the hand-packed headers (computed with commit 6575c3e).

If one of these changes, every image ocibuild makes from such a tree
changes digest: that is a format change, not a refactoring."""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import pytest

from ocibuild.oci.blobs import WorkStore, bytes_blob
from ocibuild.oci.compression import compression
from ocibuild.oci.entries import DIR, FILE, HARDLINK, SYMLINK, Entry, host_entries, with_parents
from ocibuild.oci.layout import LayoutFile, write_archive
from ocibuild.oci.tarwriter import write_tar

MTIME = 1700000000


def make_tree(root: Path) -> None:
    rng = random.Random(20240613)
    sizes = [0, 1, 511, 512, 513, 4096, 100_000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7]
    for i, size in enumerate(sizes):
        p = root / "sizes" / f"f{i:02d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(size))
        os.chmod(p, 0o750 if i % 3 == 0 else 0o640)     # normalised to 0755 / 0644
    names = ["a", "a-b", "a.b", "a b", "A", "été", "日本語", "!bang", ".hidden", "z" * 99, "y" * 100,
             "x" * 101, "w" * 150]
    for n in names:
        d = root / "names" / n
        d.mkdir(parents=True)
        (d / "inside").write_bytes(n.encode() * 3)
        (root / "names" / f"{n}.file").write_bytes(b"file " + n.encode())
    deep = root / "deep"
    for i in range(12):
        deep = deep / f"level-{i:02d}-{'d' * 10}"
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_bytes(b"deep leaf\n")
    (deep / ("é" * 40)).write_bytes(b"deep unicode leaf\n")
    links = root / "links"
    links.mkdir()
    os.symlink("../sizes/f01", links / "relative")
    os.symlink("/usr/local/bin/chaincode", links / "absolute")
    os.symlink("t" * 150, links / "long-target")
    os.symlink("cible-été", links / "unicode-target")
    os.symlink("nowhere/at/all", links / "dangling")
    os.symlink("../names", links / "to-dir")
    hard = root / "hard"
    hard.mkdir()
    (hard / "m-original").write_bytes(b"shared inode\n" * 50)
    os.link(hard / "m-original", hard / "b-second")          # sorts first: it keeps the content
    os.link(hard / "m-original", root / "names" / "a" / "third")
    (root / "empty-dir").mkdir()
    raw = os.fsencode(str(root / "names")) + b"/undecodable-\xff\xfe"
    with open(raw, "wb") as f:
        f.write(b"bytes name\n")


def tree_entries(tmp_path: Path, uid: int = 0, gid: int = 0) -> list[Entry]:
    src = tmp_path / "tree"
    make_tree(src)
    return with_parents(host_entries(str(src), "/srv/app", uid, gid))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_digest(entries: list[Entry], mtime: int) -> str:
    buf = io.BytesIO()
    write_tar(entries, buf, mtime)
    return sha(buf.getvalue())


# Computed with the tarfile-based writer (commit 6575c3e).
PINNED_TAR = {
    (0, 0, 0):
        "sha256:d5bb1a1f75ec87386bde5f47a0ddd712c51798f420e1133c3b27eb3be7b4579d",
    (0, 0, MTIME):
        "sha256:069e8134424bcc34ed51f5b97eeef6a4164b3e72b9ea560d9cb5a6533735d5d4",
    (1000, 1000, MTIME):
        "sha256:3d909ce135edb1abb895291716dea661c9ea126330cd2541363d9fbbc8be8913",
    (0, 0, 8 ** 11):                                # an mtime only PAX holds
        "sha256:c3a1adf5e36a6c4c9464e7ddc7a231f509ff5ad3281ed3249c60a3551f2fe81d",
    (8 ** 7, 5, MTIME):                             # a uid only PAX holds
        "sha256:d8f3a90d65a39053020f4d98a20e19c3eb3a45081fe21f9487cfa6e8588edc73",
}
PINNED_LAYERS = {
    "gzip": ("sha256:929063a5b69cde24291dfe0a938220b9fdbb1d2d77bd6a524f65a17e5cfd67c3", 6404153),
    "zstd": ("sha256:c330491142975e25647415486e473de6d32996adf93e23d1bc926eb6755b71b4", 6402915),
    "none": ("sha256:069e8134424bcc34ed51f5b97eeef6a4164b3e72b9ea560d9cb5a6533735d5d4", 6490112),
}
PINNED_ARCHIVE = "sha256:7063a53a329d53b00cef087947bcd1cc0923be67369acfcb06d9173430b8c13e"


def test_the_tree_is_what_it_claims(tmp_path):
    entries = tree_entries(tmp_path)
    kinds = {e.kind for e in entries}
    assert kinds == {DIR, FILE, SYMLINK, HARDLINK}
    assert any(len(e.path) > 100 for e in entries)
    assert any(not e.path.isascii() for e in entries)
    assert any(len(e.link) > 100 for e in entries if e.kind == SYMLINK)
    assert [e.path for e in entries if e.kind == HARDLINK] == ["srv/app/hard/m-original",
                                                               "srv/app/names/a/third"]
    assert len(entries) > 80


@pytest.mark.parametrize("uid, gid, mtime", list(PINNED_TAR))
def test_tar_bytes_are_pinned(tmp_path, uid, gid, mtime):
    assert tar_digest(tree_entries(tmp_path, uid, gid), mtime) == PINNED_TAR[(uid, gid, mtime)]


@pytest.mark.parametrize("comp", list(PINNED_LAYERS))
def test_layer_blobs_are_pinned(tmp_path, comp):
    entries = tree_entries(tmp_path)
    with WorkStore(str(tmp_path)) as store:
        layer = store.write_layer(entries, compression(comp), MTIME)
    assert (layer.descriptor.digest, layer.descriptor.size) == PINNED_LAYERS[comp]
    assert layer.diff_id == PINNED_TAR[(0, 0, MTIME)]


def test_archive_bytes_are_pinned(tmp_path):
    entries = tree_entries(tmp_path)
    with WorkStore(str(tmp_path)) as store:
        layer = store.write_layer(entries, compression("none"), MTIME)
        doc = bytes_blob("application/json", b'{"pinned":true}')
        files = [LayoutFile("oci-layout", 30, lambda: io.BytesIO(b'{"imageLayoutVersion":"1.0.0"}')),
                 LayoutFile("blobs/sha256/" + layer.descriptor.digest[7:], layer.descriptor.size, layer.open),
                 LayoutFile("blobs/sha256/" + doc.descriptor.digest[7:], doc.descriptor.size, doc.open)]
        out = io.BytesIO()
        write_archive(out, files, MTIME)            # the copy through user space
        with open(tmp_path / "archive.tar", "wb") as f:
            write_archive(f, files, MTIME)          # the in-kernel copy between files
    assert sha(out.getvalue()) == PINNED_ARCHIVE
    assert sha((tmp_path / "archive.tar").read_bytes()) == PINNED_ARCHIVE
