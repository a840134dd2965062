"""`pip install .` into a fresh venv outside the checkout gives a working
`ocibuild`, built-in base layers included (they live in layers/, outside the
package directory, and must still ship)."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow          # a venv and a pip install of the project
def test_installed_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import ocibuild, ocibuild.builtin_layers as l; print(ocibuild.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert str(ROOT) not in site, "imported from the checkout, not the installed copy"

    payload = tmp_path / "hello.txt"
    payload.write_text("hello\n")
    out = tmp_path / "image.tar"
    r = subprocess.run([str(venv / "bin" / "ocibuild"), "-q", "assemble", "--add", f"{payload}:/hello.txt",
                        "--output", f"oci-archive:{out}"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sha256:")

    # The static base came along: /etc/passwd with the chaincode user is in the image.
    with tarfile.open(out) as t:
        index = json.load(t.extractfile("index.json"))
        manifest = json.load(t.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        base = t.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"][7:])
        with tarfile.open(fileobj=base, mode="r|gz") as layer:
            for m in layer:
                if m.name == "etc/passwd":
                    assert b"chaincode:x:500:500" in layer.extractfile(m).read()
                    break
            else:
                raise AssertionError("the static base has no etc/passwd")
    # Every subpackage is installed (a missing one would only fail when used).
    for module in ("ocibuild.builders.docker", "ocibuild.builders.podman", "ocibuild.fabric.extract",
                   "ocibuild.registry.push"):
        subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], check=True, cwd=tmp_path)
