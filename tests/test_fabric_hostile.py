"""Hostile and broken chaincode packages, built here, each refused case by
case with a one-line message naming the entry and the rule, nothing written
outside the work directory (and the work directory left empty); bombs
refused quickly and without filling the disk; a fuzz test in which only
ocibuild's own errors may escape the package reader."""

from __future__ import annotations

import os
import random
import tarfile
import time

import pytest
from fabric_corpus import (
    GO_MOD,
    MAIN_GO,
    cds,
    code_tar,
    d,
    f,
    gz,
    hard,
    meta_bytes,
    package,
    signed_cds,
    special,
    sym,
    tar_bytes,
    zeros_gzip,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocibuild.errors import OcibuildError, PackageError
from ocibuild.fabric.common import Limits
from ocibuild.fabric.names import package_id
from ocibuild.fabric.package import go_source, open_package

GIB, MIB = 1 << 30, 1 << 20
ROOT = pytest.mark.root          # the work dir is a small tmpfs (mount)


def snapshot(root) -> dict:
    """Names, types, sizes, contents and link targets of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[p] = ("dir", st_.st_mode)
            else:
                with open(p, "rb") as fh:
                    out[p] = ("file", st_.st_mode, fh.read())
    return out


@pytest.fixture
def refuse(tmp_path):
    """refuse(data, *expected, limits=Limits()) -> PackageError: open `data`
    as a package, expect a refusal whose one-line message holds every
    `expected` string, and check nothing outside the work dir changed and
    the work dir was left empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    work = tmp_path / "work"
    work.mkdir()

    def run(data: bytes, *expected: str, limits: Limits = Limits(), name: str = "pkg.tar.gz"):
        src = tmp_path / "in"
        src.mkdir(exist_ok=True)
        path = src / name
        path.write_bytes(data)
        before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(work))}
        with pytest.raises(PackageError) as info:
            open_package(str(path), str(work), limits)
        message = str(info.value)
        for text in expected:
            assert text in message, f"{text!r} not in {message!r}"
        assert "\n" not in message and "\r" not in message, message
        assert info.value.rule and f"({info.value.rule}" in message, f"the rule is not named: {message!r}"
        after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(work))}
        assert after == before, "something outside the work dir changed"
        assert os.listdir(work) == [], "the refused package was not cleaned from the work dir"
        return info.value
    return run


def code(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    """A package whose code.tar.gz holds the good module plus `members`."""
    return package(code=code_tar([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO), *members], fmt))


# -- names and paths ------------------------------------------------------------

def test_path_traversal_in_code(refuse):
    e = refuse(code(f("../evil")), "code.tar.gz entry '../evil' escapes the package (path traversal)")
    assert e.entry == "../evil" and e.rule == "path traversal"


def test_deep_path_traversal(refuse):
    refuse(code(f("src/a/../../../../evil")), "'src/a/../../../../evil' escapes the package (path traversal)")


def test_path_traversal_in_package(refuse):
    refuse(package(outer_first=[f("../evil")]), "package entry '../evil' escapes the package (path traversal)")


def test_absolute_path(refuse):
    refuse(code(f("/tmp/evil")), "code.tar.gz entry '/tmp/evil' is an absolute path (absolute path)")


def test_symlink_escape(refuse):
    refuse(code(sym("src/link", "../../outside/keep")),
           "entry 'src/link' is a symlink to '../../outside/keep', which resolves outside the package",
           "(symlink escape)")


def test_absolute_symlink(refuse):
    refuse(code(sym("src/passwd", "/etc/passwd")),
           "entry 'src/passwd' is a symlink to '/etc/passwd', outside the package (absolute symlink target)")


def test_symlink_escape_through_another_symlink(refuse):
    # Each link alone looks harmless when read lexically; followed as the
    # kernel follows them, src/a/b/e climbs out of the tree.
    refuse(code(d("src/x"), sym("src/a/b/d", "../../x"), sym("src/a/b/e", "d/../../../..")),
           "entry 'src/a/b/e'", "(symlink escape)")


def test_write_through_symlink(refuse, tmp_path):
    # A link to the outside, then a file "under" it: a naive extractor would
    # write tmp_path/outside/pwned.
    refuse(code(sym("src/out", "../../../../outside"), f("src/out/pwned", b"gotcha")),
           "entry 'src/out/pwned' lies under the symlink 'src/out' (writing through a symlink)")
    assert not (tmp_path / "outside" / "pwned").exists()


def test_write_through_inside_symlink(refuse):
    refuse(code(sym("src/here", "."), f("src/here/x.go")), "(writing through a symlink)")


def test_symlink_loop(refuse):
    refuse(code(sym("src/a", "b"), sym("src/b", "a")), "is part of a symlink loop", "(too many levels of symlinks)")


def test_hardlink_escape(refuse):
    refuse(code(hard("src/h", "../../outside/keep")),
           "entry 'src/h' is a hard link to '../../outside/keep', outside the package (hard link escape)")


def test_absolute_hardlink(refuse):
    refuse(code(hard("src/h", "/etc/passwd")), "(hard link escape)")


def test_hardlink_to_later_entry(refuse):
    refuse(code(hard("src/h", "src/later.go"), f("src/later.go")),
           "is a hard link to 'src/later.go', which is not a regular file extracted before it (hard link target)")


def test_hardlink_to_symlink(refuse):
    refuse(code(sym("src/s", "main.go"), hard("src/h", "src/s")), "(hard link target)")


@pytest.mark.parametrize("kind, word", [(tarfile.CHRTYPE, "character device"),
                                        (tarfile.BLKTYPE, "block device"),
                                        (tarfile.FIFOTYPE, "fifo")])
def test_device_and_fifo(refuse, kind, word):
    refuse(code(special("src/dev", kind)),
           f"code.tar.gz entry 'src/dev' is a {word} (device and fifo entries are not allowed)")


def test_sparse_file(refuse):
    info, _ = f("src/sparse.go")
    info.type = tarfile.GNUTYPE_SPARSE
    refuse(code((info, None), fmt=tarfile.GNU_FORMAT), "'src/sparse.go' is a GNU sparse file",
           "(unsupported entry type)")


def test_duplicate_entry(refuse):
    refuse(code(f("src/main.go", b"package evil")), "entry 'src/main.go' appears more than once (duplicate entry)")


def test_duplicate_after_normalising(refuse):
    refuse(code(f("./src//main.go")), "appears more than once (duplicate entry)")


def test_file_where_a_directory_was_implied(refuse):
    refuse(code(f("src/pkg/a.go"), f("src/pkg")), "entry 'src/pkg' is a file where earlier entries put a directory "
           "(path conflict)")


def test_file_under_file(refuse):
    refuse(code(f("src/main.go/x")), "lies under 'src/main.go', which is a file (path conflict)")


def test_over_long_name(refuse):
    name = "src/" + "/".join(["d" * 200] * 25)          # 5000+ bytes, each component fine
    refuse(code(f(name)), "bytes, longer than 4096 (over-long name)")


def test_over_long_component(refuse):
    refuse(code(f("src/" + "c" * 300 + ".go")), "a name component of 303 bytes, longer than 255 (over-long name)")


def test_over_deep_name(refuse):
    refuse(code(f("src/" + "d/" * 300 + "x.go")), "entry 'src/d/d/", "has 302 path components, more than 256 "
           "(over-deep name)")


def test_implied_directories_count_towards_the_entry_limit(refuse):
    # 10 entries, each 40 new directories deep: 400 directories from 10 headers.
    members = [f(f"src/{i}/" + "d/" * 40 + "x.go") for i in range(10)]
    refuse(code(*members), "would make more than 100 files and directories (entry limit)",
           limits=Limits(max_entries=100))


def test_adversarial_deep_paths_stay_cheap(tmp_path):
    # Entries alternating between two 250-deep branches: each costs only the
    # directories that differ, so this stays well under a few seconds.
    deep_a, deep_b = "src/a/" + "x/" * 250, "src/b/" + "y/" * 250
    members = [f(f"{deep_a if i % 2 else deep_b}f{i}.go") for i in range(2000)]
    path = tmp_path / "deep.tar.gz"
    path.write_bytes(code(*members))
    (tmp_path / "w").mkdir()
    start = time.monotonic()
    open_package(str(path), str(tmp_path / "w"), Limits(max_depth=260))
    assert time.monotonic() - start < 10


def test_many_symlink_chains_are_bounded(refuse):
    # Symlinks that each resolve through a long chain of others: the total
    # work of checking them is capped, and refused past the cap.
    chain = [sym(f"src/l{i}", f"l{i - 1}/" + "./" * 100) for i in range(1, 31)]
    many = [sym(f"src/m{j}", "l30/" + "./" * 100) for j in range(400)]
    refuse(code(d("src/l0"), *chain, *many), "(symlink limit)")


def test_non_utf8_name(refuse):
    refuse(code(f("src/\udcff\udcfe.go"), fmt=tarfile.GNU_FORMAT),
           "code.tar.gz entry 'src/\\xff\\xfe.go' has a name that is not valid UTF-8 (non-UTF-8 name)")


def test_control_character_in_name(refuse):
    e = refuse(code(f("src/a\nb.go")), "entry 'src/a\\x0ab.go' has a control character in its name")
    assert e.rule == "control character in name"


def test_long_escaped_name_is_one_short_line(refuse):
    e = refuse(code(f("../" + "\x1b[31m" * 500)), "(control character in name)")
    assert len(str(e)) < 400


# -- the package around the code --------------------------------------------------

def test_duplicate_metadata(refuse):
    refuse(package(outer_extra=[f("metadata.json", meta_bytes())]),
           "package entry 'metadata.json' appears more than once (duplicate entry)")


def test_duplicate_code_package(refuse):
    refuse(package(outer_extra=[f("code.tar.gz", code_tar([f("src/evil.go")]))]),
           "package entry 'code.tar.gz' appears more than once (duplicate entry)")


def test_missing_metadata(refuse):
    data = gz(tar_bytes([f("code.tar.gz", code_tar([f("src/main.go", MAIN_GO)]))]))
    refuse(data, "has no metadata.json, so it is not a chaincode package", "(missing metadata)")


def test_missing_code_package(refuse):
    refuse(gz(tar_bytes([f("metadata.json", meta_bytes())])), "package has no code.tar.gz (missing code package)")


def test_metadata_not_exactly_named(refuse):
    data = gz(tar_bytes([f("./metadata.json", meta_bytes()), f("code.tar.gz", code_tar([f("src/a.go")]))]))
    refuse(data, "package entry './metadata.json' must be named exactly 'metadata.json'", "(entry name)")


def test_metadata_symlink(refuse):
    data = gz(tar_bytes([sym("metadata.json", "/etc/passwd"), f("code.tar.gz", code_tar([f("src/a.go")]))]))
    refuse(data, "package entry 'metadata.json' is a symlink; a lifecycle package holds only regular files")


def test_directory_in_package(refuse):
    refuse(package(outer_first=[d("src")]), "package entry 'src/' is a directory", "(not a regular file)")


@pytest.mark.parametrize("meta, expected", [
    (b"{not json", "metadata.json is not valid JSON"),
    (b"\xff\xfe{}", "metadata.json is not UTF-8 text"),
    (b"[1, 2]", "metadata.json is a JSON list, not an object"),
    (b"null", "metadata.json is a JSON null, not an object"),
    (b"[" * 100_000 + b"]" * 100_000, "metadata.json is not valid JSON"),
    ({"path": "example.com/cc", "label": "cc"}, "metadata.json has no type"),
    ({"type": 7, "path": "example.com/cc", "label": "cc"}, "field 'type' must be a string"),
    ({"type": "cobol", "path": "x", "label": "cc"},
     "metadata.json type 'cobol' is not a chaincode type Fabric knows"),
    ({"type": "golang", "path": "example.com/cc", "label": "bad label"},
     "metadata.json label 'bad label' is invalid"),
    ({"type": "golang", "path": "example.com/cc", "label": "_cc"}, "(Fabric's label rule"),
    ({"type": "golang", "path": "example.com/cc", "label": ""}, "label '' is invalid"),
    ({"type": "golang", "path": "example.com/cc"}, "label '' is invalid"),
    ({"type": "golang", "label": "cc"}, "metadata.json path is empty"),
    ({"type": "golang", "path": "../../etc", "label": "cc"}, "path '../../etc' is not a Go import path"),
    ({"type": "golang", "path": "/abs/cc", "label": "cc"}, "(bad import path)"),
])
def test_bad_metadata(refuse, meta, expected):
    e = refuse(package(meta=meta), expected)
    assert e.entry == "metadata.json"


def test_unknown_type_names_the_rule(refuse):
    e = refuse(package(meta={"type": "cobol", "label": "cc"}), "(unknown type)")
    assert e.rule == "unknown type"


def test_corrupt_code_package(refuse):
    good = code_tar([f("src/main.go", MAIN_GO * 50)])
    bad = good[:20] + bytes(b ^ 0x55 for b in good[20:40]) + good[40:]
    refuse(package(code=bad), "code.tar.gz is corrupt")


def test_code_package_checksum_mismatch(refuse):
    good = code_tar([f("src/main.go", MAIN_GO)])
    bad = good[:-8] + bytes([good[-8] ^ 1]) + good[-7:]            # the CRC32 of the gzip trailer
    refuse(package(code=bad), "code.tar.gz is corrupt: incorrect data check (corrupt gzip data)")


def test_truncated_code_package(refuse):
    good = code_tar([f("src/main.go", os.urandom(4000))])
    refuse(package(code=good[: len(good) // 2]), "code.tar.gz is truncated: its gzip stream ends early (truncated)")


def test_code_package_not_gzip(refuse):
    refuse(package(code=b"just some text, not gzip"), "code.tar.gz is not gzip-compressed (not gzip)")


def test_code_package_not_tar(refuse):
    refuse(package(code=gz(b"hello world\n" * 100)), "code.tar.gz is not a tar archive (bad header checksum)")


def test_empty_code_package(refuse):
    refuse(package(code=b""), "code.tar.gz is empty (empty)")


def test_trailing_garbage_after_gzip(refuse):
    refuse(package(code=code_tar([f("src/main.go", MAIN_GO)]) + b"garbage"),
           "code.tar.gz has data after the end of its gzip stream (trailing data)")


def test_package_not_a_tar(refuse):
    refuse(gz(b"this is not a tar archive. " * 40), "is not a chaincode package: it is gzip-compressed, but not a tar "
           "archive", "(bad header checksum)")


def test_package_tiny_gzip(refuse):
    refuse(gz(b"hello"), "is not a chaincode package: it is gzip-compressed, but not a tar archive", "(truncated)")


def test_not_a_package_at_all(refuse):
    refuse(b"#!/bin/sh\necho this is not a chaincode package\n" * 10,
           "is not a chaincode package (it is a text file): expected a lifecycle package", "(not a package)")


def test_random_bytes(refuse):
    refuse(random.Random(7).randbytes(10_000), "is not a chaincode package")


def test_empty_file(refuse):
    refuse(b"", "is empty; expected a chaincode package")


def test_uncompressed_tar(refuse):
    refuse(tar_bytes([f("metadata.json", meta_bytes()), f("code.tar.gz", code_tar([f("src/a.go")]))]),
           "is an uncompressed tar; a lifecycle package is gzip-compressed")


def test_truncated_package(refuse):
    data = package(code=code_tar([f("src/main.go", os.urandom(20_000))]))
    refuse(data[: len(data) - 100], "package is truncated")


def test_bad_couchdb_index(refuse):
    refuse(code(f("META-INF/statedb/couchdb/indexes/bad.json", b"{nope")),
           "entry 'META-INF/statedb/couchdb/indexes/bad.json' is not a JSON object", "(bad index)")


def test_ccaas_without_connection(refuse):
    refuse(package(meta={"type": "ccaas", "label": "cc"}, code=code_tar([f("other.txt")])),
           "ccaas package has no connection.json in code.tar.gz (missing connection.json)")


def test_ccaas_connection_symlink(refuse):
    refuse(package(meta={"type": "ccaas", "label": "cc"},
                   code=code_tar([f("real.json", b'{"address": "a:1"}'), sym("connection.json", "real.json")])),
           "connection.json is not a regular file (not a regular file)")


def test_k8s_bad_digest(refuse):
    image = b'{"name": "example.com/cc", "digest": "sha256:1234"}'
    refuse(package(meta={"type": "k8s", "label": "cc"}, code=code_tar([f("image.json", image)])),
           "k8s package image.json digest must be sha256:<64 hex digits> (bad image.json)")


# -- legacy packages -------------------------------------------------------------

def test_legacy_path_traversal(refuse):
    refuse(cds(code_tar([f("src/example.com/cc/main.go", MAIN_GO), f("../../evil")])),
           "code package entry '../../evil' escapes the package (path traversal)", name="cc.cds")


def test_legacy_signed_symlink_escape(refuse):
    refuse(signed_cds(cds(code_tar([sym("src/x", "/etc/shadow")]))), "(absolute symlink target)", name="cc.pak")


def test_legacy_undefined_type(refuse):
    refuse(cds(code_tar([f("src/a.go")]), type_code=0), "chaincode type 0, not one of GOLANG, NODE, CAR, JAVA",
           name="cc.cds")


def test_legacy_bad_name(refuse):
    refuse(cds(code_tar([f("src/a.go")]), name="my cc"), "chaincode name 'my cc' is invalid", name="cc.cds")


def test_legacy_bad_path(refuse):
    refuse(cds(code_tar([f("src/a.go")]), path="../x"), "chaincode path '../x' is not a Go import path",
           name="cc.cds")


def test_legacy_code_not_gzip(refuse):
    refuse(cds(b"plain bytes"), "code package is not gzip-compressed", name="cc.cds")


def test_legacy_truncated_message(refuse):
    refuse(cds(code_tar([f("src/a.go")]))[:-10], "is not a chaincode package ocibuild can read",
           "ChaincodeDeploymentSpec (of 'mycc'), but is damaged or cut short", "runs past the end", name="cc.cds")


# -- limits and bombs -----------------------------------------------------------

def test_too_many_entries(refuse):
    members = [f(f"src/f{i}.go") for i in range(120)]
    e = refuse(code(*members), "(entry limit)", limits=Limits(max_entries=100))
    assert e.rule == "entry limit"


@pytest.mark.parametrize("legacy", [False, True], ids=["lifecycle", "cds"])
@pytest.mark.parametrize("last", ["entry limit", "duplicate entry", "symlink escape"])
def test_a_package_refused_for_its_last_entry_writes_nothing(refuse, monkeypatch, last, legacy):
    """The code is checked in a first pass that writes nothing: a package
    over the entry limit (issue 9: 100 001 entries once took 19 s to refuse)
    or with a bad last entry is refused before any file is made."""
    members = [f(f"src/f{i}.go") for i in range(100)]
    limit = 1000
    if last == "entry limit":
        members += [f("src/one-too-many.go"), f("src/two-too-many.go")]
        limit = 101
    elif last == "duplicate entry":
        members.append(f("src/f3.go"))
    else:
        members.append(sym("src/out", "../../.."))
    made = []
    real_open = os.open

    def spying_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            made.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    data = cds(code_tar(members)) if legacy else code(*members)
    e = refuse(data, f"({last})", limits=Limits(max_entries=limit), name="cc.cds" if legacy else "pkg.tar.gz")
    assert e.rule == last
    assert made == [], f"{len(made)} files were made before the refusal"


def test_too_many_headers_even_without_files(refuse):
    # Extension headers count too: 60 empty files, each with a pax header,
    # are 120 headers. (A flood of extension headers for one entry, or of
    # global headers, is refused at the second as ambiguous.)
    entries = []
    for i in range(60):
        info = tarfile.TarInfo(f"src/{i}.go")
        info.pax_headers = {"comment": "x"}
        entries.append((info, b""))
    refuse(package(code=gz(tar_bytes(entries, tarfile.PAX_FORMAT))),
           "code.tar.gz holds more than 100 entries (entry limit)",
           limits=Limits(max_entries=100))


def test_global_pax_headers_are_refused(refuse):
    # Go returns a global header as an entry of its own, which the peer's
    # name rule refuses; other readers apply or ignore it.
    glob = tarfile.TarInfo("pax_global_header")
    glob.type = tarfile.XGLTYPE
    glob.size = 0
    refuse(package(code=gz(glob.tobuf(tarfile.USTAR_FORMAT) + tar_bytes([f("src/a.go")]))),
           "(global pax header)")


def test_claimed_size_over_limit(refuse):
    refuse(code(f("src/big.bin", bytes(2 * MIB))),
           "entry 'src/big.bin' is 2 MiB, more than the 1 MiB the package may inflate to (size limit)",
           limits=Limits(max_bytes=MIB))


def test_many_files_over_limit(refuse):
    members = [f(f"src/f{i}.bin", bytes(100_000)) for i in range(30)]
    refuse(code(*members), "KiB left of the 1 MiB the package may inflate to (size limit)",
           limits=Limits(max_bytes=MIB))


def test_pax_header_bomb(refuse):
    # A pax header claiming 1 GiB: refused from its header, never read into memory.
    head = tarfile.TarInfo("PaxHeaders/x")
    head.type = tarfile.XHDTYPE
    head.size = GIB
    raw = head.tobuf(tarfile.USTAR_FORMAT)
    refuse(package(code=gz(raw) + zeros_gzip(GIB)), "has a pax header of 1 GiB, more than 1 MiB (header limit)")


def test_gnu_long_name_bomb(refuse):
    head = tarfile.TarInfo("././@LongLink")
    head.type = tarfile.GNUTYPE_LONGNAME
    head.size = 64 * MIB
    refuse(package(code=gz(head.tobuf(tarfile.USTAR_FORMAT)) + zeros_gzip(64 * MIB)), "(header limit)")


def _big_member_header(size: int, fmt) -> bytes:
    info = tarfile.TarInfo("src/zeros.bin")
    info.size = size
    return info.tobuf(fmt)


@ROOT
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_bomb_with_default_limits_is_refused_at_once(tmpfs, tmp_path, fmt):
    # code.tar.gz: one member claiming 10 GiB of zeros (the zeros are really
    # there: 10 GiB as a 10 MB multi-member gzip). The work dir is a 16 MiB
    # tmpfs: writing the member would end in "no space", not in the limit.
    work = tmpfs("16m")
    bomb = gz(_big_member_header(10 * GIB, fmt)) + zeros_gzip(10 * GIB)
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(package(code=bomb))
    start = time.monotonic()
    with pytest.raises(PackageError) as info:
        open_package(str(path), str(work))
    assert time.monotonic() - start < 5
    # GNU writes a 10 GiB size in base-256, which is refused on sight (readers
    # disagree on base-256 numbers); pax writes it as a size record.
    want = ("has a base-256 size field in a header" if fmt == tarfile.GNU_FORMAT
            else "entry 'src/zeros.bin' is 10 GiB, more than the 1 GiB the package may inflate to (size limit)")
    assert want in str(info.value)
    assert os.listdir(work) == []


@ROOT
def test_inflation_bomb_is_stopped_as_it_inflates(tmpfs, tmp_path):
    # A tiny valid tar followed by 10 GiB of zeros that no header accounts
    # for: only counting inflated bytes catches it. Default limits; refused
    # after 1 GiB has inflated, in seconds, with nothing written for it.
    work = tmpfs("16m")
    bomb = code_tar([f("src/main.go", MAIN_GO)]) + zeros_gzip(10 * GIB)
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(package(code=bomb))
    start = time.monotonic()
    with pytest.raises(PackageError) as info:
        open_package(str(path), str(work))
    elapsed = time.monotonic() - start
    assert "code.tar.gz inflates to more than 1 GiB (size limit); it may be a decompression bomb" in str(info.value)
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert os.listdir(work) == []


def test_package_id_refuses_outer_bomb(tmp_path):
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(package() + zeros_gzip(256 * MIB))
    with pytest.raises(PackageError, match=r"package inflates to more than 64 MiB \(size limit\)"):
        package_id(str(path), Limits(max_bytes=64 * MIB))


@ROOT
def test_extracted_bytes_stay_within_the_limit(tmpfs, tmp_path):
    # Files are really written up to the limit, never past it: on a 3 MiB
    # tmpfs, a 2 MiB limit is hit before the disk is full.
    work = tmpfs("3m")
    members = [f(f"src/f{i}.bin", bytes(200_000)) for i in range(20)]
    path = tmp_path / "many.tar.gz"
    path.write_bytes(code(*members))
    with pytest.raises(PackageError, match=r"\(size limit\)"):
        open_package(str(path), str(work), Limits(max_bytes=2 * MIB))
    assert os.listdir(work) == []


def test_input_that_is_not_a_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(PackageError, match="is not a regular file or a directory"):
        open_package(str(fifo), str(tmp_path))


# -- fuzzing: only ocibuild's own errors may escape -----------------------------

def _valid_samples() -> list[bytes]:
    module = [f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO), sym("src/link.go", "main.go"),
              hard("src/hard.go", "src/main.go"), d("META-INF/statedb/couchdb/indexes"),
              f("META-INF/statedb/couchdb/indexes/i.json", b'{"index": {"fields": ["a"]}}')]
    return [
        package(code=code_tar(module)),
        package(code=code_tar(module, tarfile.GNU_FORMAT), fmt=tarfile.GNU_FORMAT),
        cds(code_tar([f("src/example.com/cc/main.go", MAIN_GO)])),
        signed_cds(cds(code_tar([f("src/example.com/cc/main.go", MAIN_GO)]))),
        package(meta={"type": "ccaas", "label": "cc"}, code=code_tar([f("connection.json", b'{"address":"a:1"}')])),
    ]


_SAMPLES = _valid_samples()
_INNER = tar_bytes([f("src/go.mod", GO_MOD), f("src/main.go", MAIN_GO), sym("src/l", "main.go"),
                    hard("src/h", "src/main.go"), d("src/sub"), f("src/sub/x.go", b"package sub")])
_FUZZ_LIMITS = Limits(max_bytes=4 * MIB, max_entries=200, max_header=64 * 1024)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, value in edits:
        if not buf:
            break
        pos %= len(buf)
        if op == 0:
            buf[pos] = value
        elif op == 1:
            del buf[pos:pos + 1 + value % 64]
        elif op == 2:
            buf[pos:pos] = bytes([value]) * (1 + value % 8)
        else:
            del buf[pos:]
    return bytes(buf)


_edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6)


def _open_only_own_errors(tmp_path_factory, data: bytes) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    path = base / "pkg"
    path.write_bytes(data)
    work = base / "work"
    work.mkdir()
    try:
        pkg = open_package(str(path), str(work), _FUZZ_LIMITS)
        try:
            go_source(pkg)
        except OcibuildError:
            pass
    except OcibuildError:
        assert os.listdir(work) == []


_FUZZ = settings(max_examples=1000, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.slow
@_FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_random_bytes(tmp_path_factory, data):
    _open_only_own_errors(tmp_path_factory, data)
    _open_only_own_errors(tmp_path_factory, b"\x1f\x8b" + data)


@pytest.mark.slow
@_FUZZ
@given(sample=st.sampled_from(range(len(_SAMPLES))), edits=_edits)
def test_fuzz_mutated_packages(tmp_path_factory, sample, edits):
    _open_only_own_errors(tmp_path_factory, _mutate(_SAMPLES[sample], edits))


@pytest.mark.slow
@_FUZZ
@given(edits=_edits, outer=st.booleans())
def test_fuzz_mutated_tar_inside_valid_gzip(tmp_path_factory, edits, outer):
    # Mutations below the compression, where the tar and metadata readers see them.
    inner = _mutate(_INNER, edits)
    if outer:
        data = gz(_mutate(tar_bytes([f("metadata.json", meta_bytes()), f("code.tar.gz", gz(_INNER))]), edits))
    else:
        data = package(code=gz(inner))
    _open_only_own_errors(tmp_path_factory, data)
