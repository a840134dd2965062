"""The command line's contract for bad input and failing outputs.

For every bad input: a non-zero exit (1; 2 for usage errors click detects),
nothing on stdout, no traceback, and exactly ONE `error: ` line on stderr —
the only line with -q, the last one after `ocibuild: ` progress lines
without it — and no output file or layout created or changed (the whole work
directory, including existing outputs named in the same command, is compared
before and after).

On success: stdout is exactly one line `sha256:<64 hex>`, progress goes to
stderr, -q silences it; --debug turns an error into a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import DIGEST_LINE, blob_path, read_layout, tree_state

DROP_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
ROOT = pytest.mark.root          # setpriv dropping root's capabilities; tmpfs mounts
SLOW = pytest.mark.slow


# --- the work directory every case runs in ----------------------------------------------

@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory, build_image):
    """A small image (scratch + one file) as oci:, oci-archive:, docker-archive:."""
    d = tmp_path_factory.mktemp("prebuilt")
    (d / "small.txt").write_text("small\n")
    build_image("--base", "scratch", "--add", f"{d / 'small.txt'}:/small.txt",
                "--output", f"oci:{d / 'layout'}:v1", "--output", f"oci-archive:{d / 'image.tar'}:v1",
                "--output", f"docker-archive:{d / 'docker.tar'}:ocibuild-test/errors:v1")
    return d


@dataclass
class Work:
    root: Path
    small: Path          # a small regular file
    base: Path           # oci: layout holding image v1, used as --base
    archive: Path        # oci-archive: of the same image (tag v1)
    docker: Path         # docker-archive: of it (ocibuild-test/errors:v1)
    existing: Path       # an existing oci: layout (v1), named as an output
    existing_tar: Path   # an existing oci-archive:, named as an output
    plain_dir: Path      # a non-empty directory that is not a layout

    def outputs(self) -> list[str]:
        """Outputs every case names: two new, two existing."""
        return ["--output", f"oci:{self.root / 'new-layout'}:v2",
                "--output", f"oci-archive:{self.root / 'new.tar'}",
                "--output", f"oci:{self.existing}:v2",
                "--output", f"oci-archive:{self.existing_tar}"]

    def base_layer(self) -> Path:
        img = read_layout(self.base, "v1")
        return blob_path(self.base, img.layer_digests[0])

    def base_config(self) -> Path:
        return blob_path(self.base, read_layout(self.base, "v1").config_digest)

    def base_manifest(self) -> Path:
        return blob_path(self.base, read_layout(self.base, "v1").digest)

    def layer_member(self) -> str:
        """The layer's member name in the oci-archive (same image as the base)."""
        return "blobs/sha256/" + read_layout(self.base, "v1").layer_digests[0].split(":")[1]


@pytest.fixture
def work(tmp_path, prebuilt) -> Work:
    root = tmp_path / "work"
    root.mkdir()
    shutil.copy(prebuilt / "small.txt", root / "small.txt")
    shutil.copytree(prebuilt / "layout", root / "base")
    shutil.copytree(prebuilt / "layout", root / "existing")
    shutil.copy(prebuilt / "image.tar", root / "image.tar")
    shutil.copy(prebuilt / "image.tar", root / "existing.tar")
    shutil.copy(prebuilt / "docker.tar", root / "docker.tar")
    (root / "plain").mkdir()
    (root / "plain" / "notes.txt").write_text("not a layout\n")
    return Work(root, root / "small.txt", root / "base", root / "image.tar", root / "docker.tar",
                root / "existing", root / "existing.tar", root / "plain")


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_in_member(archive: Path, name: str) -> None:
    """Flip one byte in the middle of tar member `name`."""
    with tarfile.open(archive) as tf:
        m = tf.getmember(name)
    flip_byte(archive, m.offset_data + m.size // 2)


def docker_layer_member(archive: Path) -> str:
    with tarfile.open(archive) as tf:
        return json.load(tf.extractfile("manifest.json"))[0]["Layers"][0]


# --- the contract ------------------------------------------------------------------------

def check_error(r: subprocess.CompletedProcess, code: int, quiet: bool) -> str:
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}; stderr: {r.stderr!r}"
    assert r.stdout == "", f"stdout: {r.stdout!r}"
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert r.stderr.endswith("\n"), repr(r.stderr)
    if not quiet:
        assert all(line.startswith("ocibuild: ") for line in lines[:-1]), r.stderr
        lines = lines[-1:]
    assert len(lines) == 1, f"stderr is not one line: {r.stderr!r}"
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ") + 10, lines[0]
    return lines[0]


@dataclass
class Case:
    id: str
    args: Callable[[Work], list]            # after the subcommand
    needles: tuple[str, ...]                # must all be in the error line (case-insensitive)
    code: int = 1
    outputs: bool = True                    # append Work.outputs()
    adds: bool = True                       # add the small file (so a base's layers are read)
    env: dict = field(default_factory=dict)
    setup: Callable[[Work], None] | None = None
    prefix: tuple = ()
    command: str = "assemble"
    marks: tuple = ()


def _secret(w: Work) -> None:
    (w.root / "secret").write_text("secret\n")
    (w.root / "secret").chmod(0)


def _locked_tree(w: Work) -> None:
    (w.root / "tree" / "locked").mkdir(parents=True)
    (w.root / "tree" / "ok.txt").write_text("ok\n")
    (w.root / "tree" / "locked" / "inside.txt").write_text("inside\n")
    (w.root / "tree" / "locked").chmod(0)


CASES = [
    # --add sources
    Case("add-missing-source", lambda w: ["--add", f"{w.root}/nope:/x"], ("nope", "no such file")),
    Case("add-through-dangling-symlink", lambda w: ["--add", f"{w.root}/dangling/file:/x"],
         ("dangling/file", "no such file"), setup=lambda w: (w.root / "dangling").symlink_to("/nonexistent")),
    # root reads any file: the command runs without CAP_DAC_OVERRIDE/READ_SEARCH
    Case("add-unreadable-file", lambda w: ["--add", f"{w.root}/secret:/secret"],
         ("secret", "permission denied"), setup=_secret, prefix=DROP_DAC, marks=(ROOT,)),
    Case("add-unreadable-directory-in-tree", lambda w: ["--add", f"{w.root}/tree:/tree"],
         ("locked", "permission denied"), setup=_locked_tree, prefix=DROP_DAC, marks=(ROOT,)),
    Case("add-device", lambda w: ["--add", "/dev/null:/null"], ("/dev/null", "device")),
    Case("add-fifo", lambda w: ["--add", f"{w.root}/fifo:/fifo"], ("fifo",),
         setup=lambda w: os.mkfifo(w.root / "fifo")),
    Case("add-without-dest", lambda w: ["--add", str(w.small)], ("--add", "absolute")),
    Case("add-relative-dest", lambda w: ["--add", f"{w.small}:etc/small"], ("--add", "absolute")),
    Case("add-dest-dot-relative", lambda w: ["--add", f"{w.small}:./small"], ("--add", "absolute")),
    Case("add-dest-dotdot", lambda w: ["--add", f"{w.small}:/a/../b"], ("/a/../b", "..")),
    Case("add-dest-twice", lambda w: ["--add", f"{w.small}:/x", "--add", f"{w.base}:/x"], ("/x", "two")),
    Case("add-dest-under-added-file", lambda w: ["--add", f"{w.small}:/x", "--add", f"{w.small}:/x/y"],
         ("/x", "directory")),
    Case("add-dest-under-base-file", lambda w: ["--base", "static", "--add", f"{w.small}:/etc/passwd/foo"],
         ("/etc/passwd",), adds=False),
    # --base
    Case("base-unknown-name", lambda w: ["--base", "distroless"], ("unknown base", "distroless")),
    Case("base-layout-missing", lambda w: ["--base", f"oci:{w.root}/nowhere"], ("nowhere", "no such")),
    Case("base-archive-missing", lambda w: ["--base", f"oci-archive:{w.root}/nowhere.tar"],
         ("nowhere.tar", "no such")),
    Case("base-docker-archive-missing", lambda w: ["--base", f"docker-archive:{w.root}/nowhere.tar"],
         ("nowhere.tar", "no such")),
    Case("base-archive-not-a-tar", lambda w: ["--base", f"oci-archive:{w.small}"], ("small.txt", "tar")),
    Case("base-not-a-layout", lambda w: ["--base", f"oci:{w.plain_dir}"], ("plain", "not an oci layout")),
    Case("base-layout-no-such-ref", lambda w: ["--base", f"oci:{w.base}:nosuch"], ("nosuch", "v1")),
    Case("base-archive-no-such-ref", lambda w: ["--base", f"oci-archive:{w.archive}:nosuch"], ("nosuch",)),
    Case("base-docker-archive-no-such-tag",
         lambda w: ["--base", f"docker-archive:{w.docker}:ocibuild-test/other:v9"],
         ("ocibuild-test/other:v9",)),
    # (a pull from localhost:443, where nothing listens: refused at first contact, so it fails fast)
    Case("base-bad-transport", lambda w: ["--base", "docker://localhost/x:1"], ("docker://",)),
    Case("base-layer-corrupt", lambda w: ["--base", f"oci:{w.base}:v1"], ("layer", "corrupt"),
         setup=lambda w: flip_byte(w.base_layer())),
    Case("base-layer-corrupt-nothing-added", lambda w: ["--base", f"oci:{w.base}:v1"],
         ("layer", "corrupt"), adds=False, setup=lambda w: flip_byte(w.base_layer())),
    Case("base-layer-truncated", lambda w: ["--base", f"oci:{w.base}:v1"], ("layer", "truncated"),
         setup=lambda w: os.truncate(w.base_layer(), 10)),
    Case("base-layer-truncated-nothing-added", lambda w: ["--base", f"oci:{w.base}:v1"],
         ("layer", "truncated"), adds=False, setup=lambda w: os.truncate(w.base_layer(), 10)),
    Case("base-layer-missing", lambda w: ["--base", f"oci:{w.base}:v1"], ("missing",),
         setup=lambda w: w.base_layer().unlink()),
    Case("base-config-corrupt", lambda w: ["--base", f"oci:{w.base}:v1"], ("config", "corrupt"),
         setup=lambda w: flip_byte(w.base_config(), 5)),
    Case("base-manifest-corrupt", lambda w: ["--base", f"oci:{w.base}:v1"], ("manifest", "corrupt"),
         setup=lambda w: flip_byte(w.base_manifest(), 5)),
    Case("base-index-not-json", lambda w: ["--base", f"oci:{w.base}:v1"], ("index.json", "json"),
         setup=lambda w: (w.base / "index.json").write_text("{not json")),
    Case("base-oci-archive-blob-corrupt", lambda w: ["--base", f"oci-archive:{w.archive}:v1"],
         ("corrupt",), setup=lambda w: flip_in_member(w.archive, w.layer_member())),
    Case("base-oci-archive-truncated", lambda w: ["--base", f"oci-archive:{w.archive}:v1"],
         ("image.tar",), setup=lambda w: os.truncate(w.archive, os.path.getsize(w.archive) // 3)),
    Case("base-oci-archive-truncated-says-so", lambda w: ["--base", f"oci-archive:{w.archive}:v1"],
         ("image.tar", "truncated"),
         setup=lambda w: os.truncate(w.archive, os.path.getsize(w.archive) // 3)),
    Case("base-docker-archive-truncated", lambda w: ["--base", f"docker-archive:{w.docker}"],
         ("docker.tar",), setup=lambda w: os.truncate(w.docker, os.path.getsize(w.docker) // 3)),
    Case("base-docker-archive-blob-corrupt", lambda w: ["--base", f"docker-archive:{w.docker}"],
         ("corrupt",), setup=lambda w: flip_in_member(w.docker, docker_layer_member(w.docker))),
    # --output
    Case("output-without-transport", lambda w: ["--output", f"{w.root}/x"], ("--output", "transport"),
         outputs=False),
    Case("output-unknown-transport", lambda w: ["--output", f"tarball:{w.root}/x.tar"],
         ("unknown transport", "tarball")),
    Case("output-empty-path", lambda w: ["--output", "oci:"], ("--output", "empty")),
    Case("output-bad-ref-name", lambda w: ["--output", f"oci:{w.root}/n:bad ref!"], ("bad ref!",)),
    Case("output-bad-image-name", lambda w: ["--output", f"docker-archive:{w.root}/d.tar:Upper/Case"],
         ("invalid image name",)),
    Case("output-bad-tag", lambda w: ["--output", f"docker-archive:{w.root}/d.tar:name:bad/tag!"],
         ("bad/tag!",)),
    Case("output-engine-without-name", lambda w: ["--output", "docker-daemon:"], ("docker-daemon:",)),
    Case("output-registry-refused", lambda w: ["--output", "docker://localhost:5000/x:1"],
         ("localhost:5000", "refused")),
    Case("output-dir-not-a-layout", lambda w: ["--output", f"oci:{w.plain_dir}"],
         ("plain", "not an oci layout")),
    Case("output-layout-is-a-file", lambda w: ["--output", f"oci:{w.small}"], ("small.txt", "not a directory")),
    Case("output-archive-is-a-directory", lambda w: ["--output", f"oci-archive:{w.plain_dir}"],
         ("plain", "is a directory")),
    Case("output-archive-parent-missing", lambda w: ["--output", f"oci-archive:{w.root}/no/such/a.tar"],
         ("no/such", "does not exist")),
    Case("output-layout-parent-missing", lambda w: ["--output", f"oci:{w.root}/no/such/layout"],
         ("no/such", "does not exist")),
    Case("output-missing", lambda w: [], ("--output",), code=2, outputs=False),
    # image options
    Case("platform-os-only", lambda w: ["--platform", "linux"], ("platform", "'linux'")),
    Case("platform-empty-arch", lambda w: ["--platform", "linux/"], ("platform",)),
    Case("platform-too-many-parts", lambda w: ["--platform", "linux/amd64/v2/x"], ("platform",)),
    Case("env-without-equals", lambda w: ["--env", "NOVALUE"], ("--env", "NOVALUE")),
    Case("env-empty-key", lambda w: ["--env", "=x"], ("--env",)),
    Case("env-bad-key", lambda w: ["--env", "1BAD=x"], ("--env", "1BAD")),
    Case("cmd-json-not-strings", lambda w: ["--cmd", "[1, 2]"], ("--cmd", "strings")),
    Case("cmd-bad-json", lambda w: ["--cmd", '["a",'], ("--cmd", "json")),
    Case("cmd-unclosed-quote", lambda w: ["--cmd", 'run "forever'], ("--cmd", "quotation")),
    Case("entrypoint-json-object-items", lambda w: ["--entrypoint", '[{"a": 1}]'], ("--entrypoint",)),
    Case("chown-names", lambda w: ["--chown", "root:root"], ("--chown", "root:root")),
    Case("chown-uid-only", lambda w: ["--chown", "500"], ("--chown",)),
    Case("chown-negative", lambda w: ["--chown=-1:0"], ("--chown",)),
    Case("chown-three-parts", lambda w: ["--chown", "1:2:3"], ("--chown",)),
    Case("workdir-relative", lambda w: ["--workdir", "app"], ("--workdir", "absolute")),
    Case("label-without-equals", lambda w: ["--label", "novalue"], ("--label",)),
    Case("annotation-without-equals", lambda w: ["--annotation", "novalue"], ("--annotation",)),
    Case("compression-unknown", lambda w: ["--compression", "lzma"], ("--compression", "lzma"), code=2),
    Case("unknown-option", lambda w: ["--frobnicate"], ("--frobnicate",), code=2),
    Case("unknown-command", lambda w: [], ("frobnicate",), code=2, command="frobnicate",
         outputs=False, adds=False),
    Case("option-missing-value", lambda w: ["--base"], ("--base",), code=2, outputs=False),
    # SOURCE_DATE_EPOCH
    Case("epoch-word", lambda w: [], ("SOURCE_DATE_EPOCH", "abc"), env={"SOURCE_DATE_EPOCH": "abc"}),
    Case("epoch-negative", lambda w: [], ("SOURCE_DATE_EPOCH",), env={"SOURCE_DATE_EPOCH": "-5"}),
    Case("epoch-fraction", lambda w: [], ("SOURCE_DATE_EPOCH",), env={"SOURCE_DATE_EPOCH": "1.5"}),
    Case("epoch-exponent", lambda w: [], ("SOURCE_DATE_EPOCH",), env={"SOURCE_DATE_EPOCH": "1e9"}),
    # inspect
    Case("inspect-missing", lambda w: [f"oci:{w.root}/nowhere"], ("nowhere",), command="inspect",
         outputs=False, adds=False),
    Case("inspect-malformed", lambda w: ["nowhere"], ("nowhere",), command="inspect",
         outputs=False, adds=False),
    Case("inspect-config-corrupt", lambda w: [f"oci:{w.base}:v1"], ("config", "corrupt"),
         command="inspect", outputs=False, adds=False, setup=lambda w: flip_byte(w.base_config(), 5)),
]


def _argv(case: Case, w: Work, quiet: bool) -> list[str]:
    argv = (["-q"] if quiet else []) + [case.command]
    if case.adds:
        argv += ["--add", f"{w.small}:/data/small.txt"]
    argv += [str(a) for a in case.args(w)]
    if case.outputs:
        argv += w.outputs()
    return argv


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, work: Work, ocibuild):
    if case.prefix and shutil.which(case.prefix[0]) is None:
        pytest.fail(f"{case.prefix[0]} is needed to run ocibuild without root's file access")
    if case.setup:
        case.setup(work)
    before = tree_state(work.root)
    for quiet in (False, True):
        r = ocibuild(*_argv(case, work, quiet), env=case.env, prefix=case.prefix)
        line = check_error(r, case.code, quiet)
        for needle in case.needles:
            assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
        assert tree_state(work.root) == before, f"{case.id} changed the work directory"


def test_bad_input_fails_the_same_with_and_without_quiet(work, ocibuild):
    """-q changes progress only, never the error."""
    args = ["assemble", "--add", f"{work.root}/nope:/x", *work.outputs()]
    loud, quiet = ocibuild(*args), ocibuild("-q", *args)
    assert loud.stderr.splitlines()[-1] == quiet.stderr.strip()


# --- a full disk ------------------------------------------------------------------------

@pytest.fixture
def big_args(static_binary, tmp_path) -> list[str]:
    """A few MB that do not compress: more than a 1 MB tmpfs holds."""
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(3 << 20))
    return ["--add", f"{static_binary.path}:/usr/local/bin/chaincode", "--add", f"{noise}:/opt/noise"]


def _no_space(r) -> None:
    line = check_error(r, 1, quiet=True)
    assert "no space left on device" in line.lower(), line


@ROOT
@pytest.mark.parametrize("kind", ["oci-archive", "oci"])
def test_full_disk_leaves_nothing(kind, tmpfs, ocibuild, big_args):
    mnt = tmpfs("1m")
    target = mnt / ("image.tar" if kind == "oci-archive" else "layout")
    r = ocibuild("-q", "assemble", *big_args, "--output", f"{kind}:{target}:v1")
    _no_space(r)
    assert os.listdir(mnt) == [], f"left on the full disk: {os.listdir(mnt)}"


@ROOT
def test_full_disk_keeps_existing_outputs(tmpfs, ocibuild, build_image, big_args, tmp_path):
    """Existing outputs on the full disk: an archive to replace and a layout to
    add to; both stay exactly as they were."""
    mnt = tmpfs("1m")
    small = tmp_path / "small.txt"
    small.write_text("small\n")
    build_image("--base", "scratch", "--add", f"{small}:/small.txt",
                "--output", f"oci-archive:{mnt / 'image.tar'}:v1", "--output", f"oci:{mnt / 'layout'}:v1")
    before = tree_state(mnt)
    r = ocibuild("-q", "assemble", *big_args,
                 "--output", f"oci-archive:{mnt / 'image.tar'}:v2", "--output", f"oci:{mnt / 'layout'}:v2")
    _no_space(r)
    assert tree_state(mnt) == before


@ROOT
def test_full_disk_writes_no_other_output(tmpfs, ocibuild, big_args, tmp_path):
    """One output on a full disk: the others of the same command (on a disk
    with room) are not written either."""
    mnt = tmpfs("1m")
    out = tmp_path / "out"
    out.mkdir()
    r = ocibuild("-q", "assemble", *big_args, "--output", f"oci:{out / 'layout'}:v1",
                 "--output", f"oci-archive:{out / 'image.tar'}", "--output", f"oci-archive:{mnt / 'a.tar'}")
    _no_space(r)
    assert os.listdir(out) == []
    assert os.listdir(mnt) == []


@ROOT
def test_full_disk_layout_at_the_mount_point(tmpfs, ocibuild, big_args):
    mnt = tmpfs("1m")
    r = ocibuild("-q", "assemble", *big_args, "--output", f"oci:{mnt}:v1")
    assert os.listdir(mnt) == [], f"left on the full disk: {os.listdir(mnt)}"
    _no_space(r)


# --- success, -q and --debug ----------------------------------------------------------

def test_success_prints_only_the_digest_on_stdout(ocibuild, static_binary, tmp_path):
    r = ocibuild("assemble", "--add", f"{static_binary.path}:/usr/local/bin/chaincode",
                 "--output", f"oci:{tmp_path / 'l'}:v1", "--output", f"oci-archive:{tmp_path / 'a.tar'}")
    assert r.returncode == 0, r.stderr
    assert DIGEST_LINE.fullmatch(r.stdout), repr(r.stdout)
    assert read_layout(tmp_path / "l", "v1").digest == r.stdout.strip()
    lines = r.stderr.splitlines()
    assert lines, "no progress on stderr"
    assert all(line.startswith("ocibuild: ") for line in lines), r.stderr
    assert any(str(tmp_path / "a.tar") in line for line in lines), "progress does not name the outputs"


def test_quiet_silences_progress(ocibuild, static_binary, tmp_path):
    args = ["assemble", "--add", f"{static_binary.path}:/usr/local/bin/chaincode"]
    loud = ocibuild(*args, "--output", f"oci:{tmp_path / 'loud'}")
    quiet = ocibuild("-q", *args, "--output", f"oci:{tmp_path / 'quiet'}")
    also_quiet = ocibuild("--quiet", *args, "--output", f"oci:{tmp_path / 'quiet2'}")
    assert loud.returncode == quiet.returncode == also_quiet.returncode == 0
    assert loud.stderr != ""
    assert quiet.stderr == also_quiet.stderr == ""
    assert DIGEST_LINE.fullmatch(quiet.stdout)
    assert quiet.stdout == loud.stdout == also_quiet.stdout      # same image either way


def test_debug_shows_a_traceback(ocibuild, tmp_path):
    r = ocibuild("--debug", "assemble", "--add", f"{tmp_path}/nope:/x", "--output", f"oci:{tmp_path / 'l'}")
    assert r.returncode != 0
    assert r.stdout == ""
    assert "Traceback (most recent call last)" in r.stderr
    assert "InputError" in r.stderr and "nope" in r.stderr
    assert not (tmp_path / "l").exists()


def test_help_and_version_are_not_errors(ocibuild):
    for args in (["--help"], ["assemble", "--help"], ["--version"]):
        r = ocibuild(*args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() and "error" not in r.stderr.lower()
