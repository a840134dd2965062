"""Untrusted code never reaches host files (issue 9, item 2, in part): a
module with a go.work, or a `replace` leading out of the module, is refused
for every builder before anything compiles; and GOWORK=off for every
build, so a go.work in a parent directory (a shared TMPDIR) cannot steer a
build. The host builder's sandbox is still to come."""

from __future__ import annotations

import os
import shutil
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
    assert r.returncode == 1 and r.stderr.splitlines()[-1].startswith("error: go.mod replaces a module"), r.stderr
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
