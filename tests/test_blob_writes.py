"""How outputs get the blobs this run made: an `oci:` layout on the work
store's file system hard-links them (the layer is written once), any other
copies them in the kernel or, failing that, through user space; a foreign
blob is verified as it is copied. Whatever the path, the bytes are the
same."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import tarfile

import pytest

from ocibuild.errors import BlobError
from ocibuild.fsutil import umask
from ocibuild.oci.assembly import Add, Request
from ocibuild.oci.blobs import Blob, WorkStore
from ocibuild.oci.compression import compression
from ocibuild.oci.layout import blob_name, put_blob
from ocibuild.oci.model import OCI_LAYER, Descriptor, Platform
from ocibuild.outputs import write_all
from ocibuild.transports import assemble_image, open_output

AMD64 = Platform("linux", "amd64")


def _file_sha(path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _image(tmp_path, work, comp="none"):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(3 << 20) + b"tail")
    return assemble_image(Request(adds=(Add(str(src), "/data.bin"),), platform=AMD64,
                                  compression=compression(comp)), work)


def test_layout_on_the_same_file_system_links_the_layer(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        image = _image(tmp_path, work)
        layer = image.layers[-1]
        assert layer.local == work.path(layer.descriptor.digest)
        write_all([open_output(f"oci:{tmp_path}/layout:v1", 0)], image, work)
        blob = tmp_path / "layout" / blob_name(layer.descriptor.digest)
        assert os.stat(blob).st_ino == os.stat(layer.local).st_ino      # one inode: written once
    st = os.stat(blob)
    assert st.st_nlink == 1                      # the work store's name is gone with it
    assert st.st_mode & 0o777 == 0o644 & ~umask()
    assert _file_sha(blob) == layer.descriptor.digest


@pytest.mark.parametrize("broken", ["link", "link+copy_file_range"])
def test_layout_elsewhere_gets_a_copy_with_the_same_bytes(tmp_path, monkeypatch, broken):
    def no_link(src, dst, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def no_cfr(*a, **kw):
        raise OSError(errno.ENOSYS, "Function not implemented")

    with WorkStore(str(tmp_path)) as work:
        image = _image(tmp_path, work)
        layer = image.layers[-1]
        monkeypatch.setattr(os, "link", no_link)
        if "copy_file_range" in broken:
            monkeypatch.setattr(os, "copy_file_range", no_cfr)
        write_all([open_output(f"oci:{tmp_path}/layout", 0)], image, work)
        blob = tmp_path / "layout" / blob_name(layer.descriptor.digest)
        assert os.stat(blob).st_ino != os.stat(layer.local).st_ino
        assert _file_sha(blob) == layer.descriptor.digest
    assert os.stat(blob).st_mode & 0o777 == 0o644 & ~umask()


@pytest.mark.parametrize("comp", ["gzip", "none"])
def test_layout_and_archive_hold_the_same_blobs(tmp_path, comp):
    with WorkStore(str(tmp_path)) as work:
        image = _image(tmp_path, work, comp)
        write_all([open_output(f"oci:{tmp_path}/a", 0), open_output(f"oci:{tmp_path}/b", 0),
                   open_output(f"oci-archive:{tmp_path}/c.tar", 0)], image, work)
    with tarfile.open(tmp_path / "c.tar") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf if m.isfile() and m.name.startswith("blobs/")}
    assert members
    for name, data in members.items():
        for layout in ("a", "b"):
            assert (tmp_path / layout / name).read_bytes() == data, (layout, name)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == "sha256:" + name.rsplit("/", 1)[1]


def test_an_untrusted_blob_is_verified_not_linked(tmp_path):
    src = tmp_path / "foreign"
    src.write_bytes(b"not what the descriptor says")
    desc = Descriptor(OCI_LAYER, "sha256:" + "0" * 64, src.stat().st_size)
    blob = Blob(desc, functools.partial(open, src, "rb"), "layer of a stranger", local=str(src))
    root = tmp_path / "layout"
    with pytest.raises(BlobError, match="layer of a stranger is corrupt"):
        put_blob(str(root), blob)
    assert not (root / blob_name(desc.digest)).exists()
    assert os.listdir(root / "blobs" / "sha256") == []
