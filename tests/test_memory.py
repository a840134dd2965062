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
