"""host_entries / with_parents: what a layer holds, independent of the host.

Engine-free: only the file system under tmp_path."""

from __future__ import annotations

import io
import os
import socket
import stat
import tarfile
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocibuild.errors import InputError, OcibuildError
from ocibuild.oci.assembly import Add, Request
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.entries import (
    DIR,
    FILE,
    HARDLINK,
    SYMLINK,
    Entry,
    Node,
    host_entries,
    image_path,
    kind_name,
    resolve,
    through_symlinks,
    with_parents,
)
from ocibuild.oci.model import Platform
from ocibuild.oci.tarwriter import write_tar
from ocibuild.transports import assemble_image

AMD64 = Platform("linux", "amd64")


def _write(path, data=b"x", mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _paths(entries):
    return [e.path for e in entries]


def _by_path(entries):
    return {e.path: e for e in entries}


def _layer_members(image, index=-1):
    with image.layers[index].open_tar() as f:
        data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def _assert_sorted_parents_first_unique(entries):
    paths = _paths(entries)
    assert len(paths) == len(set(paths)), f"duplicates in {paths}"
    keys = [tuple(p.split("/")) for p in paths]
    assert keys == sorted(keys)
    seen = set()
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            assert "/".join(parts[:i]) in seen, f"/{p} comes before its parent"
        seen.add(p)


# --- order, parents, duplicates ------------------------------------------------

def test_tree_is_sorted_parents_first_whatever_creation_order(tmp_path):
    src = tmp_path / "src"
    # Created in an order unlike the sorted one; names chosen so that plain
    # string order ('-' < '/') and path-component order disagree.
    for rel in ["z/last", "a-b/x", "a/b/c", "a/a", "m", "a/b-c"]:
        _write(src / rel, rel.encode())
    entries = host_entries(str(src), "/app")
    out = with_parents(entries)
    assert _paths(out) == [
        "app", "app/a", "app/a/a", "app/a/b", "app/a/b/c", "app/a/b-c",
        "app/a-b", "app/a-b/x", "app/m", "app/z", "app/z/last"]
    _assert_sorted_parents_first_unique(out)
    assert sorted(_paths(entries)) == sorted(_paths(out))     # nothing added, nothing lost


def test_same_tree_created_in_another_order_gives_the_same_entries(tmp_path):
    rels = ["z/last", "a-b/x", "a/b/c", "a/a", "m", "a/b-c"]
    for name, order in (("one", rels), ("two", rels[::-1])):
        for rel in order:
            _write(tmp_path / name / rel, rel.encode())
    one = host_entries(str(tmp_path / "one"), "/app")
    two = host_entries(str(tmp_path / "two"), "/app")

    def strip(es):
        return [(e.path, e.kind, e.mode, e.uid, e.gid, e.size, e.link) for e in es]
    assert strip(one) == strip(two)


def test_with_parents_adds_missing_parents_as_root_0755(tmp_path):
    f = _write(tmp_path / "cc", b"bin", 0o755)
    out = with_parents(host_entries(str(f), "/usr/local/bin/cc"))
    assert _paths(out) == ["usr", "usr/local", "usr/local/bin", "usr/local/bin/cc"]
    for e in out[:3]:
        assert (e.kind, e.mode, e.uid, e.gid) == (DIR, 0o755, 0, 0)
    assert out[3].kind == FILE


def test_with_parents_sorts_and_merges_identical_directories(tmp_path):
    a = _write(tmp_path / "a" / "x")
    b = _write(tmp_path / "b" / "y")
    entries = host_entries(str(tmp_path / "b"), "/srv") + host_entries(str(tmp_path / "a"), "/srv")
    out = with_parents(entries)
    assert _paths(out) == ["srv", "srv/x", "srv/y"]
    assert a.exists() and b.exists()
    _assert_sorted_parents_first_unique(out)


@pytest.mark.parametrize("existing, expected", [
    (["usr", "usr/local", "usr/local/bin"], ["usr/local/bin/cc"]),
    (["usr"], ["usr/local", "usr/local/bin", "usr/local/bin/cc"]),
    ([], ["usr", "usr/local", "usr/local/bin", "usr/local/bin/cc"]),
])
def test_implicit_parents_skipped_when_base_has_them(tmp_path, existing, expected):
    f = _write(tmp_path / "cc", b"bin", 0o755)
    base = {p: Node(DIR) for p in existing}
    assert _paths(with_parents(host_entries(str(f), "/usr/local/bin/cc"), base)) == expected



def test_layer_on_static_base_holds_only_the_new_file(tmp_path):
    f = _write(tmp_path / "cc", b"chaincode", 0o755)
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(f), "/usr/local/bin/cc"),), base="static",
                              platform=AMD64), work)
        members = _layer_members(image)
    assert list(members) == ["usr/local/bin/cc"]


def test_layer_on_a_layout_base_skips_parents_that_base_has(tmp_path):
    """Parents are known from an oci: base's own layer, not only for built-ins."""
    from ocibuild.outputs import write_all
    from ocibuild.transports import open_output
    f = _write(tmp_path / "cc", b"chaincode", 0o755)
    layout = tmp_path / "base"
    with WorkStore() as work:
        base = assemble_image(Request(adds=(Add(str(f), "/opt/app/one"),), base="scratch",
                             platform=AMD64), work)
        out = open_output(f"oci:{layout}:b", 0)
        out.check()
        write_all([out], base, work)
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(f), "/opt/app/two"), Add(str(f), "/opt/new/three")),
                              base=f"oci:{layout}:b", platform=AMD64), work)
        members = _layer_members(image)
    assert list(members) == ["opt/app/two", "opt/new", "opt/new/three"]


# --- symlinks ----------------------------------------------------------------

def test_symlinks_are_kept_never_followed(tmp_path):
    src = tmp_path / "src"
    _write(src / "real" / "inside", b"secret")
    _write(src / "file", b"f")
    os.symlink("real", src / "dirlink")                 # to a directory: not descended
    os.symlink("file", src / "filelink")
    os.symlink("/etc/passwd", src / "abslink")          # absolute, outside the tree
    os.symlink("../../nowhere", src / "dangling")
    entries = _by_path(host_entries(str(src), "/app"))
    for name, target in [("dirlink", "real"), ("filelink", "file"),
                         ("abslink", "/etc/passwd"), ("dangling", "../../nowhere")]:
        e = entries[f"app/{name}"]
        assert (e.kind, e.link, e.size, e.source) == (SYMLINK, target, 0, None)
        assert e.mode == 0o777
    assert not [p for p in entries if p.startswith("app/dirlink/")]
    assert entries["app/real/inside"].kind == FILE


def test_symlink_given_as_source_is_kept(tmp_path):
    os.symlink("/bin/sh", tmp_path / "sh")
    (e,) = host_entries(str(tmp_path / "sh"), "/bin/sh")
    assert (e.path, e.kind, e.link) == ("bin/sh", SYMLINK, "/bin/sh")
    os.symlink(str(tmp_path), tmp_path / "loop")          # a link to a directory
    (e,) = host_entries(str(tmp_path / "loop"), "/loop")
    assert e.kind == SYMLINK


# --- hard links --------------------------------------------------------------

@pytest.mark.parametrize("created_first", ["z/orig", "a/copy"])
def test_hard_links_point_at_first_in_sorted_order(tmp_path, created_first):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "z").mkdir()
    other = "a/copy" if created_first == "z/orig" else "z/orig"
    _write(src / created_first, b"shared content", 0o755)
    os.link(src / created_first, src / other)
    os.link(src / created_first, src / "m")
    entries = _by_path(with_parents(host_entries(str(src), "/app")))
    first = entries["app/a/copy"]
    assert (first.kind, first.size, first.mode) == (FILE, len(b"shared content"), 0o755)
    for p in ("app/m", "app/z/orig"):
        assert (entries[p].kind, entries[p].link, entries[p].size) == (HARDLINK, "app/a/copy", 0)

    buf = io.BytesIO()
    write_tar(with_parents(list(entries.values())), buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert members["app/a/copy"].type == tarfile.REGTYPE
        assert tf.extractfile("app/a/copy").read() == b"shared content"
        for p in ("app/m", "app/z/orig"):
            assert members[p].type == tarfile.LNKTYPE
            assert members[p].linkname == "app/a/copy"
            assert members[p].size == 0


def test_hard_link_order_is_by_path_components_not_string(tmp_path):
    # "a-b/x" < "a/b" as strings, but "a/b" comes first as a path (parents first).
    src = tmp_path / "src"
    _write(src / "a-b" / "x", b"data")
    (src / "a").mkdir()
    os.link(src / "a-b" / "x", src / "a" / "b")
    entries = _by_path(host_entries(str(src), "/"))
    assert entries["a/b"].kind == FILE
    assert (entries["a-b/x"].kind, entries["a-b/x"].link) == (HARDLINK, "a/b")


def test_file_linked_from_outside_the_tree_stays_a_file(tmp_path):
    src = tmp_path / "src"
    _write(src / "f", b"data")
    os.link(src / "f", tmp_path / "outside")
    (d, f) = host_entries(str(src), "/app")
    assert (f.path, f.kind, f.size) == ("app/f", FILE, 4)


# --- refused kinds -----------------------------------------------------------

def test_fifo_refused(tmp_path):
    src = tmp_path / "src"
    _write(src / "ok")
    os.mkfifo(src / "pipe")
    with pytest.raises(InputError, match=r"pipe.*fifo"):
        host_entries(str(src), "/app")
    with pytest.raises(InputError, match="fifo"):
        host_entries(str(src / "pipe"), "/pipe")


def test_socket_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "sock"))
        with pytest.raises(InputError, match=r"sock.*socket"):
            host_entries(str(src), "/app")
    finally:
        sock.close()


def test_device_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    try:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot make a device node here")
    with pytest.raises(InputError, match=r"null.*device"):
        host_entries(str(src), "/app")


def test_missing_source_refused(tmp_path):
    with pytest.raises(InputError, match="nonexistent"):
        host_entries(str(tmp_path / "nonexistent"), "/x")


# --- destinations ------------------------------------------------------------

@pytest.mark.parametrize("dest", ["app/x", "x", "./x", "", "~/x"])
def test_relative_dest_refused(tmp_path, dest):
    f = _write(tmp_path / "f")
    with pytest.raises(InputError, match="absolute"):
        host_entries(str(f), dest)
    with pytest.raises(InputError):
        image_path(dest)


@pytest.mark.parametrize("dest", ["/..", "/../etc/x", "/a/../../x", "/a/..", "/a/b/../c"])
def test_dotdot_dest_refused(tmp_path, dest):
    f = _write(tmp_path / "f")
    with pytest.raises(InputError, match=r"\.\."):
        host_entries(str(f), dest)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match=r"\.\."):
        host_entries(str(tmp_path / "d"), dest)


@pytest.mark.parametrize("dest, expected", [
    ("/a/b", "a/b"), ("//a//b", "a/b"), ("/a/./b", "a/b"), ("/./a", "a"), ("/a/b/", "a/b"),
])
def test_dest_normalised(dest, expected):
    assert image_path(dest) == expected


def test_file_to_dest_ending_in_slash_goes_inside(tmp_path):
    f = _write(tmp_path / "cc", b"x")
    (e,) = host_entries(str(f), "/usr/local/bin/")
    assert e.path == "usr/local/bin/cc"
    (e,) = host_entries(str(f), "/")
    assert e.path == "cc"


def test_directory_at_root_has_no_root_entry(tmp_path):
    _write(tmp_path / "src" / "etc" / "x")
    assert _paths(host_entries(str(tmp_path / "src"), "/")) == ["etc", "etc/x"]


# --- collisions --------------------------------------------------------------

def test_two_files_at_one_path_refused(tmp_path):
    a = _write(tmp_path / "a", b"a")
    b = _write(tmp_path / "b", b"b")
    with pytest.raises(InputError, match="/bin/app"):
        with_parents(host_entries(str(a), "/bin/app") + host_entries(str(b), "/bin/app"))


def test_same_file_twice_at_one_path_refused(tmp_path):
    a = _write(tmp_path / "a", b"a")
    with pytest.raises(InputError, match="/bin/app"):
        with_parents(host_entries(str(a), "/bin/app") * 2)


def test_file_and_directory_at_one_path_refused(tmp_path):
    a = _write(tmp_path / "a", b"a")
    _write(tmp_path / "d" / "x")
    for entries in (host_entries(str(a), "/srv") + host_entries(str(tmp_path / "d"), "/srv"),
                    host_entries(str(tmp_path / "d"), "/srv") + host_entries(str(a), "/srv")):
        with pytest.raises(InputError, match="/srv"):
            with_parents(entries)


def test_file_used_as_a_parent_refused(tmp_path):
    a = _write(tmp_path / "a", b"a")
    with pytest.raises(InputError, match="/opt/app"):
        with_parents(host_entries(str(a), "/opt/app") + host_entries(str(a), "/opt/app/x"))


def test_directory_added_twice_with_different_owners_refused(tmp_path):
    _write(tmp_path / "d" / "x")
    _write(tmp_path / "e" / "y")
    entries = host_entries(str(tmp_path / "d"), "/srv") + host_entries(
        str(tmp_path / "e"), "/srv", uid=500, gid=500)
    with pytest.raises(InputError, match="/srv"):
        with_parents(entries)


def test_collision_through_build_refused(tmp_path):
    a = _write(tmp_path / "a", b"a")
    with WorkStore() as work:
        with pytest.raises(InputError):
            assemble_image(Request(adds=(Add(str(a), "/x"), Add(str(a), "/x")), base="scratch",
                          platform=AMD64), work)


def test_hard_link_to_a_non_file_refused():
    entries = [Entry("d", DIR, 0o755), Entry("l", HARDLINK, 0o644, link="d")]
    with pytest.raises(InputError, match="/l"):
        with_parents(entries)
    with pytest.raises(InputError, match="/l"):
        with_parents([Entry("l", HARDLINK, 0o644, link="missing")])


# --- modes and owners --------------------------------------------------------

@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
def test_modes_normalised_whatever_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "dir").mkdir()
        (src / "private").mkdir(mode=0o700)
        (src / "sticky").mkdir()
        os.chmod(src / "sticky", 0o1777)
        files = {"exe": 0o700, "exe_g": 0o750, "exe_o": 0o701, "suid": 0o4755, "plain": 0o600,
                 "wide": 0o666, "ro": 0o400, "grp": 0o640}
        for name, mode in files.items():
            (src / name).write_bytes(name.encode())
            os.chmod(src / name, mode)
        entries = _by_path(host_entries(str(src), "/app"))
    finally:
        os.umask(old)
    want = {"exe": 0o755, "exe_g": 0o755, "exe_o": 0o755, "suid": 0o755, "plain": 0o644,
            "wide": 0o644, "ro": 0o644, "grp": 0o644}
    for name, mode in want.items():
        assert entries[f"app/{name}"].mode == mode, name
    for d in ("app", "app/dir", "app/private", "app/sticky"):
        assert entries[d].mode == 0o755, d


def test_owners_are_root_unless_asked(tmp_path):
    src = tmp_path / "src"
    _write(src / "sub" / "f")
    os.symlink("f", src / "sub" / "l")
    if os.geteuid() == 0:
        for p in (src, src / "sub", src / "sub" / "f"):
            os.chown(p, 1234, 5678)
        os.lchown(src / "sub" / "l", 4321, 8765)
    default = with_parents(host_entries(str(src), "/opt/app"))
    assert default and all((e.uid, e.gid) == (0, 0) for e in default)

    asked = with_parents(host_entries(str(src), "/opt/app", uid=500, gid=501))
    by = _by_path(asked)
    for p in ("opt/app", "opt/app/sub", "opt/app/sub/f", "opt/app/sub/l"):
        assert (by[p].uid, by[p].gid) == (500, 501), p
    assert (by["opt"].uid, by["opt"].gid) == (0, 0)       # an implicit parent stays root's

    f = _write(tmp_path / "one")
    (e,) = host_entries(str(f), "/x", uid=7, gid=8)
    assert (e.uid, e.gid) == (7, 8)


def test_adding_into_an_existing_base_directory_keeps_its_metadata(tmp_path):
    # (was a bug: the added tree's own 0755 root:root entry replaced /tmp's 1777)
    src = tmp_path / "cfg"
    _write(src / "core.yaml", b"peer: {}\n")
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(src), "/tmp"), Add(str(src), "/etc/hyperledger/fabric")),
                              base="static", platform=AMD64), work)
        members = _layer_members(image)
    assert "tmp/core.yaml" in members and "etc/hyperledger/fabric/core.yaml" in members
    # Either no entry for the base's directories, or one with the base's metadata.
    if "tmp" in members:
        assert members["tmp"].mode == 0o1777
    if "etc/hyperledger/fabric" in members:
        m = members["etc/hyperledger/fabric"]
        assert (m.mode, m.uid, m.gid) == (0o775, 500, 500)


def test_nothing_is_added_beneath_a_base_symlink(tmp_path):
    from ocibuild.outputs import write_all
    from ocibuild.transports import open_output
    root = tmp_path / "root"
    _write(root / "usr" / "lib" / "libc.so.6", b"libc")
    os.symlink("usr/lib", root / "lib")
    layout = tmp_path / "base"
    with WorkStore() as work:
        base = assemble_image(Request(adds=(Add(str(root), "/"),), base="scratch", platform=AMD64), work)
        out = open_output(f"oci:{layout}:b", 0)
        out.check()
        write_all([out], base, work)
    f = _write(tmp_path / "x.so", b"new")
    with WorkStore() as work:
        try:
            image = assemble_image(Request(adds=(Add(str(f), "/lib/x.so"),), base=f"oci:{layout}:b",
                                  platform=AMD64), work)
        except InputError:
            return                                   # refusing it is correct too
        members = _layer_members(image)
    assert not [n for n in members if n == "lib" or n.startswith("lib/")], list(members)
    assert "usr/lib/x.so" in members


def test_file_in_place_of_a_base_directory_refused(tmp_path):
    f = _write(tmp_path / "f", b"x")
    with WorkStore() as work:
        with pytest.raises(InputError, match="/tmp"):
            assemble_image(Request(adds=(Add(str(f), "/tmp"),), base="static", platform=AMD64), work)
    os.symlink("/", tmp_path / "l")
    with pytest.raises(InputError, match="/usr/local/bin"):
        with_parents(host_entries(str(tmp_path / "l"), "/usr/local/bin"),
                     {"usr": Node(DIR), "usr/local": Node(DIR), "usr/local/bin": Node(DIR)})


def test_file_under_a_base_file_refused(tmp_path):
    f = _write(tmp_path / "f", b"x")
    with WorkStore() as work:
        with pytest.raises(InputError, match="/etc/passwd"):
            assemble_image(Request(adds=(Add(str(f), "/etc/passwd/x"),), base="static", platform=AMD64),
                  work)


def test_base_file_may_be_replaced_by_a_file(tmp_path):
    f = _write(tmp_path / "passwd", b"root:x:0:0::/:/sbin/nologin\n")
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(f), "/etc/passwd"),), base="static", platform=AMD64),
                      work)
        members = _layer_members(image)
    assert list(members) == ["etc/passwd"]


def test_every_refusal_is_an_ocibuild_error(tmp_path):
    f = _write(tmp_path / "f")
    for call in (lambda: host_entries(str(f), "rel"), lambda: host_entries(str(f), "/a/../b"),
                 lambda: with_parents(host_entries(str(f), "/x") * 2)):
        with pytest.raises(OcibuildError):
            call()


# --- property: order in, order out -------------------------------------------

_SEGMENT = st.sampled_from(["a", "b", "a-b", "a.b", "B", "é", "z", "0"])


@settings(max_examples=60, deadline=None)
@given(paths=st.lists(st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join), min_size=1,
                      max_size=12, unique=True),
       base=st.lists(st.lists(_SEGMENT, min_size=1, max_size=2).map("/".join), max_size=4),
       data=st.data())
def test_with_parents_invariants(paths, base, data):
    files = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    existing = {d: Node(DIR) for d in base if d in dirs}       # the base has some of the parents
    entries = [Entry(p, FILE, 0o644, size=0, data=b"") for p in files]
    shuffled = data.draw(st.permutations(entries))
    out = with_parents(shuffled, existing)
    assert out == with_parents(entries, existing)               # input order does not matter
    keys = [e.sort_key() for e in out]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # with the base's directories below it, every parent comes before its children
    _assert_sorted_parents_first_unique(
        sorted([Entry(d, DIR, 0o755) for d in existing] + out, key=Entry.sort_key))
    assert {e.path for e in out} == (set(files) | set(dirs)) - set(existing)
    assert all((e.kind, e.mode, e.uid, e.gid) == (DIR, 0o755, 0, 0) for e in out if e.path in dirs)


# --- the fast paths against the plain definitions -------------------------------

def _with_parents_reference(entries, existing=None):
    """with_parents as first written: every parent of every path checked."""
    existing = existing or {}
    by_path = {}
    for e in entries:
        prev = by_path.get(e.path)
        if prev is None:
            by_path[e.path] = e
        elif not (prev.kind == DIR and e.kind == DIR):
            raise InputError(f"two sources are added at /{e.path}; give each a distinct destination")
        elif prev != e:
            raise InputError(f"directory /{e.path} is added twice with different owners")
    for path in list(by_path):
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            have = by_path.get(parent)
            if have is None:
                base = existing.get(parent)
                if base is None:
                    by_path[parent] = Entry(parent, DIR, 0o755)
                elif base.kind not in (DIR, SYMLINK):
                    raise InputError(f"/{parent} is a {kind_name(base.kind)} in the base image, so /{path} "
                                     "cannot be added under it")
            elif have.kind != DIR:
                raise InputError(f"/{parent} is added as a {kind_name(have.kind)} but /{path} "
                                 "needs it to be a directory")
    for e in list(by_path.values()):
        base = existing.get(e.path)
        if base is not None and base.kind == DIR:
            if e.kind != DIR:
                raise InputError(f"/{e.path} is a directory in the base image; adding a {kind_name(e.kind)} "
                                 "there would replace it: choose another destination")
            del by_path[e.path]
        if e.kind == HARDLINK and by_path.get(e.link, Entry("", DIR, 0)).kind != FILE:
            raise InputError(f"hard link /{e.path} points at /{e.link}, which is not a file in the same layer")
    return sorted(by_path.values(), key=Entry.sort_key)


def _outcome(f, *args):
    try:
        return f(*args)
    except InputError as e:
        return str(e)


_KIND = st.sampled_from([FILE, DIR, SYMLINK, HARDLINK])
_PATH = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)


@st.composite
def _layer_and_base(draw):
    entries = []
    for path in draw(st.lists(_PATH, min_size=1, max_size=10)):
        kind = draw(_KIND)
        link = draw(_PATH) if kind in (SYMLINK, HARDLINK) else ""
        entries.append(Entry(path, kind, draw(st.sampled_from([0o755, 0o644])), draw(st.sampled_from([0, 1])),
                             0, 0, link, None, b"" if kind == FILE else None))
    base = {}
    for path in draw(st.lists(_PATH, max_size=8)):
        kind = draw(st.sampled_from([FILE, DIR, SYMLINK]))
        target = draw(st.one_of(_PATH, _PATH.map(lambda p: "/" + p), _PATH.map(lambda p: "../" + p),
                                st.just("."), st.just("..")))
        base[path] = Node(kind, target if kind == SYMLINK else "")
    return entries, base


@settings(max_examples=400, deadline=None)
@given(case=_layer_and_base())
def test_with_parents_is_the_plain_definition(case):
    entries, base = case
    assert _outcome(with_parents, entries, base) == _outcome(_with_parents_reference, entries, base)


@settings(max_examples=400, deadline=None)
@given(case=_layer_and_base())
def test_through_symlinks_is_the_plain_definition(case):
    entries, base = case
    moved = {e.path: resolve(base, e.path, follow_last=e.kind == DIR)[0] for e in entries}
    want = [replace(e, path=moved[e.path], link=moved.get(e.link, e.link) if e.kind == HARDLINK else e.link)
            for e in entries]
    assert through_symlinks(entries, base) == want


def test_through_symlinks_follows_chains_and_loops():
    base = {"lib": Node(SYMLINK, "usr/lib"), "usr": Node(DIR), "usr/lib": Node(DIR),
            "usr/lib/x": Node(SYMLINK, "../../opt/x"), "opt": Node(DIR), "opt/x": Node(DIR),
            "loop": Node(SYMLINK, "loop2"), "loop2": Node(SYMLINK, "loop")}
    entries = [Entry("lib/a", FILE, 0o644), Entry("lib/x", DIR, 0o755), Entry("lib/x/b", FILE, 0o644),
               Entry("loop/c", FILE, 0o644), Entry("lib/h", HARDLINK, 0o644, link="lib/a")]
    assert [(e.path, e.link) for e in through_symlinks(entries, base)] == [
        ("usr/lib/a", ""), ("opt/x", ""), ("opt/x/b", ""), ("loop/c", ""), ("usr/lib/h", "usr/lib/a")]
