"""The deterministic tar writer and the layer blobs made from it, read back
with the standard library (tarfile, gzip) and zstandard."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocibuild.errors import InputError
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.compression import compression
from ocibuild.oci.entries import DIR, FILE, HARDLINK, SYMLINK, Entry, host_entries, with_parents
from ocibuild.oci.model import OCI_LAYER
from ocibuild.oci.tarwriter import _pax_header, header, write_tar

BLOCK = 512
ZERO = b"\0" * BLOCK
GZIP_HEADER = bytes.fromhex("1f8b0800" "00000000" "00" "ff")   # no time, no name, OS 255


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(entries, mtime=0) -> bytes:
    buf = io.BytesIO()
    write_tar(entries, buf, mtime)
    return buf.getvalue()


def sample_entries(tmp_path):
    host = tmp_path / "host.bin"
    host.write_bytes(b"from the host\n" * 100)
    data = b"root:x:0:0:root:/root:/sbin/nologin\n"
    return with_parents([
        Entry("etc/passwd", FILE, 0o644, size=len(data), data=data),
        Entry("etc/hyperledger/fabric", DIR, 0o775, 500, 500),
        Entry("tmp", DIR, 0o1777),
        Entry("usr/local/bin/cc", FILE, 0o755, 500, 501, size=host.stat().st_size, source=str(host)),
        Entry("usr/local/bin/cc2", HARDLINK, 0o755, 500, 501, link="usr/local/bin/cc"),
        Entry("usr/bin/sh", SYMLINK, 0o777, link="/usr/local/bin/cc"),
        Entry("empty", FILE, 0o600, size=0, data=b""),
    ])


def raw_headers(data: bytes):
    """(offset, header block) of every header, walking the archive by hand."""
    out, off = [], 0
    while off < len(data):
        block = data[off:off + BLOCK]
        if block == ZERO:
            break
        out.append((off, block))
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        off += BLOCK + -(-size // BLOCK) * BLOCK
    return out, off


def field(block: bytes, start: int, length: int) -> bytes:
    return block[start:start + length].split(b"\0", 1)[0]


# --- headers -----------------------------------------------------------------

def test_every_header_field(tmp_path):
    entries = sample_entries(tmp_path)
    data = tar_bytes(entries, mtime=1700000000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == [e.path for e in entries]
        for m, e in zip(members, entries, strict=True):
            assert type(m.mtime) is int and m.mtime == 1700000000, m.name
            assert (m.uid, m.gid) == (e.uid, e.gid), m.name
            assert (m.uname, m.gname) == ("", ""), m.name
            assert m.mode == e.mode, m.name
            assert m.pax_headers == {}, m.name
            want_type = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE,
                         SYMLINK: tarfile.SYMTYPE, HARDLINK: tarfile.LNKTYPE}[e.kind]
            assert m.type == want_type, m.name
            assert m.linkname == (e.link if e.kind in (SYMLINK, HARDLINK) else ""), m.name
            assert m.size == (e.size if e.kind == FILE else 0), m.name
            if e.kind == FILE:
                want = e.data if e.data is not None else Path(e.source).read_bytes()
                assert tf.extractfile(m).read() == want
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        modes = {m.name: m.mode for m in tf}
    assert modes["tmp"] == 0o1777 and modes["etc/hyperledger/fabric"] == 0o775


def test_raw_headers_have_integer_mtime_no_names_and_ustar_magic(tmp_path):
    data = tar_bytes(sample_entries(tmp_path), mtime=1234567890)
    headers, _ = raw_headers(data)
    assert headers
    for _, h in headers:
        assert field(h, 136, 12) == b"%011o" % 1234567890        # whole seconds, octal
        assert h[156:157] in (b"0", b"1", b"2", b"5")               # no x/g/L/K extension headers
        assert h[257:265] == b"ustar\x0000"
        assert field(h, 265, 32) == b"" and field(h, 297, 32) == b""  # uname, gname
        # the checksum is right (tarfile would also refuse otherwise)
        chk = int(field(h, 148, 8).strip() or b"0", 8)
        assert chk == sum(h[:148]) + 8 * 32 + sum(h[156:])


def test_directories_end_with_slash(tmp_path):
    data = tar_bytes(sample_entries(tmp_path))
    headers, _ = raw_headers(data)
    for _, h in headers:
        name = field(h, 0, 100).decode()
        if h[156:157] == b"5":
            assert name.endswith("/"), name
        else:
            assert not name.endswith("/"), name
    names = [field(h, 0, 100).decode() for _, h in headers]
    assert "etc/" in names and "tmp/" in names and "etc/passwd" in names


def test_ends_with_exactly_two_zero_blocks_and_no_record_padding(tmp_path):
    entries = sample_entries(tmp_path)
    data = tar_bytes(entries)
    headers, end = raw_headers(data)
    assert len(data) == end + 2 * BLOCK
    assert data[end:] == ZERO * 2
    assert data[end - BLOCK:end] != ZERO          # the last member's last block is not padding
    # no padding to tarfile's 10240-byte record
    small = tar_bytes([Entry("a", FILE, 0o644, size=1, data=b"a")])
    assert len(small) == 4 * BLOCK                # header, data block, two zero blocks
    assert tar_bytes([]) == ZERO * 2


def test_stdlib_tarfile_writes_what_we_avoid(tmp_path):
    """Guard on the test itself: the stdlib default output really differs
    (float mtime → PAX, host names, 10240 padding), so the checks above bite."""
    p = tmp_path / "f"
    p.write_bytes(b"x")
    os.utime(p, (1.5, 1.5))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(p, "f")
    assert len(buf.getvalue()) % 10240 == 0
    assert raw_headers(buf.getvalue())[0][0][1][156:157] == b"x"


# --- PAX only when needed ----------------------------------------------------

def pax_blocks(data: bytes) -> int:
    headers, _ = raw_headers(data)
    return sum(1 for _, h in headers if h[156:157] in (b"x", b"g"))


def test_no_pax_header_for_plain_names(tmp_path):
    name = "a" * 99     # the longest name the 100-byte field holds with its NUL
    data = tar_bytes([Entry(name, FILE, 0o644, size=1, data=b"z")])
    assert pax_blocks(data) == 0
    assert pax_blocks(tar_bytes(sample_entries(tmp_path))) == 0


@pytest.mark.parametrize("name", [
    "d/" + "long-name-" * 15,                    # > 100 bytes
    "données/été.txt",                           # non-ASCII
    "x/" + "é" * 60,                             # non-ASCII and > 100 bytes of UTF-8
])
def test_pax_header_for_long_or_non_ascii_names(name):
    entries = with_parents([Entry(name, FILE, 0o644, 1, 2, size=3, data=b"abc")])
    data = tar_bytes(entries, mtime=42)
    assert pax_blocks(data) >= 1
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = tf.getmember(name)
        assert (m.size, m.uid, m.gid, m.mtime, m.uname, m.gname) == (3, 1, 2, 42, "", "")
        assert tf.extractfile(m).read() == b"abc"
        assert set(m.pax_headers) == {"path"}     # only the name needed one
    assert data == tar_bytes(entries, mtime=42)   # and it is deterministic


def test_pax_header_for_long_link_target():
    target = "/" + "t" * 150
    data = tar_bytes([Entry("l", SYMLINK, 0o777, link=target)])
    assert pax_blocks(data) == 1
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert tf.getmember("l").linkname == target


def test_pax_header_for_an_owner_too_large_for_ustar():
    big = 8 ** 7            # one more than the 7 octal digits of the uid field hold
    data = tar_bytes([Entry("f", FILE, 0o644, big, 5, size=1, data=b"x")])
    assert pax_blocks(data) == 1
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = tf.getmember("f")
        assert (m.uid, m.gid, m.uname, m.gname) == (big, 5, "", "")
        assert set(m.pax_headers) == {"uid"}
    assert pax_blocks(tar_bytes([Entry("f", FILE, 0o644, big - 1, 5, size=1, data=b"x")])) == 0


def test_same_entries_same_bytes(tmp_path):
    entries = sample_entries(tmp_path)
    assert tar_bytes(entries, 5) == tar_bytes(list(entries), 5)
    assert tar_bytes(entries, 5) != tar_bytes(entries, 6)


# --- content read at write time ----------------------------------------------

def test_file_that_grew_since_it_was_scanned_is_refused(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"first line\n")
    (e,) = host_entries(str(p), "/log")
    with open(p, "ab") as f:
        f.write(b"second line\n")
    with pytest.raises(InputError, match="changed size"):
        tar_bytes([e])


def test_file_that_shrank_since_it_was_scanned_is_refused(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"x" * 5000)
    (e,) = host_entries(str(p), "/log")
    p.write_bytes(b"x" * 10)
    with pytest.raises(InputError, match="changed size"):
        tar_bytes([e])


def test_empty_file_that_grew_since_it_was_scanned_is_refused(tmp_path):
    # (was a bug: size-0 entries were never read, so growth went unnoticed)
    p = tmp_path / "log"
    p.write_bytes(b"")
    (e,) = host_entries(str(p), "/log")
    p.write_bytes(b"now it has content\n")
    with pytest.raises(InputError, match="changed size"):
        tar_bytes([e])


# --- layer blobs -------------------------------------------------------------

def blob_bytes(store: WorkStore, layer) -> bytes:
    with open(store.path(layer.descriptor.digest), "rb") as f:
        return f.read()


def test_gzip_blob(tmp_path):
    entries = sample_entries(tmp_path)
    tar = tar_bytes(entries, 99)
    with WorkStore(str(tmp_path)) as store:
        layer = store.write_layer(entries, compression("gzip"), 99)
        blob = blob_bytes(store, layer)
        with layer.open_tar() as f:
            assert f.read() == tar
    assert blob[:10] == GZIP_HEADER
    assert gzip.decompress(blob) == tar
    with gzip.GzipFile(fileobj=io.BytesIO(blob)) as g:
        g.read()
        assert g.mtime == 0 and g.name == ""
    assert layer.diff_id == sha(tar)
    assert layer.descriptor.digest == sha(blob)
    assert layer.descriptor.size == len(blob)
    assert layer.descriptor.media_type == OCI_LAYER + "+gzip"


def test_zstd_blob(tmp_path):
    entries = sample_entries(tmp_path)
    tar = tar_bytes(entries, 99)
    with WorkStore(str(tmp_path)) as store:
        layer = store.write_layer(entries, compression("zstd"), 99)
        blob = blob_bytes(store, layer)
        with layer.open_tar() as f:
            assert f.read() == tar
    assert blob[:4] == bytes.fromhex("28b52ffd")
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as r:
        assert r.read() == tar
    assert layer.diff_id == sha(tar)
    assert layer.descriptor.digest == sha(blob)
    assert layer.descriptor.size == len(blob)
    assert layer.descriptor.media_type == OCI_LAYER + "+zstd"


def test_uncompressed_blob_is_the_tar(tmp_path):
    entries = sample_entries(tmp_path)
    tar = tar_bytes(entries, 99)
    with WorkStore(str(tmp_path)) as store:
        layer = store.write_layer(entries, compression("none"), 99)
        assert blob_bytes(store, layer) == tar
    assert layer.diff_id == layer.descriptor.digest == sha(tar)
    assert layer.descriptor.size == len(tar)
    assert layer.descriptor.media_type == OCI_LAYER


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_large_content_round_trips_and_is_deterministic(tmp_path, comp):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 20) * 3 + b"tail")   # several 1 MiB chunks, odd size
    entries = with_parents(host_entries(str(big), "/data/big"))
    with WorkStore(str(tmp_path)) as store:
        one = store.write_layer(entries, compression(comp), 7)
        two = store.write_layer(entries, compression(comp), 7)
        assert one.descriptor == two.descriptor and one.diff_id == two.diff_id
        with one.open_tar() as f:
            tar = f.read()
    assert sha(tar) == one.diff_id
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert tf.extractfile("data/big").read() == big.read_bytes()


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_compressed_bytes_depend_on_the_tar_bytes_only(comp):
    """However the tar stream is cut into write() calls, the blob is the same
    (deflate and zstd streaming output otherwise depends on the call sizes)."""
    rng = random.Random(4)
    tar = b"".join(rng.randbytes(rng.randrange(1, 5000)) + b"\0" * rng.randrange(0, 3000)
                   for _ in range(900))                  # ~3.5 MB, several 1 MiB blocks
    outs = set()
    for splits in ("whole", "tiny", "random", "aligned"):
        buf = io.BytesIO()
        w = compression(comp).writer(buf)
        if splits == "whole":
            w.write(tar)
        elif splits == "tiny":
            for i in range(0, len(tar), 511):
                w.write(tar[i:i + 511])
        elif splits == "random":
            i = 0
            while i < len(tar):
                n = rng.choice([1, 7, 512, 4096, 65536, 1 << 20, 3 << 20])
                w.write(tar[i:i + n])
                i += n
        else:
            for i in range(0, len(tar), 1 << 20):
                w.write(tar[i:i + (1 << 20)])
        w.close()
        outs.add(buf.getvalue())
    assert len(outs) == 1
    blob = outs.pop()
    if comp == "gzip":
        assert blob[:10] == GZIP_HEADER and gzip.decompress(blob) == tar
    else:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as r:
            assert r.read() == tar


def test_failed_layer_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"12345")
    entries = host_entries(str(p), "/f")
    p.write_bytes(b"1")
    with WorkStore(str(tmp_path)) as store:
        with pytest.raises(InputError):
            store.write_layer(entries, compression("gzip"), 0)
        assert os.listdir(store.root) == []


# --- hand-packed headers are tarfile's, byte for byte --------------------------

_NAME_PART = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, blacklist_characters="/"), min_size=1,
            max_size=40),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=8),
    st.sampled_from(["a" * 99, "b" * 100, "c" * 101, "é", "\udcff", "x y", "-", "."]),
)
_NUMBER = st.one_of(st.integers(0, 70000), st.sampled_from([0, 8 ** 7 - 1, 8 ** 7, 8 ** 7 + 1, 2 ** 32]))


@st.composite
def _entries(draw):
    kind = draw(st.sampled_from([FILE, DIR, SYMLINK, HARDLINK]))
    path = "/".join(draw(st.lists(_NAME_PART, min_size=1, max_size=4)))
    link = "/".join(draw(st.lists(_NAME_PART, min_size=1, max_size=4))) if kind in (SYMLINK, HARDLINK) else ""
    size = draw(st.one_of(st.integers(0, 1 << 40), st.sampled_from([8 ** 11 - 1, 8 ** 11, 8 ** 12])))
    mode = draw(st.one_of(st.integers(0, 0o7777), st.sampled_from([0o107777, 0o40755, 0o120777])))
    return Entry(path, kind, mode, draw(_NUMBER), draw(_NUMBER), size if kind == FILE else 0, link)


@settings(max_examples=600, deadline=None)
@given(e=_entries(), mtime=st.one_of(st.integers(0, 4_000_000_000),
                                     st.sampled_from([8 ** 11 - 1, 8 ** 11, 8 ** 12])))
def test_packed_header_is_tarfiles(e, mtime):
    assert header(e, mtime) == _pax_header(e, mtime)


@pytest.mark.parametrize("e", [
    Entry("a" * 100, FILE, 0o644, size=1),                 # exactly the name field: no PAX
    Entry("a" * 99, DIR, 0o755),                           # 99 + "/" fits
    Entry("a" * 100, DIR, 0o755),                          # 100 + "/" does not
    Entry("d/", DIR, 0o755),                               # already ends with '/'
    Entry("l", SYMLINK, 0o777, link="t" * 100),
    Entry("l", SYMLINK, 0o777, link="t" * 101),
    Entry("h", HARDLINK, 0o644, link="é"),
    Entry("f", FILE, 0o644, 8 ** 7 - 1, 8 ** 7 - 1, size=8 ** 11 - 1),
    Entry("f", FILE, 0o644, 0, 8 ** 7, size=0),
    Entry("f", FILE, 0o644, size=8 ** 11),
    Entry("f", FILE, 0o104755, size=3),                    # type bits beyond 0o7777 are dropped
])
@pytest.mark.parametrize("mtime", [0, 1700000000, 8 ** 11 - 1, 8 ** 11, 1700000000.9])
def test_packed_header_edges(e, mtime):
    assert header(e, mtime) == _pax_header(e, int(mtime))
    assert len(header(e, mtime)) % BLOCK == 0


# --- content read at write time: large files, short reads -----------------------

@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_large_file_that_changed_size_is_refused(tmp_path, change):
    p = tmp_path / "big"
    p.write_bytes(b"x" * (3 << 20))              # larger than one chunk: streamed, not read whole
    (e,) = host_entries(str(p), "/big")
    if change == "grow":
        with open(p, "ab") as f:
            f.write(b"more")
    else:
        os.truncate(p, (2 << 20) + 5)
    with pytest.raises(InputError, match="changed size"):
        tar_bytes([e])


def test_short_reads_give_the_same_bytes(tmp_path, monkeypatch):
    """A file system that returns less than asked (FUSE, NFS) still gives
    the file's exact content, and a file of the scanned size passes."""
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(os.urandom(5000))
    big.write_bytes(os.urandom((1 << 20) + 4321))
    entries = with_parents(host_entries(str(small), "/s") + host_entries(str(big), "/b"))
    want = tar_bytes(entries)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 777)))
    assert tar_bytes(entries) == want


def test_unreadable_source_at_write_time_is_an_input_error(tmp_path):
    p = tmp_path / "gone"
    p.write_bytes(b"abc")
    (e,) = host_entries(str(p), "/gone")
    p.unlink()
    with pytest.raises(InputError, match="cannot read .*gone"):
        tar_bytes([e])
    d = tmp_path / "now-a-dir"
    d.write_bytes(b"abc")
    (e,) = host_entries(str(d), "/d")
    d.unlink()
    d.mkdir()
    with pytest.raises(InputError, match="cannot read .*now-a-dir"):
        tar_bytes([e])
