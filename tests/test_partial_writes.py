""""Nothing was written" must be true (issue 9, item 3, in part): two
outputs may not name one path; once one output is committed, a later
failure or interrupt says exactly which were written; an engine load that
was interrupted but landed is undone (the name is given back)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import unique_name

from ocibuild.errors import OutputError, PartialWriteError
from ocibuild.oci.assembly import Request
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.image import Image
from ocibuild.oci.imageset import ImageSet
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
    assert r.returncode == 3 and r.stderr.startswith("error: ") and "name the same path" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


class Refusing:
    """An output that stages fine and fails at commit (a full disk, a
    registry refusing the tag), or is interrupted there."""
    commit_first = False
    single_platform = False
    written = 0

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
        def load(self, archive: str, name: str = "", scratch: str = "") -> None:
            super().load(archive, name, scratch)
            raise KeyboardInterrupt

    out = EngineOutput(EngineRef("docker-daemon", name), LateInterrupt("docker"))
    with WorkStore(str(tmp_path)) as work, pytest.raises(KeyboardInterrupt):
        write_all([out], _image(work, static_binary), work)
    assert (docker.image_id(name) if docker.has_image(name) else None) == before


def _blob_names(layout: Path) -> set[str]:
    return set(os.listdir(layout / "blobs" / "sha256"))


def test_a_layout_commit_that_fails_takes_its_new_blobs_out_again(tmp_path, static_binary, monkeypatch):
    """Issue 9, item 3: the index write of an existing layout fails (a full
    disk, no inodes): the blobs this run moved in are removed, the index
    is as it was."""
    import ocibuild.oci.layout as layout_module
    from ocibuild.transports import open_image, open_output
    layout = tmp_path / "lay"
    with WorkStore(str(tmp_path)) as work:
        old = open_output(f"oci:{layout}:old", 0)
        write_all([old], _image(work, static_binary), work)
    before_blobs, before_index = _blob_names(layout), (layout / "index.json").read_bytes()
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(1 << 20))

    def full_disk(path, data, mode=0o644):
        raise OSError(28, "No space left on device", path)
    with WorkStore(str(tmp_path)) as work:
        from ocibuild.oci.assembly import Add
        image = assemble_image(Request(adds=(Add(str(noise), "/noise"),), platform=Platform("linux", "amd64")), work)
        out = open_output(f"oci:{layout}:new", 0)
        out.stage(ImageSet((image,)), work)
        monkeypatch.setattr(layout_module, "atomic_write", full_disk)
        with pytest.raises(OSError):
            out.commit()
        out.abort()
    monkeypatch.undo()
    assert _blob_names(layout) == before_blobs and (layout / "index.json").read_bytes() == before_index
    assert open_image(f"oci:{layout}:old").digest


def test_a_blob_taken_away_between_stage_and_commit_is_put_back(tmp_path, static_binary):
    """A blob already in the layout is not staged again; if it is gone by the
    commit (another writer's failed commit took its own copy out), the
    commit puts it back under the lock, so the image is complete."""
    from ocibuild.oci.layout import blob_name
    from ocibuild.transports import open_image, open_output
    layout = tmp_path / "lay"
    with WorkStore(str(tmp_path)) as work:
        image = _image(work, static_binary)
        first = open_output(f"oci:{layout}:a", 0)
        write_all([first], image, work)
        second = open_output(f"oci:{layout}:b", 0)
        second.stage(ImageSet((image,)), work)
        victim = layout / blob_name(image.layers[-1].descriptor.digest)
        victim.unlink()
        second.commit()
        second.abort()
        want = image.layers[-1].read()
    assert victim.exists()
    assert open_image(f"oci:{layout}:b").layers[-1].read() == want
