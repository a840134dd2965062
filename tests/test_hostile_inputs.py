"""Hostile input never gives a traceback (issue 9, items 5 and 7): base
images whose JSON has the wrong shape or depth, text options that are not
UTF-8, numbers that are not ASCII digits or out of range, references with a
trailing newline — each is one `error:` line and exit 1, and nothing is
written. A last-resort handler turns anything unforeseen into one line too."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD, OCIBUILD

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _one_error_line(r: subprocess.CompletedProcess, code: int = 3) -> str:
    """Exit `code` (3, bad input, unless said), one `error:` line, no traceback."""
    err = r.stderr.decode("utf-8", "replace") if isinstance(r.stderr, bytes) else r.stderr
    assert r.returncode == code, f"exit {r.returncode}: {err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (r.stdout or b"").strip(), r.stdout
    return lines[0]


def _run(*args, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`ocibuild ARGS` (bytes allowed: arguments that are not UTF-8); -q for
    assemble, so stderr holds only the error."""
    if args and args[0] == "assemble":
        args = ("-q", *args)
    full = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    full.update(env or {})
    return subprocess.run([os.fsencode(str(OCIBUILD)), *[a if isinstance(a, bytes) else str(a).encode(
        "utf-8", "surrogateescape") for a in args]], capture_output=True, env=full, cwd=cwd, timeout=HANG_GUARD)


# --- base images with documents of the wrong shape ---------------------------------

class Layout:
    """A hand-made OCI layout whose documents a test can spoil."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes | dict | list, media_type: str) -> dict:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        hex_ = hashlib.sha256(raw).hexdigest()
        (self.root / "blobs" / "sha256" / hex_).write_bytes(raw)
        return {"mediaType": media_type, "digest": f"sha256:{hex_}", "size": len(raw)}

    def image(self, config=None, manifest_extra=None) -> dict:
        cfg = config if config is not None else {"architecture": "amd64", "os": "linux", "config": {},
                                                 "rootfs": {"type": "layers", "diff_ids": []}}
        man = {"schemaVersion": 2, "mediaType": MANIFEST, "config": self.blob(cfg, CONFIG), "layers": []}
        man.update(manifest_extra or {})
        return self.blob(man, MANIFEST)

    def index(self, doc: bytes | dict) -> None:
        (self.root / "index.json").write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())


def _good_config(**change) -> dict:
    cfg = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    cfg.update(change)
    return cfg


def _index_of(desc: dict) -> dict:
    return {"schemaVersion": 2, "manifests": [desc]}


SPOILED = {
    "manifests-not-descriptors": lambda lay: lay.index({"schemaVersion": 2, "manifests": [1]}),
    "manifests-not-a-list": lambda lay: lay.index({"schemaVersion": 2, "manifests": "x"}),
    "descriptor-without-digest": lambda lay: lay.index({"manifests": [{"mediaType": MANIFEST, "size": 1}]}),
    "descriptor-string-size": lambda lay: lay.index({"manifests": [{**lay.image(), "size": "12"}]}),
    "descriptor-platform-string": lambda lay: lay.index({"manifests": [{**lay.image(), "platform": "linux"}]}),
    "index-100000-deep": lambda lay: lay.index(b'{"manifests":' + b"[" * 100000 + b"]" * 100000 + b"}"),
    "manifest-without-config": lambda lay: lay.index(_index_of(lay.image(manifest_extra={"config": None}))),
    "manifest-config-a-string": lambda lay: lay.index(_index_of(lay.image(manifest_extra={"config": "x"}))),
    "manifest-layers-not-a-list": lambda lay: lay.index(_index_of(lay.image(manifest_extra={"layers": {}}))),
    "config-rootfs-a-list": lambda lay: lay.index(_index_of(lay.image(_good_config(rootfs=[])))),
    "config-config-a-list": lambda lay: lay.index(_index_of(lay.image(_good_config(config=[])))),
    "config-labels-a-list": lambda lay: lay.index(_index_of(lay.image(_good_config(config={"Labels": ["a"]})))),
    "config-env-a-string": lambda lay: lay.index(_index_of(lay.image(_good_config(config={"Env": "PATH=/x"})))),
    "config-diff-ids-not-digests": lambda lay: lay.index(_index_of(lay.image(
        _good_config(rootfs={"type": "layers", "diff_ids": [7]})))),
    "config-os-a-number": lambda lay: lay.index(_index_of(lay.image(_good_config(os=1)))),
}


def _nested_index(lay: Layout, depth: int) -> None:
    desc = lay.image()
    for _ in range(depth):
        desc = lay.blob({"schemaVersion": 2, "mediaType": INDEX,
                         "manifests": [{**desc, "platform": {"os": "linux", "architecture": "amd64"}}]}, INDEX)
    lay.index(_index_of(desc))


@pytest.mark.parametrize("spoil", [*SPOILED, "index-nested-50-deep"])
def test_a_base_with_documents_of_the_wrong_shape_is_one_error(tmp_path, static_binary, spoil):
    lay = Layout(tmp_path / "base")
    if spoil == "index-nested-50-deep":
        _nested_index(lay, 50)
    else:
        SPOILED[spoil](lay)
    out = tmp_path / "out.tar"
    r = _run("assemble", "--base", f"oci:{lay.root}", "--add", f"{static_binary.path}:/cc",
             "--output", f"oci-archive:{out}")
    line = _one_error_line(r)
    assert str(lay.root) in line or "index" in line or "manifest" in line, line
    assert not out.exists()
    r = _run("inspect", f"oci:{lay.root}")
    _one_error_line(r)


def test_the_shape_checks_leave_a_well_formed_base_alone(tmp_path, static_binary):
    lay = Layout(tmp_path / "base")
    lay.index(_index_of(lay.image(_good_config(config={"Env": ["A=1"], "Labels": {"k": "v"}}))))
    r = _run("assemble", "--base", f"oci:{lay.root}", "--add", f"{static_binary.path}:/cc",
             "--output", f"oci:{tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr


def test_a_nested_index_within_bounds_is_read(tmp_path):
    lay = Layout(tmp_path / "base")
    _nested_index(lay, 2)
    r = _run("inspect", "--platform", "linux/amd64", f"oci:{lay.root}")
    assert r.returncode == 0, r.stderr


# --- option values ---------------------------------------------------------------------

BAD_OPTIONS = {
    "label-not-utf8": ([b"--label", b"k=\xff"], "--label"),
    "env-not-utf8": ([b"--env", b"K=\xfe\xff"], "--env"),
    "annotation-key-not-utf8": ([b"--annotation", b"\xff=v"], "--annotation"),
    "user-not-utf8": ([b"--user", b"\xff"], "--user"),
    "workdir-not-utf8": ([b"--workdir", b"/\xff"], "--workdir"),
    "cmd-not-utf8": ([b"--cmd", b"run \xff"], "--cmd"),
    "entrypoint-json-lone-surrogate": ([b"--entrypoint", b'["\\udcff"]'], "--entrypoint"),
    "cmd-json-deep": ([b"--cmd", b"[" * 30000 + b"]" * 30000], "--cmd"),
    "chown-too-big": (["--chown", "4294967296:0"], "--chown"),
    "chown-arabic-digits": (["--chown", "\u0661\u0662\u0663:0"], "--chown"),
    "env-key-newline": (["--env", "K\n=v"], "--env"),
    "platform-newline": (["--platform", "linux/amd64\n"], "platform"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_option_values_are_one_error(tmp_path, static_binary, case):
    args, names = BAD_OPTIONS[case]
    out = tmp_path / "out.tar"
    r = _run("assemble", "--add", f"{static_binary.path}:/cc", *args, "--output", f"oci-archive:{out}")
    assert names in _one_error_line(r)
    assert not out.exists()


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "\u0661\u0662", "12.5", "-1", "253402300800"])
def test_source_date_epoch_takes_ascii_digits_in_range_only(tmp_path, static_binary, value):
    r = _run("assemble", "--add", f"{static_binary.path}:/cc", "--output", f"oci-archive:{tmp_path / 'o.tar'}",
             env={"SOURCE_DATE_EPOCH": value})
    line = _one_error_line(r)
    assert "SOURCE_DATE_EPOCH" in line and len(line) < 300, line


@pytest.mark.parametrize("ref", ["docker://localhost:5000/r:t1\n", "oci:{d}/lay:ref\n",
                                 "docker-archive:{d}/a.tar:rel/x:t1\n", "docker-daemon:UPPER/x:1",
                                 "containers-storage:x/y:\n"])
def test_references_must_match_whole(tmp_path, static_binary, ref):
    r = _run("assemble", "--add", f"{static_binary.path}:/cc", "--output", ref.format(d=tmp_path))
    _one_error_line(r, 6 if ref.startswith("docker-daemon:") else 3)   # that name docker itself refuses
    assert os.listdir(tmp_path) == []


# --- the safety net ----------------------------------------------------------------------

def test_an_unforeseen_failure_is_one_line_not_a_traceback(tmp_path):
    """Something ocibuild did not expect (here: a bug planted in the output
    dispatch) is reported as an internal error on one line; --debug shows it."""
    code = ("import sys, ocibuild.cli as c\n"
            "def boom(*a, **k):\n    raise RuntimeError('planted\\nbug')\n"
            "c.open_output = boom\n"
            "c.main(sys.argv[1:])\n")
    args = ["assemble", "--output", f"oci:{tmp_path / 'x'}"]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=HANG_GUARD)
    line = _one_error_line(r, 1)
    assert line == "error: internal error: RuntimeError: planted bug (rerun with --debug and report it)"
    r = subprocess.run([sys.executable, "-c", code, "--debug", *args], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    assert r.returncode != 0 and "Traceback" in r.stderr and "RuntimeError: planted" in r.stderr


@pytest.mark.root
def test_a_full_work_directory_is_one_error(tmpfs, tmp_path, static_binary):
    """TMPDIR (the work store) full while the layer is written: ENOSPC, one line."""
    work = tmpfs("1m")
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out"
    out.mkdir()
    r = _run("assemble", "--add", f"{noise}:/opt/noise", "--compression", "none",
             "--output", f"oci-archive:{out / 'o.tar'}", env={"TMPDIR": str(work)})
    line = _one_error_line(r, 1)                   # the machine refused (an OSError): 1
    assert "no space left on device" in line.lower(), line
    assert os.listdir(out) == [] and os.listdir(work) == []


# --- bounded, non-following reads of foreign images (issue 9, item 6) -------------------

def _layout_with_image(tmp_path: Path) -> tuple[Layout, dict, dict]:
    lay = Layout(tmp_path / "base")
    man_desc = lay.image()
    lay.index(_index_of(man_desc))
    manifest = json.loads((lay.root / "blobs" / "sha256" / man_desc["digest"][7:]).read_bytes())
    return lay, man_desc, manifest


def _blob_path(lay: Layout, desc: dict) -> Path:
    return lay.root / "blobs" / "sha256" / desc["digest"][7:]


SECRET = b"root:$6$very-secret-hash:19000:0:99999:7:::\n"


def _swap_for_symlink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


FOREIGN = {
    # a config blob that is a symlink to a secret: never read, never echoed
    "config-symlink-to-a-secret": lambda lay, man, secret: _swap_for_symlink(
        _blob_path(lay, man["config"]), secret),
    "index-json-symlink-to-a-secret": lambda lay, man, secret: _swap_for_symlink(lay.root / "index.json", secret),
    "manifest-symlink-to-dev-zero": lambda lay, man, secret: _swap_for_symlink(
        _blob_path(lay, json.loads((lay.root / "index.json").read_text())["manifests"][0]), Path("/dev/zero")),
    "config-a-fifo": lambda lay, man, secret: (_blob_path(lay, man["config"]).unlink(),
                                               os.mkfifo(_blob_path(lay, man["config"]))),
    "blobs-dir-a-symlink": lambda lay, man, secret: (
        os.rename(lay.root / "blobs", lay.root.parent / "elsewhere"),
        (lay.root / "blobs").symlink_to(lay.root.parent / "elsewhere")),
    "index-json-huge": lambda lay, man, secret: (lay.root / "index.json").write_bytes(
        b'{"manifests":[' + b" " * (5 << 20) + b"]}"),
    "manifest-claims-10-gb": lambda lay, man, secret: lay.index(_index_of({**lay.image(), "size": 10 << 30})),
}


REFUSED_BECAUSE = {"config-symlink-to-a-secret": "is a symlink", "index-json-symlink-to-a-secret": "is a symlink",
                   "manifest-symlink-to-dev-zero": "is a symlink", "config-a-fifo": "is a FIFO",
                   "blobs-dir-a-symlink": "is a symlink", "index-json-huge": "larger than",
                   "manifest-claims-10-gb": "claims"}


@pytest.mark.parametrize("case", FOREIGN)
def test_foreign_layouts_are_read_bounded_and_never_through_links(tmp_path, case):
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    lay, _, manifest = _layout_with_image(tmp_path)
    FOREIGN[case](lay, manifest, secret)
    out = tmp_path / "out.tar"
    r = _run("assemble", "--base", f"oci:{lay.root}", "--output", f"oci-archive:{out}")
    line = _one_error_line(r)
    assert REFUSED_BECAUSE[case] in line, line          # refused before reading, for what it is
    assert b"secret" not in r.stderr and "hashes to" not in line, line
    assert not out.exists()


def test_an_archive_base_that_is_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "base.tar"
    os.mkfifo(fifo)
    r = _run("inspect", f"oci-archive:{fifo}")       # HANG_GUARD would catch a hang; it is refused at once
    assert "not a regular file" in _one_error_line(r)


def test_an_output_layout_whose_blobs_is_a_symlink_is_refused(tmp_path, static_binary):
    target = tmp_path / "layout"
    r = _run("assemble", "--add", f"{static_binary.path}:/cc", "--output", f"oci:{target}:a")
    assert r.returncode == 0, r.stderr
    os.rename(target / "blobs", tmp_path / "elsewhere")
    (target / "blobs").symlink_to(tmp_path / "elsewhere")
    before = sorted(os.listdir(tmp_path / "elsewhere" / "sha256"))
    r = _run("assemble", "--add", f"{tmp_path / 'layout' / 'index.json'}:/other", "--output", f"oci:{target}:b")
    assert "is a symlink" in _one_error_line(r, 7)
    assert sorted(os.listdir(tmp_path / "elsewhere" / "sha256")) == before


def test_ctrl_c_while_the_cli_loads_is_no_traceback():
    """An interrupt during start-up imports (the CLI module loading) is
    reported like any other interrupt."""
    code = ("import sys\n"
            "class Interrupting:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ocibuild.cli':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupting())\n"
            "from ocibuild.__main__ import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert r.returncode == 130 and r.stderr == "error: interrupted; nothing was written\n", r.stderr


# --- smaller ones (issue 9, item 9) -------------------------------------------------------

LAYER = "application/vnd.oci.image.layer.v1.tar"


def _tar(*members: tuple[str, str]) -> bytes:
    """An uncompressed layer: (name, "file"|"dir") members."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size = 1
                t.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


def _layered_base(tmp_path: Path, *layers: bytes) -> Path:
    lay = Layout(tmp_path / "base")
    descs = [lay.blob(data, LAYER) for data in layers]
    cfg = _good_config(rootfs={"type": "layers", "diff_ids": [d["digest"] for d in descs]})
    man = {"schemaVersion": 2, "mediaType": MANIFEST, "config": lay.blob(cfg, CONFIG), "layers": descs}
    lay.index(_index_of(lay.blob(man, MANIFEST)))
    return lay.root


@pytest.mark.parametrize("second", [
    _tar(("etc", "dir"), ("etc/.wh.foo", "file")),                 # foo whited out
    _tar(("etc", "dir"), ("etc/.wh..wh..opq", "file")),            # etc made opaque
])
def test_whiteouts_in_base_layers_are_honoured(tmp_path, static_binary, second):
    """/etc/foo is a file in the first layer and gone after the second: a
    directory may now be added there, as a runtime would see it."""
    base = _layered_base(tmp_path, _tar(("etc", "dir"), ("etc/foo", "file")), second)
    r = _run("assemble", "--base", f"oci:{base}", "--add", f"{static_binary.path}:/etc/foo/cc",
             "--output", f"oci:{tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr


def test_without_a_whiteout_the_base_file_still_blocks(tmp_path, static_binary):
    base = _layered_base(tmp_path, _tar(("etc", "dir"), ("etc/foo", "file")), _tar(("etc", "dir")))
    r = _run("assemble", "--base", f"oci:{base}", "--add", f"{static_binary.path}:/etc/foo/cc",
             "--output", f"oci:{tmp_path / 'out'}")
    assert "/etc/foo is a file in the base image" in _one_error_line(r)


@pytest.mark.root
def test_a_full_disk_under_a_package_names_the_output(tmpfs, tmp_path):
    """ENOSPC while `fabric package` writes: the message names the output
    (where space ran out), not the source file being read."""
    src = tmp_path / "cc"
    (src).mkdir()
    (src / "go.mod").write_text("module example.com/cc\n\ngo 1.19\n")
    (src / "main.go").write_text("package main\n\nfunc main() {}\n")
    (src / "noise.go").write_bytes(b"package main\n\n// " + os.urandom(3 << 20).hex().encode() + b"\n")
    out = tmpfs("1m") / "cc.tar.gz"
    r = _run("fabric", "package", str(src), "--label", "cc_1", "--output", str(out))
    line = _one_error_line(r, 7)
    assert str(out) in line and "no space left on device" in line.lower() and "noise.go" not in line, line
    assert os.listdir(out.parent) == []
