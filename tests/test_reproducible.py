"""Byte-for-byte reproducibility, as properties: the same inputs give the same
image digest and the same archive bytes whatever the host does differently
(mtimes, creation order, umask, working directory, owners), and
SOURCE_DATE_EPOCH is the only time that reaches the image."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ocibuild.build import ImageJob, run_job
from ocibuild.oci.assembly import Add, Request
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.model import ANN_CREATED, Platform, rfc3339
from ocibuild.outputs import write_all
from ocibuild.transports import assemble_image, open_image, open_output

OCIBUILD = str(Path(sys.executable).parent / "ocibuild")
AMD64 = Platform("linux", "amd64")
IS_ROOT = os.geteuid() == 0
MAX_TAR_MTIME = 8 ** 11 - 1          # the largest time the ustar header holds without PAX

PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
# Two ocibuild processes per example: no shrinking, or a failure takes minutes
# to report (the falsifying example is printed all the same).
CLI_PROPERTY = settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse,
                                                               Phase.generate],
                        suppress_health_check=[HealthCheck.too_slow])

# --- what varies between two hosts -------------------------------------------

NAMES = st.sampled_from(["a", "b", "bin", "lib", "été", "x y", "Z", "a-b", "a.b", "n" * 120])


@st.composite
def trees(draw):
    """{relative path: (content, executable)}, plus two optional links."""
    paths = draw(st.lists(st.lists(NAMES, min_size=1, max_size=3).map(tuple),
                          min_size=1, max_size=7, unique=True))
    files = sorted(p for p in paths if not any(q != p and q[:len(p)] == p for q in paths))
    out = {}
    for p in files:
        content = draw(st.binary(max_size=3000))
        out["/".join(p)] = (b"data:" + content, draw(st.booleans()))   # never an ELF header
    hardlink = len(out) >= 2 and draw(st.booleans())
    symlink = draw(st.booleans())
    return out, hardlink, symlink


@st.composite
def hosts(draw, n_files: int):
    """How one host happens to create the same tree."""
    return {
        "order": draw(st.permutations(range(n_files))),
        "umask": draw(st.sampled_from([0o000, 0o002, 0o022, 0o027, 0o077])),
        "mtimes": draw(st.lists(st.integers(0, 4_000_000_000 * 10**9), min_size=64, max_size=64)),
        "owners": draw(st.lists(st.tuples(st.integers(0, 70000), st.integers(0, 70000)),
                                min_size=64, max_size=64)),
        "rel": draw(st.booleans()),           # relative or absolute --add source
        "depth": draw(st.integers(0, 2)),     # where the working directory is
    }


def make_tree(root: Path, spec, host) -> None:
    files, hardlink, symlink = spec
    names = list(files)
    linked = names[:2] if hardlink else []
    old = os.umask(host["umask"])
    try:
        root.mkdir(parents=True)
        made = []
        for i in host["order"]:
            rel = names[i]
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            other = [n for n in linked if n != rel and n in made]
            if rel in linked and other:
                os.link(root / other[0], p)          # whichever was made first is the original
            else:
                content, exe = files[rel]
                if rel in linked:                    # both links share the first's content
                    content, exe = files[linked[0]]
                p.write_bytes(content)
                mode = (0o777 if exe else 0o666) & ~host["umask"]
                os.chmod(p, mode)
            made.append(rel)
        if symlink:
            os.symlink(names[0], root / "zz-link")
    finally:
        os.umask(old)
    everything = sorted(root.rglob("*"), key=lambda p: -len(p.parts))   # children first
    for i, p in enumerate(everything + [root]):
        if IS_ROOT:
            os.lchown(p, *host["owners"][i % 64])
        if not p.is_symlink():
            t = host["mtimes"][i % 64]
            os.utime(p, ns=(t, t))


def workdir_for(base: Path, host) -> Path:
    d = base / "cwd"
    for i in range(host["depth"]):
        d = d / f"level{i}"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Quiet:
    quiet = True

    def say(self, msg: str) -> None:
        pass

    def phase(self, title: str):
        return contextlib.nullcontext()


def api_build(src: Path, host, work_base: Path, out: Path, created: int) -> str:
    """Build with the Python API from a working directory and umask of this host;
    write oci-archive, docker-archive and oci: outputs into `out`."""
    cwd = workdir_for(work_base, host)
    old_cwd, old_mask = os.getcwd(), os.umask(host["umask"])
    os.chdir(cwd)
    try:
        source = os.path.relpath(src, cwd) if host["rel"] else str(src)
        outs = [open_output(r, created) for r in (
            f"oci-archive:{out}/oci.tar:v1", f"docker-archive:{out}/docker.tar:example/app:v1",
            f"oci:{out}/layout:v1")]
        for o in outs:
            o.check()
        # The use case the CLI runs: assembly, the SBOM attached, every output written.
        job = ImageJob(Request(adds=(Add(source, "/opt/app"),), created=created, platform=AMD64), outs)
        return run_job(job, Quiet()).digest
    finally:
        os.chdir(old_cwd)
        os.umask(old_mask)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def layer_members(archive: Path) -> tuple[list[tarfile.TarInfo], dict]:
    """Members of the last layer in an oci-archive, and the image's documents."""
    image = open_image(f"oci-archive:{archive}")
    with image.layers[-1].open_tar() as f:
        data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers(), image


# --- properties --------------------------------------------------------------

@PROPERTY
@given(data=st.data(), spec=trees(), created=st.integers(0, MAX_TAR_MTIME))
def test_same_inputs_same_digest_and_bytes(tmp_path_factory, data, spec, created):
    n = len(spec[0])
    one, two = data.draw(hosts(n)), data.draw(hosts(n))
    base = tmp_path_factory.mktemp("repro")
    try:
        digests, outs = [], []
        for name, host in (("one", one), ("two", two)):
            src = base / name / "src"
            make_tree(src, spec, host)
            out = base / name / "out"
            out.mkdir()
            digests.append(api_build(src, host, base / name, out, created))
            outs.append(out)
        assert digests[0] == digests[1]
        a, b = files_of(outs[0]), files_of(outs[1])
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == b[name], f"{name} differs"
        assert (outs[0] / "oci.tar").read_bytes() == (outs[1] / "oci.tar").read_bytes()
        assert (outs[0] / "docker.tar").read_bytes() == (outs[1] / "docker.tar").read_bytes()
        # and the digest printed is the digest of the manifest written
        manifest = json.loads((outs[0] / "layout" / "index.json").read_bytes())["manifests"][0]
        assert manifest["digest"] == digests[0]
    finally:
        shutil.rmtree(base)


@PROPERTY
@given(spec=trees(), epochs=st.lists(st.integers(0, MAX_TAR_MTIME), min_size=2, max_size=2,
                                     unique=True))
def test_source_date_epoch_is_the_only_time(tmp_path_factory, spec, epochs):
    host = {"order": list(range(len(spec[0]))), "umask": 0o022, "mtimes": [10**18] * 64,
            "owners": [(0, 0)] * 64, "rel": False, "depth": 0}
    base = tmp_path_factory.mktemp("sde")
    try:
        src = base / "src"
        make_tree(src, spec, host)
        digests = []
        for epoch in epochs:
            out = base / str(epoch)
            out.mkdir()
            digests.append(api_build(src, host, base, out, epoch))
            members, image = layer_members(out / "oci.tar")
            assert members and {m.mtime for m in members} == {epoch}
            with image.layers[0].open_tar() as f:        # the static base keeps mtime 0
                with tarfile.open(fileobj=f, mode="r|") as tf:
                    assert {m.mtime for m in tf} == {0}
            cfg = image.config_doc
            assert cfg["created"] == rfc3339(epoch)
            assert cfg["history"][-1]["created"] == rfc3339(epoch)
            assert image.manifest_doc["annotations"][ANN_CREATED] == rfc3339(epoch)
            for archive in ("oci.tar", "docker.tar"):
                with tarfile.open(out / archive) as tf:
                    assert {m.mtime for m in tf.getmembers()} == {epoch}
        assert digests[0] != digests[1]
    finally:
        shutil.rmtree(base)


@PROPERTY
@given(spec=trees(), created=st.integers(0, 2**31))
def test_written_then_read_back_is_the_same_image(tmp_path_factory, spec, created):
    host = {"order": list(range(len(spec[0]))), "umask": 0o022, "mtimes": [0] * 64,
            "owners": [(0, 0)] * 64, "rel": False, "depth": 0}
    base = tmp_path_factory.mktemp("back")
    try:
        src = base / "src"
        make_tree(src, spec, host)
        out = base / "out"
        out.mkdir()
        with WorkStore() as work:
            image = assemble_image(Request(adds=(Add(str(src), "/opt/app"),), created=created,
                                  platform=AMD64), work)
            want = (image.config.descriptor.digest,
                    [layer.descriptor.digest for layer in image.layers],
                    [layer.descriptor.size for layer in image.layers],
                    [layer.diff_id for layer in image.layers])
            write_all([open_output(f"oci-archive:{out}/oci.tar:v1", created),
                       open_output(f"oci:{out}/layout:v1", created),
                       open_output(f"docker-archive:{out}/docker.tar:example/app:v1", created)],
                      image, work)
        for ref in (f"oci:{out}/layout:v1", f"oci-archive:{out}/oci.tar:v1",
                    f"docker-archive:{out}/docker.tar:example/app:v1"):
            back = open_image(ref)
            got = (back.config.descriptor.digest, [layer.descriptor.digest for layer in back.layers],
                   [layer.descriptor.size for layer in back.layers], [layer.diff_id for layer in back.layers])
            assert got == want, ref
            assert back.digest == image.digest, ref
            assert back.manifest == image.manifest, ref
            for lay in back.layers:                        # every blob verifies
                with lay.open_tar() as f:
                    assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == lay.diff_id
    finally:
        shutil.rmtree(base)


def test_docker_archive_reads_back_with_the_same_manifest_digest(tmp_path):
    # (was a bug: the manifest was rebuilt from manifest.json, without annotations)
    f = tmp_path / "f"
    f.write_bytes(b"data")
    with WorkStore() as work:
        image = assemble_image(Request(adds=(Add(str(f), "/f"),), platform=AMD64), work)
        write_all([open_output(f"docker-archive:{tmp_path}/d.tar:example/app:v1", 0)], image, work)
    assert open_image(f"docker-archive:{tmp_path}/d.tar:example/app:v1").digest == image.digest


# --- the command line --------------------------------------------------------

def cli(args, cwd, umask=0o022, epoch=None):
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    return subprocess.run([OCIBUILD, "-q", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, umask=umask)


@CLI_PROPERTY
@given(data=st.data(), spec=trees(), created=st.integers(0, MAX_TAR_MTIME))
def test_cli_same_inputs_same_bytes(tmp_path_factory, data, spec, created):
    n = len(spec[0])
    one, two = data.draw(hosts(n)), data.draw(hosts(n))
    base = tmp_path_factory.mktemp("cli")
    try:
        digests = []
        for name, host in (("one", one), ("two", two)):
            src = base / name / "src"
            make_tree(src, spec, host)
            cwd = workdir_for(base / name, host)
            source = os.path.relpath(src, cwd) if host["rel"] else str(src)
            out = base / name / "out"
            out.mkdir()
            r = cli(["assemble", "--add", f"{source}:/opt/app", "--platform", "linux/amd64",
                     "--output", f"oci-archive:{out}/oci.tar:v1",
                     "--output", f"docker-archive:{out}/docker.tar:example/app:v1"],
                    cwd=cwd, umask=host["umask"], epoch=created)
            assert r.returncode == 0, r.stderr
            digests.append(r.stdout.strip())
        assert digests[0] == digests[1]
        for archive in ("oci.tar", "docker.tar"):
            assert (base / "one/out" / archive).read_bytes() == (base / "two/out" / archive).read_bytes()
        # the CLI and the Python API make the same image
        out = base / "api"
        out.mkdir()
        assert api_build(base / "one" / "src", one, base / "one", out, created) == digests[0]
        assert (out / "oci.tar").read_bytes() == (base / "one/out/oci.tar").read_bytes()
    finally:
        shutil.rmtree(base)


def test_cli_source_date_epoch(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "app").write_bytes(b"app")
    os.utime(src / "bin" / "app", (1.25, 1.25))
    digests = {}
    for epoch in (None, 0, 1700000000, 1700000001):
        out = tmp_path / f"out-{epoch}"
        out.mkdir()
        r = cli(["assemble", "--add", f"{src}:/opt/app", "--platform", "linux/amd64",
                 "--output", f"oci-archive:{out}/i.tar"], cwd=tmp_path, epoch=epoch)
        assert r.returncode == 0, r.stderr
        digests[epoch] = r.stdout.strip()
        assert r.stdout.count("\n") == 1 and digests[epoch].startswith("sha256:")
        members, image = layer_members(out / "i.tar")
        want = epoch or 0
        assert {m.mtime for m in members} == {want}
        assert image.config_doc["created"] == rfc3339(want)
        r = subprocess.run([OCIBUILD, "inspect", "--json", f"oci-archive:{out}/i.tar"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        assert shown["digest"] == digests[epoch] and shown["config"]["created"] == rfc3339(want)
    assert digests[None] == digests[0]                       # unset means 0
    assert len({digests[0], digests[1700000000], digests[1700000001]}) == 3


@pytest.mark.parametrize("value", [
    "yesterday", "-1", "1e9", "17000000.5",
    "99999999999999",
])
def test_cli_bad_source_date_epoch(tmp_path, value):
    (tmp_path / "f").write_bytes(b"x")
    r = cli(["assemble", "--add", f"{tmp_path}/f:/f", "--output", f"oci-archive:{tmp_path}/o.tar"],
            cwd=tmp_path, epoch=value)
    assert r.returncode == 3
    assert [line for line in r.stderr.splitlines() if line.startswith("error: ")] == [
        line for line in r.stderr.splitlines()]
    assert "SOURCE_DATE_EPOCH" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.tar").exists()
