"""Images ocibuild writes, loaded and run by real engines: docker (dockerd
20.10), rootful podman 4.3, and rootless podman as the ordinary user
`ocibuild` (configured by scripts/setup: runc, cgroupfs, ulimits, no network).

Every image runs the static test program as the image's default user and
must print `uid 65532`. Engine tests are mandatory: an unreachable engine
fails the test (see conftest.require_engine). Every image and container a
test makes is removed afterwards, by its unique name."""

from __future__ import annotations

import os
import re

import pytest
from conftest import read_layout, tree_state, unique_name

NONROOT = 65532
ROOTFUL = ["docker", "podman"]
ENGINE, ROOT, SLOW = pytest.mark.engine, pytest.mark.root, pytest.mark.slow


def image_args(static_binary, tmp_path) -> list[str]:
    """The program as entrypoint, plus a file no other image has: every load
    then has at least one new layer to unpack (an engine skips layers whose
    diff_id it already holds, which would hide a layer it cannot read)."""
    nonce = tmp_path / "nonce"
    nonce.write_bytes(os.urandom(4096))
    return ["--add", f"{static_binary.path}:/usr/local/bin/chaincode",
            "--add", f"{nonce}:/opt/nonce",
            "--entrypoint", '["/usr/local/bin/chaincode"]']


def docker_reads_zstd(engine) -> bool:
    """Whether dockerd can unpack zstd layers. Measured here: Debian 12's
    docker.io 20.10 cannot `docker load` them ("Error processing tar
    file(exit status 1): archive/tar: invalid tar header"); 23.0 and later
    are taken to (moby added zstd decompression after 20.10)."""
    r = engine("version", "--format", "{{.Server.Version}}", check=True)
    return int(r.stdout.strip().split(".")[0]) >= 23


def run_image(engine, cleanup, ref: str, static_binary, *extra) -> str:
    """`ENGINE run --rm` of the image with the program's quick-exit arguments;
    returns its stdout after checking the exit status."""
    name = cleanup.container(engine, unique_name("run").replace("/", "-"))
    r = engine("run", "--rm", "--name", name, "--network", "none", *extra,
               *static_binary.env_flags(), ref, *static_binary.args)
    assert r.returncode == 0, f"{engine.name} run {ref} failed ({r.returncode}):\n{r.stderr}{r.stdout}"
    return r.stdout


def load(engine, archive) -> str:
    r = engine("load", "-i", archive)
    assert r.returncode == 0, f"{engine.name} load -i {archive} failed:\n{r.stderr}{r.stdout}"
    return r.stdout + r.stderr


def config_digest_of(layout, tag=None) -> str:
    return read_layout(layout, tag).config_digest


@ENGINE
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("engine_name", ROOTFUL)
def test_docker_archive_loads_and_runs_as_nonroot(engine_name, compression, require_engine,
                                                  engine_cleanup, build_image, static_binary,
                                                  tmp_path):
    """`docker load` / `podman load` of a docker-archive:, then `run --rm` as
    the default user. podman 4.3 reads zstd layers; dockerd 20.10 does not."""
    engine = require_engine(engine_name)
    name = engine_cleanup.image(engine, unique_name(f"load-{compression}") + ":v1")
    archive = tmp_path / "image.tar"
    build_image("--compression", compression, *image_args(static_binary, tmp_path),
                "--output", f"docker-archive:{archive}:{name}", "--output", f"oci:{tmp_path / 'l'}")
    if engine.name == "docker" and compression == "zstd" and not docker_reads_zstd(engine):
        r = engine("load", "-i", archive)
        assert r.returncode != 0
        assert "Error processing tar file" in r.stderr, r.stderr
        assert not engine.has_image(name)
        return
    out = load(engine, archive)
    assert re.search(rf"Loaded image: (localhost/)?{re.escape(name)}$", out, re.M), out
    assert engine.image_id(name) == config_digest_of(tmp_path / "l")
    printed = run_image(engine, engine_cleanup, name, static_binary)
    assert static_binary.uid_in(printed) == NONROOT
    # an explicit --user still wins over the image default
    printed = run_image(engine, engine_cleanup, name, static_binary, "--user", "500:500")
    assert static_binary.uid_in(printed) == 500


@ENGINE
def test_docker_daemon_refusing_a_layer_leaves_every_output_unwritten(
        require_engine, engine_cleanup, ocibuild, static_binary, tmp_path):
    """An engine that refuses the image at its last step (here: dockerd 20.10
    and a zstd layer) -> exit 6, one error line naming docker, and the other
    outputs of the command are not written (engines commit first)."""
    engine = require_engine("docker")
    if docker_reads_zstd(engine):
        pytest.fail("this dockerd reads zstd layers: find another way to make it refuse an image")
    name = engine_cleanup.image(engine, unique_name("refused") + ":v1")
    out = tmp_path / "out"
    out.mkdir()
    r = ocibuild("assemble", "--compression", "zstd", *image_args(static_binary, tmp_path),
                 "--output", f"oci-archive:{out / 'a.tar'}", "--output", f"oci:{out / 'layout'}",
                 "--output", f"docker-daemon:{name}")
    line = _only_error_line(r, progress=True)
    assert "docker" in line and "load" in line
    assert os.listdir(out) == []
    assert not engine.has_image(name)


@ENGINE
@pytest.mark.parametrize("transport,engine_name", [("docker-daemon", "docker"),
                                                   ("containers-storage", "podman")])
def test_engine_outputs_load_directly(transport, engine_name, require_engine, engine_cleanup,
                                      ocibuild, static_binary, tmp_path):
    engine = require_engine(engine_name)
    name = engine_cleanup.image(engine, unique_name(transport) + ":v1")
    r = ocibuild("assemble", *image_args(static_binary, tmp_path), "--output", f"{transport}:{name}",
                 "--output", f"oci:{tmp_path / 'l'}:v1")
    assert r.returncode == 0, r.stderr
    assert read_layout(tmp_path / "l", "v1").digest == r.stdout.strip()
    assert engine.image_id(name) == config_digest_of(tmp_path / "l", "v1")
    assert static_binary.uid_in(run_image(engine, engine_cleanup, name, static_binary)) == NONROOT
    # the archive it loaded from lived in ocibuild's work directory and is gone
    assert sorted(os.listdir(tmp_path)) == ["l", "nonce"]


@ENGINE
def test_both_engine_outputs_in_one_command(require_engine, engine_cleanup, ocibuild,
                                            static_binary, tmp_path):
    docker, podman = require_engine("docker"), require_engine("podman")
    base = unique_name("both")
    d = engine_cleanup.image(docker, base + ":d")
    p = engine_cleanup.image(podman, base + ":p")
    r = ocibuild("-q", "assemble", *image_args(static_binary, tmp_path), "--output", f"docker-daemon:{d}",
                 "--output", f"containers-storage:{p}", "--output", f"oci:{tmp_path / 'l'}")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    want = config_digest_of(tmp_path / "l")
    assert docker.image_id(d) == podman.image_id(p) == want


@ENGINE
def test_oci_archive_loads_into_podman(require_engine, engine_cleanup, build_image,
                                       static_binary, tmp_path):
    """podman reads the OCI layout tar and names the image after its
    org.opencontainers.image.ref.name annotation."""
    engine = require_engine("podman")
    name = engine_cleanup.image(engine, "localhost/" + unique_name("ociarchive") + ":v1")
    archive = tmp_path / "image.tar"
    # --sbom none: podman 4.3 loads an oci-archive whose index.json lists one
    # manifest only, not an image with its SBOM beside it (README, SBOMs).
    build_image(*image_args(static_binary, tmp_path), "--sbom", "none", "--output", f"oci-archive:{archive}:{name}",
                "--output", f"oci:{tmp_path / 'l'}")
    out = load(engine, archive)
    assert f"Loaded image: {name}" in out, out
    assert engine.image_id(name) == config_digest_of(tmp_path / "l")
    assert static_binary.uid_in(run_image(engine, engine_cleanup, name, static_binary)) == NONROOT


@ENGINE
@ROOT          # podman as the user `ocibuild` (runuser)
@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_rootless_podman_loads_and_runs(transport, require_engine, engine_cleanup, build_image,
                                        static_binary, shared_tmp):
    """As the ordinary user `ocibuild`: the archive sits in a world-readable
    directory (tmp_path is not readable by other users)."""
    engine = require_engine("podman-rootless")
    name = engine_cleanup.image(engine, "localhost/" + unique_name(f"rootless-{transport}") + ":v1")
    archive = shared_tmp / "image.tar"
    sbom = ["--sbom", "none"] if transport == "oci-archive" else []    # as above
    build_image(*image_args(static_binary, shared_tmp), *sbom, "--output", f"{transport}:{archive}:{name}",
                "--output", f"oci:{shared_tmp / 'l'}")
    assert archive.stat().st_mode & 0o004, "the archive is not world-readable"
    out = load(engine, archive)
    assert f"Loaded image: {name}" in out, out
    assert engine.image_id(name) == config_digest_of(shared_tmp / "l")
    printed = run_image(engine, engine_cleanup, name, static_binary)
    assert static_binary.uid_in(printed) == NONROOT


# --- engines that are not there ------------------------------------------------------

def _only_error_line(r, progress: bool = False) -> str:
    """Exit 6 (engine), nothing on stdout, and one `error:` line on stderr: the
    only line, or with `progress`, the last one after `ocibuild:` progress lines."""
    assert r.returncode == 6, f"exit {r.returncode}: {r.stderr}"
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    if progress:
        assert all(line.startswith("ocibuild: ") for line in lines[:-1]), r.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@ENGINE          # no daemon, but the docker client: its own error names the socket
def test_docker_down_fails_before_writing_anything(ocibuild, static_binary, tmp_path):
    """docker-daemon: with no daemon at DOCKER_HOST: exit 1, one error line
    naming docker, and the oci-archive and oci outputs of the same command
    are not written (checked before any work is done)."""
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "existing.tar"
    existing.write_bytes(b"not touched")
    before = tree_state(out)
    r = ocibuild("assemble", *image_args(static_binary, tmp_path),
                 "--output", f"oci-archive:{out / 'a.tar'}",
                 "--output", f"oci-archive:{existing}",
                 "--output", f"oci:{out / 'layout'}",
                 "--output", "docker-daemon:ocibuild-test/never:v1",
                 env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    line = _only_error_line(r)
    assert "docker" in line
    assert "/nonexistent.sock" in line
    assert tree_state(out) == before


def test_podman_missing_fails_before_writing_anything(ocibuild, static_binary, tmp_path):
    """containers-storage: with no podman on PATH: one error line naming podman."""
    no_tools = tmp_path / "empty-bin"
    no_tools.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    r = ocibuild("assemble", *image_args(static_binary, tmp_path),
                 "--output", f"oci-archive:{out / 'a.tar'}",
                 "--output", "containers-storage:ocibuild-test/never:v1",
                 env={"PATH": str(no_tools)})
    line = _only_error_line(r)
    assert "podman" in line
    assert os.listdir(out) == []
