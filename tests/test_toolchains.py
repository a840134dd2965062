"""Go toolchains (issue 10, item 1): versions ordered by Go's own rules, the
module's `go` and `toolchain` lines read, the lowest toolchain that fits
picked (or `--go`), the host's toolchains found by their VERSION files, the
builder images by their label — and a module no toolchain fits refused
before any container starts, saying what it needs, what there is and how
to add one. The go1.24 toolchains are the ones scripts/setup unpacks from
Debian trixie (/var/cache/ocibuild/toolchains, go-builder:go1.24)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, run_ocibuild

from ocibuild.builders.docker import DockerBuilder
from ocibuild.builders.images import engine_toolchains
from ocibuild.engines import Engine
from ocibuild.errors import InputError
from ocibuild.oci.elf import go_version
from ocibuild.toolchains import GoVersion, Requirement, Toolchain, host_toolchains, pick, read_requirement

V = GoVersion.parse
NEW_GOROOT = Path("/var/cache/ocibuild/toolchains/go1.24.4")
NEW_IMAGE = "localhost/ocibuild/go-builder:go1.24"
OLD_IMAGE = "localhost/ocibuild/go-builder:bookworm"
AVAILABLE = [Toolchain(V("1.19.8"), "old"), Toolchain(V("1.24.4"), "new")]


def test_versions_order_as_go_orders_them():
    # Go's rules: a language version (1.21) < its betas < its rcs < 1.21.0 < 1.21.1;
    # before 1.21, "1.19" named the first release itself.
    chain = ["1.20", "1.20.1", "1.21", "1.21beta1", "1.21rc1", "1.21rc2", "1.21.0", "1.21.1", "1.22", "1.23.0"]
    assert [V(v) for v in chain] == sorted(V(v) for v in reversed(chain))
    assert V("1.19") == V("1.19.0") and V("go1.24.4") == V("1.24.4")
    assert str(V("go1.21rc2")) == "1.21rc2" and str(V("1.23.0")) == "1.23.0"
    for bad in ("1", "1.x", "go", "1.21.0.1", "1.21-rc1", "v1.21.0", "1.21.0\n1"):
        assert V(bad) is None, bad


def test_the_go_and_toolchain_lines_are_read(tmp_path):
    gomod = tmp_path / "go.mod"
    gomod.write_text("module example.com/m // go 9.9\n\ngo 1.23.0 // a comment\n\ntoolchain go1.23.4\n"
                     "require example.com/x v1.0.0\n")
    assert read_requirement(str(gomod)) == Requirement(V("1.23.0"), V("1.23.4"))
    assert read_requirement(str(tmp_path / "none")) == Requirement()
    gomod.write_text("module m\ngo 1.23.x\n")
    with pytest.raises(InputError, match=r"`go 1.23.x` is not a Go version"):
        read_requirement(str(gomod))
    gomod.write_text("module m\ngo 1.21\ntoolchain 1.21.3\n")        # the line needs its go prefix
    with pytest.raises(InputError, match="toolchain 1.21.3"):
        read_requirement(str(gomod))
    # Go's own forms: `toolchain default` (no preference), a name with a suffix.
    gomod.write_text("module m\ngo 1.21.0\ntoolchain default\n")
    assert read_requirement(str(gomod)) == Requirement(V("1.21.0"))
    for name in ("go1.22.1+auto", "go1.22.1-custom"):
        gomod.write_text(f"module m\ngo 1.21.0\ntoolchain {name}\n")
        assert read_requirement(str(gomod)) == Requirement(V("1.21.0"), V("1.22.1")), name
    gomod.write_text("module m\ngo 1.024\n")                       # Go refuses leading zeros
    with pytest.raises(InputError, match="`go 1.024` is not a Go version"):
        read_requirement(str(gomod))


@pytest.mark.parametrize("go, toolchain, wanted, expected", [
    (None, None, "", "old"),               # GOPATH mode: the lowest
    ("1.13", None, "", "old"),
    ("1.19", None, "", "old"),
    ("1.19.9", None, "", "new"),           # a patch newer than the old one
    ("1.21", None, "", "new"),
    ("1.23.0", None, "", "new"),
    ("1.17", "go1.22.1", "", "new"),       # the toolchain line is preferred when something fits it
    ("1.17", "go1.99.0", "", "old"),       # ... and only preferred: the go line still decides
    ("1.13", None, "1.24", "new"),
    ("1.13", None, "1.24.4", "new"),
    ("1.13", None, "1.19", "old"),
])
def test_the_lowest_toolchain_that_fits_is_picked(go, toolchain, wanted, expected):
    need = Requirement(V(go) if go else None, V(toolchain) if toolchain else None)
    assert pick(AVAILABLE, need, wanted, "docker").where == expected


def test_no_fitting_toolchain_says_what_the_module_needs_what_there_is_and_how_to_add_one():
    with pytest.raises(InputError) as e:
        pick(AVAILABLE, Requirement(V("1.25.0")), "", "podman")
    msg = str(e.value)
    assert "needs go 1.25.0" in msg and "go1.19.8 (old), go1.24.4 (new)" in msg
    assert "--builder-image docker-archive:FILE" in msg and "org.ocibuild.builder.go-version" in msg
    with pytest.raises(InputError, match=r"~/.cache/ocibuild/toolchains.*OCIBUILD_TOOLCHAINS"):
        pick(AVAILABLE, Requirement(V("1.25.0")), "", "host")
    with pytest.raises(InputError, match=r"needs go 1.23.0, and --go chose go1.19.8"):
        pick(AVAILABLE, Requirement(V("1.23.0")), "1.19", "docker")
    with pytest.raises(InputError, match=r"--go 1.22: no such toolchain"):
        pick(AVAILABLE, Requirement(), "1.22", "docker")
    with pytest.raises(InputError, match=r"--go latest: not a Go version"):
        pick(AVAILABLE, Requirement(), "latest", "docker")


def test_an_image_of_unknown_version_is_used_as_given():
    """An unlabelled --builder-image: nothing to check up front; the
    compiler (and its diagnosis) will say if it is too old."""
    only = [Toolchain(None, "my/image")]
    assert pick(only, Requirement(V("1.23.0")), "", "docker").where == "my/image"


def _fake_goroot(root: Path, version: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "go").write_text("#!/bin/sh\nexit 1\n")
    (root / "bin" / "go").chmod(0o755)
    (root / "VERSION").write_text(f"go{version}\ntime 2025-01-01T00:00:00Z\n")
    return root


def test_host_toolchains_are_found_by_their_version_files(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "OCIBUILD_TOOLCHAINS": f"{_fake_goroot(tmp_path / 'one', '1.30.1')}:{tmp_path / 'many'}"}
    _fake_goroot(tmp_path / "many" / "a", "1.31rc1")
    _fake_goroot(tmp_path / "home" / ".cache" / "ocibuild" / "toolchains" / "go1.32.0", "1.32.0")
    (tmp_path / "many" / "not-a-goroot").mkdir()
    found = {str(t.version): t.where for t in host_toolchains(env)}
    assert found["1.19.8"] == "/usr/lib/go-1.19"                  # Debian's, PATH's go
    assert found["1.24.4"] == str(NEW_GOROOT)                     # what scripts/setup unpacked
    assert found["1.30.1"] == str(tmp_path / "one")
    assert found["1.31rc1"] == str(tmp_path / "many" / "a")
    assert found["1.32.0"] == str(tmp_path / "home" / ".cache" / "ocibuild" / "toolchains" / "go1.32.0")


@pytest.mark.engine
@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_builder_images_are_found_by_their_label(engine, require_engine):
    require_engine(engine)
    found = {str(t.version): t.where for t in engine_toolchains(Engine(engine), "")}
    assert found["1.19.8"] == OLD_IMAGE and found["1.24.4"] == NEW_IMAGE
    (given,) = engine_toolchains(Engine(engine), NEW_IMAGE)
    assert given == Toolchain(V("1.24.4"), NEW_IMAGE)
    if engine == "docker":      # the docker builder's own two-call listing agrees with the engine wrapper's
        assert DockerBuilder("", os.environ).toolchains() == engine_toolchains(Engine(engine), "")
    # An archive's label is read in place (manifest and config only), before any load.
    archives = sorted(Path("/var/cache/ocibuild").glob("go-builder-go1.24-*.tar"))
    assert archives, "scripts/setup keeps the go1.24 builder archive in /var/cache/ocibuild"
    ref = f"docker-archive:{archives[-1]}"
    assert engine_toolchains(Engine(engine), ref) == [Toolchain(V("1.24.4"), ref)]


def test_the_go_version_is_read_from_the_binary(static_binary, tmp_path):
    """Both toolchains' binaries say which Go built them (the label the
    image gets); anything else says nothing."""
    assert go_version(str(static_binary.path)) == "go1.19.8"
    out = tmp_path / "modern"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "GOPROXY": "off",
           "CGO_ENABLED": "0", "GOCACHE": str(tmp_path / "cache"), "GOWORK": "off"}
    subprocess.run([str(NEW_GOROOT / "bin" / "go"), "build", "-trimpath", "-o", str(out), "."],
                   cwd=FIXTURES / "modern", env=env, check=True, timeout=600)
    assert go_version(str(out)) == "go1.24.4"
    for other in (Path("/bin/sh"), FIXTURES / "modern" / "main.go", tmp_path / "cache"):
        assert go_version(str(other)) is None
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert go_version(str(empty)) is None
    # The build information is a section, not any bytes that look like it: a
    # non-Go ELF carrying the magic and a version in its data says nothing.
    posing = tmp_path / "posing"
    data = bytearray(Path("/bin/sh").read_bytes())
    data += bytes(-len(data) % 16) + b"\xff Go buildinf:\x08\x02" + bytes(16) + b"\x08go1.99.0"
    posing.write_bytes(bytes(data))
    assert go_version(str(posing)) is None


@pytest.mark.parametrize("builder", ["host", pytest.param("docker", marks=pytest.mark.engine),
                                     pytest.param("podman", marks=pytest.mark.engine)])
def test_a_module_no_toolchain_fits_is_refused_before_any_compile(builder, tmp_path, require_engine):
    if builder != "host":
        require_engine(builder)
    src = tmp_path / "future"
    src.mkdir()
    (src / "go.mod").write_text("module example.com/future\n\ngo 1.99.0\n")
    (src / "main.go").write_text("package main\n\nfunc main() {}\n")
    r = run_ocibuild("build", src, "--builder", builder, "--output", f"oci:{tmp_path / 'out'}")
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the module needs go 1.99.0, and the newest Go toolchain for "
                                f"--builder {builder} is go1.24.4; available: go1.19.8 "), lines[-1]
    assert "compiling" not in r.stderr, "a compile started"
    assert not (tmp_path / "out").exists()


def test_go_picks_the_toolchain(tmp_path):
    """--go 1.19 on a go 1.23.0 module: refused up front; --go 1.24 on the
    go 1.19 chaincode: built with Go 1.24, as the label says."""
    out = tmp_path / "out"
    r = run_ocibuild("build", FIXTURES / "modern", "--builder", "host", "--go", "1.19",
                     "--output", f"oci:{out}:a")
    assert r.returncode == 3 and "the module needs go 1.23.0, and --go chose go1.19.8" in r.stderr, r.stderr
    r = run_ocibuild("build", FIXTURES / "chaincode", "--builder", "host", "--go", "1.24",
                     "--output", f"oci:{out}:b")
    assert r.returncode == 0, r.stderr
    assert "toolchain: go1.24.4 (/var/cache/ocibuild/toolchains/go1.24.4), for go 1.19" in r.stderr
    inspect = run_ocibuild("inspect", "--json", f"oci:{out}:b")
    assert '"org.ocibuild.go.version": "1.24.4"' in inspect.stdout


def test_a_toolchain_that_is_not_what_it_claims_is_refused(tmp_path):
    """A GOROOT whose VERSION says 1.30.0 but whose go is Debian's 1.19.8:
    the binary's build information tells, and the build is refused rather
    than labelled with a Go it was not built with."""
    real = Path("/usr/lib/go-1.19")
    fake = tmp_path / "liar"
    (fake / "bin").mkdir(parents=True)
    shutil.copy2(real / "bin" / "go", fake / "bin" / "go")      # a real file: the sandbox binds this GOROOT
    for entry in real.iterdir():
        if entry.name not in ("bin", "VERSION"):
            (fake / entry.name).symlink_to(entry.resolve())
    (fake / "VERSION").write_text("go1.30.0\n")
    out = tmp_path / "out"
    r = run_ocibuild("build", FIXTURES / "chaincode", "--builder", "host", "--go", "1.30",
                     "--output", f"oci:{out}", env={"OCIBUILD_TOOLCHAINS": str(fake)})
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line == (f"error: the toolchain {fake} claims Go 1.30.0, but its go is go1.19.8; fix its "
                    "org.ocibuild.builder.go-version label (or VERSION file), or pass --builder-image/--go"), line
    assert not out.exists()
