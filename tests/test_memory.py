"""Layers are streamed: peak memory stays flat whatever the layer size."""

import subprocess
import sys
from pathlib import Path

import pytest

OCIBUILD = str(Path(sys.executable).parent / "ocibuild")
GIB = 1 << 30


def _peak_rss_of(cmd: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    # Run through a fresh Python so RUSAGE_CHILDREN holds only this command.
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(p.returncode, p.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    code, digest, kib = out.stdout.split()
    return subprocess.CompletedProcess(cmd, int(code), digest, out.stderr), int(kib) * 1024


@pytest.mark.slow          # 1 GiB through tar, sha256 and gzip, twice
def test_one_gib_layer_in_flat_memory(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:          # sparse: costs no disk, reads as 1 GiB
        f.truncate(GIB)
    archive = tmp_path / "out.tar"
    result, peak = _peak_rss_of([OCIBUILD, "-q", "assemble", "--base", "scratch",
                                 "--add", f"{big}:/data/big.bin",
                                 "--output", f"oci-archive:{archive}"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sha256:")
    assert archive.stat().st_size > 0
    # The whole GiB passed through tar, sha256 and gzip; memory must not grow with it.
    assert peak < 150 * 1024 * 1024, f"peak RSS {peak / 1e6:.0f} MB for a 1 GiB layer"

    # Reading it back verifies every blob by streaming too.
    result, peak = _peak_rss_of([OCIBUILD, "-q", "assemble", "--base", f"oci-archive:{archive}",
                                 "--output", f"oci-archive:{tmp_path / 'again.tar'}"])
    assert result.returncode == 0, result.stderr
    assert peak < 150 * 1024 * 1024, f"peak RSS {peak / 1e6:.0f} MB re-reading a 1 GiB layer"


def _small_tree(root: Path, files: int) -> None:
    per_dir = 100
    for i in range(files):
        d = root / f"pkg{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"file{i % per_dir:03d}.go").write_bytes(b"package p\n" + str(i).encode())


@pytest.mark.slow          # 40 000 files made, then archived
def test_many_small_files_cost_little_memory_each(tmp_path):
    """A tree's entries are held whole (sorted, checked against the base),
    so memory grows with the number of files: by a few hundred bytes each
    (the path, the host path, one slotted entry; ~530 measured), not by
    kilobytes."""
    files = 40_000
    _small_tree(tmp_path / "one", 1)
    _small_tree(tmp_path / "many", files)
    peaks = {}
    for name in ("one", "many"):
        result, peaks[name] = _peak_rss_of([OCIBUILD, "-q", "assemble", "--sbom", "none", "--base", "scratch",
                                            "--add", f"{tmp_path / name}:/src",
                                            "--output", f"oci-archive:{tmp_path / name}.tar"])
        assert result.returncode == 0, result.stderr
    per_file = (peaks["many"] - peaks["one"]) / files
    assert per_file < 1000, f"{per_file:.0f} bytes of peak RSS per file ({peaks})"
