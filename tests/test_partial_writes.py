""""Nothing was written" must be true (issue 9, item 3, in part): two
outputs may not name one path; once one output is committed, a later
failure or interrupt says exactly which were written; an engine load that
was interrupted but landed is undone (the name is given back)."""

from __future__ import annotations

import os

import pytest
from conftest import unique_name

from ocibuild.errors import OutputError, PartialWriteError
from ocibuild.oci.assembly import Request
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.image import Image
from ocibuild.oci.model import Platform
from ocibuild.oci.reference import EngineRef, FileRef
from ocibuild.outputs import write_all
from ocibuild.outputs.files import ArchiveOutput
from ocibuild.transports import assemble_image


@pytest.mark.parametrize("first, second", [("oci-archive:{d}/x", "oci:{d}/x"),
                                           ("oci-archive:{d}/a.tar", "docker-archive:{d}/./a.tar:acme/a:1")])
def test_two_outputs_naming_one_path_are_refused(ocibuild, tmp_path, static_binary, first, second):
    r = ocibuild("-q", "assemble", "--add", f"{static_binary.path}:/cc", "--output", first.format(d=tmp_path),
                 "--output", second.format(d=tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "name the same path" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


class Refusing:
    """An output that stages fine and fails at commit (a full disk, a
    registry refusing the tag), or is interrupted there."""
    commit_first = False

    def __init__(self, ref, error: BaseException):
        self.ref, self.error = ref, error

    def check(self) -> None:
        pass

    def stage(self, image, work) -> None:
        pass

    def commit(self) -> None:
        raise self.error

    def abort(self) -> None:
        pass


def _image(work: WorkStore, static_binary) -> Image:
    from ocibuild.oci.assembly import Add
    return assemble_image(Request(adds=(Add(str(static_binary.path), "/cc"),), platform=Platform("linux", "amd64")),
                          work)


@pytest.mark.parametrize("error, interrupted", [
    (OutputError("cannot write oci:/x: No space left on device; nothing was written"), False),
    (KeyboardInterrupt(), True)])
def test_a_failure_after_a_commit_says_what_was_written(tmp_path, static_binary, error, interrupted):
    archive = ArchiveOutput(FileRef("oci-archive", str(tmp_path / "a.tar")), 0)
    late = Refusing(FileRef("oci", str(tmp_path / "lay")), error)
    with WorkStore(str(tmp_path)) as work, pytest.raises(PartialWriteError) as e:
        write_all([archive, late], _image(work, static_binary), work)
    assert e.value.interrupted is interrupted
    assert e.value.written == [f"oci-archive:{tmp_path}/a.tar"] and e.value.not_written == [f"oci:{tmp_path}/lay"]
    message = str(e.value)
    assert "nothing was written" not in message
    assert message.endswith(f"oci-archive:{tmp_path}/a.tar was written, oci:{tmp_path}/lay not")
    assert (tmp_path / "a.tar").exists()


def test_a_failure_before_any_commit_still_says_nothing_was_written(tmp_path, static_binary):
    late = Refusing(FileRef("oci", str(tmp_path / "lay")), OutputError("boom; nothing was written"))
    with WorkStore(str(tmp_path)) as work, pytest.raises(OutputError) as e:
        write_all([late], _image(work, static_binary), work)
    assert not isinstance(e.value, PartialWriteError) and str(e.value) == "boom; nothing was written"


@pytest.mark.engine
@pytest.mark.parametrize("existed", [True, False])
def test_an_interrupted_engine_load_that_landed_is_undone(require_engine, engine_cleanup, tmp_path, static_binary,
                                                          build_image, existed):
    """The interrupt arrives just after the daemon finished loading (the
    case where the image used to stay, tagged, after "nothing was written"):
    the name is given back to the image it named before, or removed."""
    from ocibuild.engines import Engine
    from ocibuild.outputs.engine import EngineOutput
    docker = require_engine("docker")
    name = engine_cleanup.image(docker, unique_name("undo") + ":1")
    before = None
    if existed:
        build_image("--add", f"{static_binary.path}:/old", "--label", "which=old", "--output", f"docker-daemon:{name}")
        before = docker.image_id(name)

    class LateInterrupt(Engine):
        def load(self, archive: str, name: str = "") -> None:
            super().load(archive, name)
            raise KeyboardInterrupt

    out = EngineOutput(EngineRef("docker-daemon", name), LateInterrupt("docker"))
    with WorkStore(str(tmp_path)) as work, pytest.raises(KeyboardInterrupt):
        write_all([out], _image(work, static_binary), work)
    assert (docker.image_id(name) if docker.has_image(name) else None) == before
