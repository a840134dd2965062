"""The one engine wrapper (ocibuild.engines) and the builder-image loader:
what a user sees when an engine is missing, that an interrupted load leaves
no engine client running, and that an archive's image ID is found without
reading its layers. A stand-in `docker` on PATH plays the client where the
real one cannot show the case (not installed; a load that hangs)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import processes_mentioning, wait_for

from ocibuild.errors import EngineError
from ocibuild.oci.digest import sha256_digest
from ocibuild.oci.readers import archive_identity, open_image
from ocibuild.oci.reference import FileRef


def _without(tool: str) -> str:
    """PATH with every directory holding `tool` left out."""
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not os.path.exists(os.path.join(d, tool)))


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_missing_engine_is_said_once(engine, monkeypatch):
    from ocibuild.engines import Engine
    monkeypatch.setenv("PATH", _without(engine))
    with pytest.raises(EngineError) as e:
        Engine(engine).image_id("ocibuild-test/x:1")
    message = str(e.value)
    assert message.startswith(f"{engine} is not installed; ")
    assert message.count("scripts/setup") == 1, message


def test_an_interrupted_load_leaves_no_client_running(tmp_path):
    """python-on-whales streams `docker image load` through a Popen it does
    not end on an exception; the wrapper stops it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"          # its command line names its path: the marker
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    fake.chmod(0o755)
    marker = str(fake)
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"")
    code = textwrap.dedent(f"""
        import signal, sys
        def stop(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, stop)
        from ocibuild.engines import Engine
        print("loading", flush=True)
        try:
            Engine("docker").load({str(archive)!r})
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "loading\n"
        wait_for(lambda: processes_mentioning(marker), "the stand-in docker client to start", timeout=60)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out == "interrupted\n"
    wait_for(lambda: not processes_mentioning(marker), "the stand-in docker client to be stopped", timeout=30)


def _old_docker_save(path: Path, corrupt_layer: bool) -> str:
    """An archive shaped like docker 20.10's `docker save` (no OCI layout:
    <hex>.json config, <dir>/layer.tar); returns its config digest."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        info = tarfile.TarInfo("hello")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    layer_bytes = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer_bytes)]}}).encode()
    digest = sha256_digest(config)
    hex_ = digest.partition(":")[2]
    manifest = json.dumps([{"Config": f"{hex_}.json", "RepoTags": ["acme/b:1"],
                            "Layers": ["abc/layer.tar"]}]).encode()
    stored = bytearray(layer_bytes)
    if corrupt_layer:
        stored[600] ^= 0xFF           # in the file's content: the layer no longer matches its diff_id
    with tarfile.open(path, "w") as t:
        for name, data in (("manifest.json", manifest), (f"{hex_}.json", config), ("abc/layer.tar", bytes(stored))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return digest


def test_an_archives_image_id_is_found_without_reading_its_layers(tmp_path):
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    want = _old_docker_save(good, corrupt_layer=False)
    assert _old_docker_save(bad, corrupt_layer=True) == want
    assert archive_identity(FileRef("docker-archive", str(good))) == (want, "acme/b:1")
    assert open_image(FileRef("docker-archive", str(good))).config.descriptor.digest == want
    # The layers are not read: a damaged layer does not stop the lookup (it
    # would stop a real read of the image, as it should).
    assert archive_identity(FileRef("docker-archive", str(bad)))[0] == want
    from ocibuild.errors import BlobError
    with pytest.raises(BlobError, match="corrupt"):
        open_image(FileRef("docker-archive", str(bad)))
