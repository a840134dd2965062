"""The command line's contract for bad input and failing outputs.

For every bad input: the exit status of its kind of failure (3 bad input,
5 registry, 7 an output that cannot be written; 2 for usage errors click
detects, which name the subcommand's --help), nothing on stdout, no
traceback, and exactly ONE `error: ` line on stderr — the only line with -q
(before or after the subcommand), the last one after `ocibuild: ` progress
lines without it — and no output file or layout created or changed (the whole work
directory, including existing outputs named in the same command, is compared
before and after).

On success: stdout is exactly one line `sha256:<64 hex>`, progress goes to
stderr (each phase with its duration), -q silences it; --debug turns an
error into a traceback. -q and --debug work before the subcommand or after
it. Every class of failure exits with its own status, through the real CLI;
shell completion is click's and works through ocibuild's main()."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
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
    code: int = 3                           # bad input, the usual case
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
    Case("base-bad-transport", lambda w: ["--base", "docker://localhost/x:1"], ("docker://",), code=5),
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
         ("localhost:5000", "refused"), code=5),
    Case("output-dir-not-a-layout", lambda w: ["--output", f"oci:{w.plain_dir}"],
         ("plain", "not an oci layout"), code=7),
    Case("output-layout-is-a-file", lambda w: ["--output", f"oci:{w.small}"], ("small.txt", "not a directory"),
         code=7),
    Case("output-archive-is-a-directory", lambda w: ["--output", f"oci-archive:{w.plain_dir}"],
         ("plain", "is a directory"), code=7),
    Case("output-archive-parent-missing", lambda w: ["--output", f"oci-archive:{w.root}/no/such/a.tar"],
         ("no/such", "does not exist"), code=7),
    Case("output-layout-parent-missing", lambda w: ["--output", f"oci:{w.root}/no/such/layout"],
         ("no/such", "does not exist"), code=7),
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
    Case("unknown-option", lambda w: ["--frobnicate"], ("--frobnicate", "(see ocibuild assemble --help)"), code=2),
    Case("unknown-command", lambda w: [], ("frobnicate", "(see ocibuild --help)"), code=2, command="frobnicate",
         outputs=False, adds=False),
    Case("option-missing-value", lambda w: ["--base"], ("--base", "(see ocibuild assemble --help)"), code=2,
         outputs=False),
    Case("inspect-unknown-option", lambda w: ["oci:x", "--frobnicate"], ("(see ocibuild inspect --help)",), code=2,
         command="inspect", outputs=False, adds=False),
    Case("authfile-missing", lambda w: ["--authfile", f"{w.root}/nowhere.json",
                                        "--output", "docker://localhost:5000/x:1"],
         ("--authfile", "nowhere.json", "does not exist")),
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


def _argv(case: Case, w: Work, quiet: str) -> list[str]:
    """The command line; `quiet`: "" (progress shown), "before" the
    subcommand (`-q assemble`) or "after" it (`assemble -q`)."""
    argv = (["-q"] if quiet == "before" else []) + [case.command] + (["-q"] if quiet == "after" else [])
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
    for quiet in ("", "before", "after"):
        r = ocibuild(*_argv(case, work, quiet), env=case.env, prefix=case.prefix)
        line = check_error(r, case.code, bool(quiet))
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
    line = check_error(r, 7, quiet=True)
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


# --- exit statuses: one per kind of failure, through the real CLI ---------------------

def _silent_registry() -> socket.socket:
    """A listener on 127.0.0.1 that never answers (connections wait in its
    backlog): a registry push to it hangs until ocibuild is stopped."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def _go_module(root: Path, main_go: str) -> Path:
    src = root / "cc"
    src.mkdir()
    (src / "go.mod").write_text("module example.com/cc\n\ngo 1.19\n")
    (src / "main.go").write_text(main_go)
    return src


def test_input_error_exits_3(ocibuild, tmp_path):
    r = ocibuild("-q", "assemble", "--add", f"{tmp_path}/nope:/x", "--output", f"oci:{tmp_path / 'l'}")
    assert "nope" in check_error(r, 3, quiet=True)


def test_package_error_exits_3(ocibuild, tmp_path):
    bad = tmp_path / "cc.tar.gz"
    bad.write_bytes(b"PK\x03\x04 a zip file, no chaincode package")
    r = ocibuild("-q", "build", "--builder", "host", str(bad), "--output", f"oci:{tmp_path / 'l'}")
    assert "not a chaincode package" in check_error(r, 3, quiet=True)


def test_corrupt_blob_of_a_base_exits_3(ocibuild, work):
    flip_byte(work.base_layer())
    r = ocibuild("-q", "assemble", "--base", f"oci:{work.base}:v1", "--add", f"{work.small}:/s",
                 "--output", f"oci:{work.root / 'out'}")
    assert "corrupt" in check_error(r, 3, quiet=True)


def test_compile_error_exits_4(ocibuild, tmp_path):
    src = _go_module(tmp_path, "package main\n\nfunc main() { x := 1 }\n")
    r = ocibuild("-q", "build", "--builder", "host", str(src), "--output", f"oci:{tmp_path / 'l'}")
    assert "go build failed on the host" in check_error(r, 4, quiet=True)


def test_registry_error_exits_5(ocibuild, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # closed again: nothing listens there
    (tmp_path / "f").write_text("f\n")
    r = ocibuild("-q", "assemble", "--add", f"{tmp_path / 'f'}:/f", "--output", f"docker://127.0.0.1:{port}/x:1")
    assert "refused" in check_error(r, 5, quiet=True)


def test_engine_error_exits_6(ocibuild, tmp_path):
    """No podman where ocibuild looks for it (PATH): the engine is missing."""
    (tmp_path / "f").write_text("f\n")
    r = ocibuild("-q", "assemble", "--add", f"{tmp_path / 'f'}:/f", "--output", "containers-storage:ocibuild-test/x:1",
                 env={"PATH": str(tmp_path / "empty-bin")})
    assert "podman" in check_error(r, 6, quiet=True)


def test_output_error_exits_7(ocibuild, tmp_path):
    (tmp_path / "f").write_text("f\n")
    r = ocibuild("-q", "assemble", "--add", f"{tmp_path / 'f'}:/f", "--output", f"oci-archive:{tmp_path}/no/a.tar")
    assert "does not exist" in check_error(r, 7, quiet=True)


def test_interrupted_exits_130(tmp_path):
    """SIGTERM while a push waits for a registry that does not answer."""
    from conftest import OCIBUILD
    (tmp_path / "f").write_text("f\n")
    with _silent_registry() as reg:
        port = reg.getsockname()[1]
        proc = subprocess.Popen([str(OCIBUILD), "-q", "assemble", "--add", f"{tmp_path / 'f'}:/f",
                                 "--output", f"oci:{tmp_path / 'l'}", "--output", f"docker://127.0.0.1:{port}/x:1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # (click ends the interrupted line first: one empty line before the error line)
    assert out == "" and err.lstrip("\n") == "error: interrupted; nothing was written\n", err
    assert not (tmp_path / "l").exists()


def test_usage_error_exits_2_and_names_the_subcommands_help(ocibuild, tmp_path):
    for argv, where in ((["build", "--frobnicate"], "ocibuild build --help"),
                        (["fabric", "package", "--frobnicate"], "ocibuild fabric package --help"),
                        (["fabric", "frobnicate"], "ocibuild fabric --help"),
                        (["-q", "inspect"], "ocibuild inspect --help"),
                        (["--frobnicate"], "ocibuild --help")):
        r = ocibuild(*argv)
        line = check_error(r, 2, quiet=True)
        assert line.endswith(f" (see {where})"), line
    r = ocibuild("build", "--frobnicate")
    assert r.stderr == "error: No such option '--frobnicate' (see ocibuild build --help)\n", r.stderr


# --- -q and --debug after the subcommand ----------------------------------------------------

def test_quiet_and_debug_after_the_subcommand(ocibuild, static_binary, tmp_path):
    add = ["--add", f"{static_binary.path}:/usr/local/bin/chaincode"]
    before = ocibuild("-q", "assemble", *add, "--output", f"oci:{tmp_path / 'a'}")
    after = ocibuild("assemble", "-q", *add, "--output", f"oci:{tmp_path / 'b'}")
    last = ocibuild("assemble", *add, "--output", f"oci:{tmp_path / 'c'}", "--quiet")
    assert before.returncode == after.returncode == last.returncode == 0, (after.stderr, last.stderr)
    assert before.stderr == after.stderr == last.stderr == ""
    assert DIGEST_LINE.fullmatch(after.stdout) and before.stdout == after.stdout == last.stdout
    # --debug after the subcommand: a traceback; with -q before it, still a traceback and no progress.
    for argv in (["assemble", "--debug"], ["-q", "assemble", "--debug"], ["--debug", "assemble", "-q"]):
        r = ocibuild(*argv, "--add", f"{tmp_path}/nope:/x", "--output", f"oci:{tmp_path / 'd'}")
        assert r.returncode != 0 and r.stdout == ""
        assert "Traceback (most recent call last)" in r.stderr and "InputError" in r.stderr, r.stderr
        assert ("ocibuild: " in r.stderr) == ("-q" not in argv), r.stderr
    assert not (tmp_path / "d").exists()


def test_quiet_and_debug_on_fabric_and_inspect(ocibuild, tmp_path, prebuilt):
    args = ["--type", "ccaas", "--label", "cc_1", "--address", "cc:9999"]
    a = ocibuild("fabric", "package", "-q", *args, "--output", f"{tmp_path / 'a.tar.gz'}")
    b = ocibuild("-q", "fabric", "package", *args, "--output", f"{tmp_path / 'b.tar.gz'}")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and a.stderr == b.stderr == "", a.stderr
    r = ocibuild("inspect", "--debug", f"oci:{tmp_path}/nowhere")
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr, r.stderr
    r = ocibuild("inspect", "-q", f"oci:{prebuilt / 'layout'}:v1")
    assert r.returncode == 0 and r.stdout.startswith("digest ") and r.stderr == "", r.stderr


# --- progress: each phase with its duration ------------------------------------------------

PHASE_DONE = re.compile(r"ocibuild: (.+): done in \d+\.\d s")


def test_each_phase_says_how_long_it_took(ocibuild, static_binary, tmp_path):
    r = ocibuild("assemble", "--add", f"{static_binary.path}:/usr/local/bin/chaincode",
                 "--output", f"oci:{tmp_path / 'l'}")
    assert r.returncode == 0 and DIGEST_LINE.fullmatch(r.stdout), r
    lines = r.stderr.splitlines()
    done = [m.group(1) for m in map(PHASE_DONE.fullmatch, lines) if m]
    assert "assembling" in done and "writing 1 output(s)" in done, r.stderr
    for title in done:                      # announced first, timed when it ends
        assert lines.index(f"ocibuild: {title}") < lines.index(next(x for x in lines if x.startswith(
            f"ocibuild: {title}: done in "))), r.stderr


def test_phases_on_a_terminal_get_a_tick_and_their_duration(static_binary, tmp_path):
    """stderr a terminal (rich's display): `✓ assembling (0.1 s)`; stdout,
    a pipe, is still only the digest."""
    from conftest import OCIBUILD
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    env.pop("SOURCE_DATE_EPOCH", None)
    proc = subprocess.Popen([str(OCIBUILD), "assemble", "--add", f"{static_binary.path}:/usr/local/bin/chaincode",
                             "--output", f"oci:{tmp_path / 'l'}"], stdout=subprocess.PIPE, stderr=follower,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:                     # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    out = proc.stdout.read().decode()
    assert proc.wait(60) == 0, seen
    assert DIGEST_LINE.fullmatch(out), out
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen.decode("utf-8", "replace"))
    assert re.search(r"✓ assembling \(\d+\.\d s\)", text), text
    assert re.search(r"✓ writing 1 output\(s\) \(\d+\.\d s\)", text), text


def test_quiet_shows_no_phase(ocibuild, static_binary, tmp_path):
    r = ocibuild("assemble", "-q", "--add", f"{static_binary.path}:/usr/local/bin/chaincode",
                 "--output", f"oci:{tmp_path / 'l'}")
    assert r.returncode == 0 and r.stderr == "" and DIGEST_LINE.fullmatch(r.stdout)


# --- help texts ------------------------------------------------------------------------------

def test_build_help_says_the_default_user_is_chaincode_500(ocibuild):
    r = ocibuild("build", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "build: chaincode, 500:500" in text, text
    assert "65532:65532 (the default)" not in text
    for flag in ("--debug", "--quiet", "--authfile"):
        assert flag in text, flag


def test_every_command_takes_quiet_and_debug(ocibuild):
    for argv in (["assemble"], ["build"], ["inspect"], ["fabric"], ["fabric", "package"], ["fabric", "deps"],
                 ["fabric", "package-id"], ["fabric", "image-name"], ["fabric", "install-builder"]):
        r = ocibuild(*argv, "--help")
        assert r.returncode == 0 and "--debug" in r.stdout and "-q, --quiet" in r.stdout, (argv, r.stdout)


# --- shell completion ------------------------------------------------------------------------

def test_bash_completion_script_is_printed(ocibuild):
    r = ocibuild(env={"_OCIBUILD_COMPLETE": "bash_source"})
    assert r.returncode == 0, r.stderr
    assert "_ocibuild_completion()" in r.stdout and "complete " in r.stdout, r.stdout
    assert r.stderr == ""


def test_bash_completion_completes_commands_and_options(ocibuild):
    r = ocibuild(env={"_OCIBUILD_COMPLETE": "bash_complete", "COMP_WORDS": "ocibuild ass", "COMP_CWORD": "1"})
    assert r.returncode == 0 and "plain,assemble" in r.stdout.splitlines(), (r.stdout, r.stderr)
    r = ocibuild(env={"_OCIBUILD_COMPLETE": "bash_complete", "COMP_WORDS": "ocibuild build --auth",
                      "COMP_CWORD": "2"})
    assert r.returncode == 0 and "plain,--authfile" in r.stdout.splitlines(), (r.stdout, r.stderr)
