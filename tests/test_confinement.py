"""Untrusted code never reaches host files (issue 9, item 2, in part): a
module with a go.work, or a `replace` leading out of the module, is refused
for every builder before anything compiles; and GOWORK=off for every
build, so a go.work in a parent directory (a shared TMPDIR) cannot steer a
build. The host builder's sandbox is still to come."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, printed_digest

from ocibuild.errors import InputError
from ocibuild.gosource import GoBuild, check_confined, detect
from ocibuild.oci.model import Platform

GO_MOD = "module example.com/cc\n\ngo 1.19\n"


def _module(tmp_path: Path, gomod: str, **files: str) -> Path:
    root = tmp_path / "cc"
    shutil.copytree(FIXTURES / "chaincode", root)
    (root / "go.mod").write_text(gomod)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("replace", [
    "replace example.com/x => /etc",
    "replace example.com/x v1.0.0 => ../elsewhere",
    "replace example.com/x => ./inner/../../out",
    'replace (\n\texample.com/y => example.com/z v1.0.0\n\texample.com/x => "/abs/path" // comment\n)',
])
def test_a_replace_leading_out_of_the_module_is_refused(tmp_path, replace):
    src = detect(str(_module(tmp_path, GO_MOD + replace + "\n")))
    with pytest.raises(InputError, match=r"refused: replace outside the module"):
        check_confined(src)


@pytest.mark.parametrize("replace", [
    "replace example.com/x => ./inner",
    "replace example.com/x v1.0.0 => example.com/y v1.2.0",
    "// replace example.com/x => /etc",
    "replace (\n\texample.com/x => ./vendored/x\n)",
])
def test_replaces_inside_the_module_or_by_module_path_are_fine(tmp_path, replace):
    check_confined(detect(str(_module(tmp_path, GO_MOD + replace + "\n"))))


def test_a_go_work_at_the_module_root_is_refused(tmp_path):
    src = detect(str(_module(tmp_path, GO_MOD, **{"go.work": "go 1.19\n\nuse ../host\n"})))
    with pytest.raises(InputError, match=r"refused: go.work"):
        check_confined(src)


def test_every_build_runs_with_gowork_off():
    job = GoBuild(detect(str(FIXTURES / "chaincode")), Platform.host())
    assert job.env()["GOWORK"] == "off"


def test_the_cli_refuses_before_compiling(ocibuild, tmp_path):
    root = _module(tmp_path, GO_MOD + "replace example.com/x => /etc\n")
    out = tmp_path / "o.tar"
    r = ocibuild("build", str(root), "--builder", "host", "--output", f"oci-archive:{out}")
    assert r.returncode == 3 and r.stderr.splitlines()[-1].startswith("error: go.mod replaces a module"), r.stderr
    assert "compiling" not in r.stderr and not out.exists()


def test_a_go_work_in_tmpdir_does_not_steer_a_package_build(ocibuild, tmp_path):
    """Packages are extracted below TMPDIR; a go.work there (a shared TMPDIR
    on a CI runner) would otherwise be the workspace of every host build."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / "go.work").write_text("go 1.19\n\nuse ./nowhere\n")
    pkg = tmp_path / "cc.tar.gz"
    made = ocibuild("fabric", "package", str(FIXTURES / "chaincode"), "--label", "gw_1", "--output", str(pkg))
    assert made.returncode == 0, made.stderr
    with_work = ocibuild("-q", "build", str(pkg), "--builder", "host", "--output", f"oci-archive:{tmp_path / 'a.tar'}",
                         env={"TMPDIR": str(tmp)})
    without = ocibuild("-q", "build", str(pkg), "--builder", "host", "--output", f"oci-archive:{tmp_path / 'b.tar'}")
    assert printed_digest(with_work) == printed_digest(without)
    assert os.listdir(tmp) == ["go.work"]


# --- the host builder's sandbox -------------------------------------------------------

CGO_INCBIN = '''package main

/*
__asm__(".section .rodata\\n.incbin \\"{secret}\\"\\n.previous");
*/
import "C"

func main() {{}}
'''


def test_a_cgo_incbin_of_a_host_file_finds_nothing_in_the_sandbox(ocibuild, tmp_path):
    """With --cgo, a preamble can make the assembler read any host file into
    the binary. In the host builder's sandbox the host's files are not there."""
    secret = tmp_path / "secret" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$not-for-the-image$:19000:0:99999:7:::\n")
    root = tmp_path / "cc"
    root.mkdir()
    (root / "go.mod").write_text(GO_MOD)
    (root / "main.go").write_text(CGO_INCBIN.format(secret=secret))
    r = ocibuild("build", str(root), "--builder", "host", "--cgo", "--output", f"oci-archive:{tmp_path / 'o.tar'}")
    assert r.returncode == 4, r.stderr
    assert str(secret) in r.stderr and "file not found" in r.stderr.lower(), r.stderr   # the assembler's words
    assert not (tmp_path / "o.tar").exists()


def test_the_sandbox_sees_no_etc_and_no_network(tmp_path):
    """What a build can see, asked directly: the sandbox command line the
    host builder uses, run on a shell instead of go."""
    from ocibuild.builders.sandbox import bwrap, sandboxed
    work = tmp_path / "out"
    work.mkdir()
    probe = ("ls /etc 2>&1 | head -3; test -e /etc/shadow && echo shadow-visible; "
             "test -e /root && ls /root | head -1; cat /proc/net/dev | tail -n +3 | cut -d: -f1; "
             f"touch {work}/written && echo wrote; touch /usr/x 2>/dev/null && echo usr-writable; true")
    argv = sandboxed(["/bin/sh", "-c", probe], bwrap_path=bwrap(os.environ), go="/usr/bin/go",
                     readonly=[str(FIXTURES / "chaincode")], writable=[str(work)], cwd=str(work),
                     network=False)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    assert "shadow-visible" not in out and "usr-writable" not in out
    assert "No such file" in out or out.startswith("ls:"), out          # no /etc at all
    assert [line.strip() for line in out.splitlines() if line.strip() in ("lo", "eth0")] == ["lo"], out
    assert "wrote" in out and (work / "written").exists()
