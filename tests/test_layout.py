"""`oci:` output into a layout directory: several images and tags, concurrent
writers, refusals, and failures that must leave the layout as it was."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ocibuild.errors import OutputError
from ocibuild.oci.assembly import Add, Request
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.compression import compression
from ocibuild.oci.model import OCI_INDEX, OCI_MANIFEST, REF_NAME, Platform
from ocibuild.outputs import write_all
from ocibuild.transports import assemble_image, open_image, open_output

OCIBUILD = str(Path(sys.executable).parent / "ocibuild")
AMD64 = Platform("linux", "amd64")
# Independent validators, installed by scripts/setup: missing, the tests fail.
SKOPEO = shutil.which("skopeo") or "skopeo"
OCI_IMAGE_TOOL = shutil.which("oci-image-tool") or "oci-image-tool"
N_WRITERS = 8


# --- helpers -----------------------------------------------------------------

def tree(root: Path) -> dict:
    """Every file and directory under root: content hash, mode, link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode),
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def leftovers(parent: Path) -> list[str]:
    """Temporary files or directories ocibuild could leave beside or inside a
    layout (staging `.*.partial`, blob and index `.tmp-*`)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(parent):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames
                  if (n.startswith(".") and n.endswith(".partial")) or n.startswith(".tmp-")]
    return found


def index(layout: Path) -> dict:
    return json.loads((layout / "index.json").read_bytes())


def tags(layout: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in index(layout)["manifests"]:
        if "artifactType" in d:           # an image's SBOM, listed beside it (see test_referrers.py)
            continue
        name = (d.get("annotations") or {}).get(REF_NAME)
        out.setdefault(name, []).append(d["digest"])
    return out


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([OCIBUILD, *args], capture_output=True, text=True, **kw)


def payload(dirpath: Path, name: str, seed) -> Path:
    p = dirpath / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(f"payload {seed}\n".encode() * 50)
    return p


def assemble(tmp_path: Path, seed, *outputs: str, base: str = "static") -> str:
    f = payload(tmp_path / "payloads", f"p{seed}", seed)
    args = ["-q", "assemble", "--base", base, "--add", f"{f}:/usr/local/bin/app",
            "--platform", "linux/amd64"]
    for o in outputs:
        args += ["--output", o]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def skopeo_digest(ref: str) -> str:
    r = subprocess.run([SKOPEO, "inspect", ref], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["Digest"]


def validate(layout: Path, tag: str) -> None:
    """`oci-image-tool validate --type image --ref name=TAG` of the image `tag`.

    oci-image-tool 1.0.0~rc (Debian 12) cannot pick a ref out of an index of
    three or more manifests: its filter deletes from the slice it iterates
    without stepping back, and reports "descriptor retrieved by refs ... is not
    unique" (as it does for a layout skopeo writes). So the image is validated
    in a view of the layout: the same blob files (hard links) under an
    index.json holding only that tag's descriptor, taken verbatim."""
    doc = index(layout)
    picked = [d for d in doc["manifests"] if (d.get("annotations") or {}).get(REF_NAME) == tag]
    assert len(picked) == 1, f"{tag}: {picked}"
    view = layout.parent / f"view-{layout.name}-{tag}"
    (view / "blobs" / "sha256").mkdir(parents=True)
    try:
        for blob in (layout / "blobs" / "sha256").iterdir():
            os.link(blob, view / "blobs" / "sha256" / blob.name)
        shutil.copyfile(layout / "oci-layout", view / "oci-layout")
        (view / "index.json").write_text(json.dumps({**doc, "manifests": picked}))
        r = subprocess.run([OCI_IMAGE_TOOL, "validate", "--type", "image", "--ref", f"name={tag}",
                            str(view)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        shutil.rmtree(view)


def check_blobs(layout: Path) -> None:
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    doc = index(layout)
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    for p in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    for d in doc["manifests"]:
        assert d["mediaType"] == OCI_MANIFEST
        blob = layout / "blobs" / "sha256" / d["digest"][7:]
        assert blob.stat().st_size == d["size"]


# --- several images in one layout --------------------------------------------

def test_new_layout_is_valid(tmp_path):
    lay = tmp_path / "lay"
    digest = assemble(tmp_path, 1, f"oci:{lay}:v1")
    assert tags(lay) == {"v1": [digest]}
    check_blobs(lay)
    validate(lay, "v1")
    assert open_image(f"oci:{lay}:v1").digest == digest
    assert leftovers(tmp_path) == []


def test_second_tag_keeps_the_first(tmp_path):
    lay = tmp_path / "lay"
    a = assemble(tmp_path, "a", f"oci:{lay}:a")
    b = assemble(tmp_path, "b", f"oci:{lay}:b")
    assert a != b
    assert tags(lay) == {"a": [a], "b": [b]}
    check_blobs(lay)
    for tag, digest in (("a", a), ("b", b)):
        assert open_image(f"oci:{lay}:{tag}").digest == digest
        validate(lay, tag)
        assert skopeo_digest(f"oci:{lay}:{tag}") == digest
    assert leftovers(tmp_path) == []


def test_reusing_a_tag_moves_it(tmp_path):
    lay = tmp_path / "lay"
    a = assemble(tmp_path, "a", f"oci:{lay}:latest", f"oci:{lay}:keep")
    assert tags(lay) == {"latest": [a], "keep": [a]}
    b = assemble(tmp_path, "b", f"oci:{lay}:latest")
    assert tags(lay) == {"keep": [a], "latest": [b]}
    assert open_image(f"oci:{lay}:latest").digest == b
    assert open_image(f"oci:{lay}:keep").digest == a
    assert skopeo_digest(f"oci:{lay}:latest") == b
    assert skopeo_digest(f"oci:{lay}:keep") == a
    validate(lay, "latest")
    validate(lay, "keep")


# Both were a bug: with every blob already in the layout, commit() listed a
# staging blobs/sha256 directory that stage() had never made.

def test_writing_the_same_image_again_changes_nothing(tmp_path):
    lay = tmp_path / "lay"
    a = assemble(tmp_path, "a", f"oci:{lay}:v1")
    before = tree(lay)
    assert assemble(tmp_path, "a", f"oci:{lay}:v1") == a
    assert tree(lay) == before


def test_new_tag_for_an_image_already_in_the_layout(tmp_path):
    lay = tmp_path / "lay"
    a = assemble(tmp_path, "a", f"oci:{lay}:v1")
    assert assemble(tmp_path, "a", f"oci:{lay}:stable") == a
    assert tags(lay) == {"v1": [a], "stable": [a]}
    validate(lay, "stable")


def test_two_tags_of_one_image_in_one_run(tmp_path):
    lay = tmp_path / "lay"
    a = assemble(tmp_path, "a", f"oci:{lay}:v1", f"oci:{lay}:stable")
    assert tags(lay) == {"v1": [a], "stable": [a]}
    validate(lay, "v1")
    validate(lay, "stable")


def test_into_an_existing_empty_directory(tmp_path):
    lay = tmp_path / "lay"
    lay.mkdir()
    a = assemble(tmp_path, "a", f"oci:{lay}:v1")
    assert tags(lay) == {"v1": [a]}
    check_blobs(lay)
    validate(lay, "v1")


def test_shared_blobs_written_once(tmp_path):
    """Two images on `static` share its layer: one blob file, both images readable."""
    lay = tmp_path / "lay"
    a = assemble(tmp_path, "a", f"oci:{lay}:a")
    b = assemble(tmp_path, "b", f"oci:{lay}:b")
    la = [layer.descriptor.digest for layer in open_image(f"oci:{lay}:a").layers]
    lb = [layer.descriptor.digest for layer in open_image(f"oci:{lay}:b").layers]
    assert la[0] == lb[0] and la[1] != lb[1] and a != b
    names = sorted(p.name for p in (lay / "blobs" / "sha256").iterdir())
    # 2 manifests, 2 configs, the shared base layer once, 2 new layers; each
    # image's SBOM (its manifest and document) and the empty config, once
    assert len(names) == 7 + 2 * 2 + 1


# --- concurrent writers ------------------------------------------------------

def _writer(layout: str, tag: str, seed: int, barrier, results) -> None:
    tmp = Path(layout).parent / "payloads"
    f = payload(tmp, f"w{seed}", seed)
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(f), f"/srv/{tag}"),), platform=AMD64), work)
        out = open_output(f"oci:{layout}:{tag}", 0)
        out.check()
        barrier.wait(timeout=60)           # everyone writes at once
        write_all([out], image, work)
    results.put((tag, image.digest))


@pytest.mark.parametrize("start", ["absent", "empty-dir", "existing-layout"])
def test_concurrent_writers_all_land(tmp_path, start):
    lay = tmp_path / "lay"
    first = None
    if start == "empty-dir":
        lay.mkdir()
    elif start == "existing-layout":
        first = assemble(tmp_path, "first", f"oci:{lay}:first")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(N_WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(lay), f"t{i}", i, barrier, results))
             for i in range(N_WRITERS)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    want = {t: [d] for t, d in got.items()}
    if first:
        want["first"] = [first]
    assert tags(lay) == want
    assert len(set(got.values())) == N_WRITERS
    check_blobs(lay)
    for tag, digest in got.items():
        assert open_image(f"oci:{lay}:{tag}").digest == digest
        validate(lay, tag)
    assert leftovers(tmp_path) == []


def test_concurrent_cli_writers_all_land(tmp_path):
    lay = tmp_path / "lay"
    procs = {}
    for i in range(N_WRITERS):
        f = payload(tmp_path / "payloads", f"c{i}", f"cli {i}")
        procs[f"c{i}"] = subprocess.Popen(
            [OCIBUILD, "-q", "assemble", "--add", f"{f}:/srv/app", "--platform", "linux/amd64",
             "--output", f"oci:{lay}:c{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
    got = {}
    for tag, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        got[tag] = out.strip()
    assert tags(lay) == {t: [d] for t, d in got.items()}
    check_blobs(lay)
    for tag, digest in got.items():
        validate(lay, tag)
        assert skopeo_digest(f"oci:{lay}:{tag}") == digest
    assert leftovers(tmp_path) == []


# --- refusals ----------------------------------------------------------------

def test_directory_that_is_not_a_layout_is_refused(tmp_path):
    d = tmp_path / "project"
    (d / "src").mkdir(parents=True)
    (d / "src" / "main.go").write_text("package main\n")
    (d / "index.json").write_text("{}")
    before = tree(d)
    with pytest.raises(OutputError, match=str(d)):
        open_output(f"oci:{d}:v1", 0).check()
    f = payload(tmp_path / "payloads", "x", 1)
    r = cli("assemble", "--add", f"{f}:/x", "--output", f"oci:{d}:v1")
    assert r.returncode == 7
    (err,) = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert str(d) in err and "not an OCI layout" in err
    assert "Traceback" not in r.stderr
    assert tree(d) == before
    assert leftovers(tmp_path) == []


def test_file_in_place_of_a_layout_is_refused(tmp_path):
    p = tmp_path / "lay"
    p.write_bytes(b"precious")
    f = payload(tmp_path / "payloads", "x", 1)
    r = cli("assemble", "--add", f"{f}:/x", "--output", f"oci:{p}:v1")
    assert r.returncode == 7
    assert [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert p.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


# --- failures leave the layout as it was -------------------------------------

def _sys_file_that_lies_about_its_size() -> str | None:
    """A /sys attribute: stat says 4096 bytes, reading gives fewer. ocibuild
    accepts it when scanning and finds the mismatch only while writing."""
    for p in ("/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/profiling",
              "/sys/power/state"):
        try:
            if os.stat(p).st_size != len(Path(p).read_bytes()):
                return p
        except OSError:
            continue
    return None


def _base_layout(tmp_path: Path, comp: str = "gzip", size: int = 64 * 1024) -> tuple[Path, str]:
    """A base image in its own layout, and the digest of its one layer."""
    lay = tmp_path / "base"
    data = tmp_path / "base-data"
    data.write_bytes(random.Random(3).randbytes(size))
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(data), "/data"),), base="scratch",
                              compression=compression(comp), platform=AMD64), work)
        out = open_output(f"oci:{lay}:base", 0)
        out.check()
        write_all([out], image, work)
    return lay, image.layers[0].descriptor.digest


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x55]))


def late_add_source(tmp_path):
    p = _sys_file_that_lies_about_its_size()
    if p is None:
        pytest.skip("no /sys file whose size differs from its content here")
    return ["--add", f"{p}:/etc/sys-attr"], "changed size"


def corrupt_base_layer(tmp_path):
    lay, layer = _base_layout(tmp_path)
    _flip(lay / "blobs" / "sha256" / layer[7:], 1000)
    return ["--base", f"oci:{lay}:base"], layer


def corrupt_base_layer_seen_while_staging(tmp_path):
    # An uncompressed layer of 2*10240 + 512 bytes: tarfile stops reading at the
    # end-of-archive marker, 512 bytes before the blob's end, so only a reader
    # that drains the blob (or the copy made while staging) sees the damage.
    lay, layer = _base_layout(tmp_path, "none", 20480 + 512 - 3 * 512)
    _flip(lay / "blobs" / "sha256" / layer[7:], 5000)
    return ["--base", f"oci:{lay}:base"], layer


def missing_base_layer(tmp_path):
    lay, layer = _base_layout(tmp_path)
    (lay / "blobs" / "sha256" / layer[7:]).unlink()
    return ["--base", f"oci:{lay}:base"], layer[7:]


@pytest.mark.parametrize("failure", [late_add_source, corrupt_base_layer,
                                     corrupt_base_layer_seen_while_staging, missing_base_layer],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("target", ["existing", "new"])
def test_failed_write_leaves_the_layout_as_it_was(tmp_path, failure, target):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    lay = out_dir / "lay"
    if target == "existing":
        assemble(tmp_path, "a", f"oci:{lay}:a", f"oci:{lay}:latest")
    before = tree(out_dir)
    extra_args, words = failure(tmp_path)
    f = payload(tmp_path / "payloads", "new", "new")
    r = cli("assemble", *extra_args, "--add", f"{f}:/usr/local/bin/new",
            "--output", f"oci:{lay}:new", "--output", f"oci:{lay}:latest",
            "--output", f"oci-archive:{out_dir}/also.tar")
    assert r.returncode == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert tree(out_dir) == before                 # byte-identical, nothing added
    assert leftovers(out_dir) == []
    if target == "existing":
        validate(lay, "a")


# --- failures found only at commit -------------------------------------------



def _break_index(lay: Path) -> None:
    (lay / "index.json").write_text("{not json")


def test_unreadable_index_refused_with_the_layout_unchanged(tmp_path):
    lay = tmp_path / "out" / "lay"
    lay.parent.mkdir()
    assemble(tmp_path, "a", f"oci:{lay}:a")
    _break_index(lay)
    before = tree(lay.parent)
    f = payload(tmp_path / "payloads", "b", "b")
    r = cli("assemble", "--add", f"{f}:/b", "--output", f"oci:{lay}:b")
    assert r.returncode == 3
    (err,) = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert "index.json" in err and "Traceback" not in r.stderr
    assert leftovers(lay.parent) == []
    assert tree(lay.parent) == before


def test_one_failing_layout_leaves_the_other_outputs_unchanged(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    good, bad = out / "good", out / "bad"
    assemble(tmp_path, "a", f"oci:{good}:a")
    assemble(tmp_path, "a", f"oci:{bad}:a")
    _break_index(bad)
    before = tree(out)
    f = payload(tmp_path / "payloads", "b", "b")
    r = cli("assemble", "--add", f"{f}:/b", "--output", f"oci:{good}:b", "--output", f"oci:{bad}:b",
            "--output", f"oci-archive:{out}/also.tar")
    assert r.returncode == 3
    assert tree(good) == {k[len("good/"):]: v for k, v in before.items() if k.startswith("good/")}
    assert tags(good) == {"a": [open_image(f"oci:{good}:a").digest]}
    assert tree(out) == before


def _same_tag_writer(layout: str, seed: int, barrier, results) -> None:
    f = payload(Path(layout).parent / "payloads", f"s{seed}", seed)
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(f), "/srv/app"),), platform=AMD64), work)
        out = open_output(f"oci:{layout}:same", 0)
        out.check()
        barrier.wait(timeout=60)
        write_all([out], image, work)
    results.put(image.digest)


def test_concurrent_writers_of_one_tag_leave_exactly_one(tmp_path):
    lay = tmp_path / "lay"
    assemble(tmp_path, "first", f"oci:{lay}:other")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(N_WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_same_tag_writer, args=(str(lay), i, barrier, results))
             for i in range(N_WRITERS)]
    for p in procs:
        p.start()
    digests = {results.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    got = tags(lay)
    assert set(got) == {"other", "same"}
    assert len(got["same"]) == 1 and got["same"][0] in digests
    check_blobs(lay)
    validate(lay, "same")
    validate(lay, "other")
    assert leftovers(tmp_path) == []


def test_truncated_blob_in_the_layout_is_not_reused(tmp_path):
    lay = tmp_path / "lay"
    assemble(tmp_path, "a", f"oci:{lay}:a")
    base_layer = open_image(f"oci:{lay}:a").layers[0].descriptor   # the static base layer
    blob = lay / "blobs" / "sha256" / base_layer.digest[7:]
    os.truncate(blob, base_layer.size // 2)
    f = payload(tmp_path / "payloads", "b", "b")
    r = cli("-q", "assemble", "--add", f"{f}:/usr/local/bin/app", "--output", f"oci:{lay}:b")
    if r.returncode == 0:            # written: then the image must be whole
        image = open_image(f"oci:{lay}:b")
        assert image.layers[0].descriptor == base_layer
        assert blob.stat().st_size == base_layer.size
        image.layers[0].read()       # verifies the digest
    else:                            # or refused, naming the blob
        assert base_layer.digest[7:] in r.stderr
