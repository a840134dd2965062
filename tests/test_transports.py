"""One reference grammar and one dispatch: every `TRANSPORT:...` parses into
a typed value once, `open_output` makes the right output for each, and
`open_image` reads every transport — engines included (an engine's image is
saved and read back), so `inspect` and `fabric package --image` take any of
them."""

from __future__ import annotations

import json
import tarfile

import pytest
from conftest import printed_digest, unique_name

from ocibuild.errors import InputError
from ocibuild.oci.reference import EngineRef, FileRef, RegistryRef, check_image_name, parse_reference
from ocibuild.outputs.engine import EngineOutput
from ocibuild.outputs.files import ArchiveOutput, LayoutOutput
from ocibuild.registry.push import RegistryOutput
from ocibuild.transports import open_output, parse_base


@pytest.mark.parametrize("text, want", [
    ("oci:/x/lay", FileRef("oci", "/x/lay")),
    ("oci:/x/lay:v1", FileRef("oci", "/x/lay", "v1")),
    ("oci-archive:a.tar:v1", FileRef("oci-archive", "a.tar", "v1")),
    ("docker-archive:a.tar:acme/cc", FileRef("docker-archive", "a.tar", "acme/cc:latest")),
    ("docker-daemon:acme/cc:1", EngineRef("docker-daemon", "acme/cc:1")),
    ("containers-storage:localhost/acme/cc", EngineRef("containers-storage", "localhost/acme/cc:latest")),
    ("docker://localhost:5000/acme/cc:1", RegistryRef("localhost:5000", "acme/cc", "1")),
    ("docker://alpine", RegistryRef("docker.io", "library/alpine", "latest")),
    ("docker://h.example/a/b@sha256:" + "0" * 64, RegistryRef("h.example", "a/b", "", "sha256:" + "0" * 64)),
])
def test_references_parse_into_typed_values(text, want):
    got = parse_reference(text)
    assert got == want and type(got) is type(want)


def test_registry_references_print_as_written_back():
    ref = parse_reference("docker://localhost:5000/acme/cc:1")
    assert str(ref) == "docker://localhost:5000/acme/cc:1"
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize("text, says", [
    ("docker-daemon:UPPER:1", "invalid image name"),
    ("docker-daemon:acme/cc:", "invalid tag"),
    ("docker://localhost:5000/acme/cc:", "invalid tag"),
    ("docker://h.example/a@sha256:00", "not a sha256 digest"),
    ("oci:", "the path is empty"),
    ("ftp:x", "unknown transport"),
    ("nocolon", "use TRANSPORT:"),
])
def test_bad_references_say_what_is_wrong(text, says):
    with pytest.raises(InputError, match=says):
        parse_reference(text, "--output")


def test_engine_and_registry_names_share_one_grammar():
    # The same name is valid (or not) for an engine and for a registry.
    for name in ("acme/cc", "localhost:5000/acme/cc", "registry.example.com/a/b-c_d.e"):
        check_image_name(name)
        parse_reference(f"docker://{name}")
    for name in ("Acme", "acme//cc", "acme/cc-"):
        with pytest.raises(InputError):
            check_image_name(name)
        with pytest.raises(InputError):
            parse_reference(f"docker://{name}")


@pytest.mark.parametrize("text, kind, commit_first", [
    ("oci:{d}/lay", LayoutOutput, False),
    ("oci-archive:{d}/a.tar", ArchiveOutput, False),
    ("docker-archive:{d}/a.tar:acme/cc:1", ArchiveOutput, False),
    ("docker-daemon:acme/cc:1", EngineOutput, True),
    ("containers-storage:acme/cc:1", EngineOutput, True),
    ("docker://localhost:5000/acme/cc:1", RegistryOutput, True),
])
def test_each_output_declares_its_commit_order(tmp_path, text, kind, commit_first):
    out = open_output(text.format(d=tmp_path), 0)
    assert type(out) is kind and out.commit_first is commit_first


def test_a_base_is_a_builtin_or_a_reference():
    assert parse_base("static") is None and parse_base("scratch") is None
    assert parse_base("docker://localhost:5000/b:1") == RegistryRef("localhost:5000", "b", "1")
    with pytest.raises(InputError, match="unknown base 'nosuch'"):
        parse_base("nosuch")


@pytest.mark.engine
@pytest.mark.parametrize("engine_name, transport", [("docker", "docker-daemon"),
                                                    ("podman", "containers-storage")])
def test_engine_images_are_read_like_any_other(ocibuild, require_engine, engine_cleanup, static_binary,
                                               tmp_path, engine_name, transport):
    """`inspect` and `fabric package --image` read an engine's image (saved
    and read back); the digest is the engine's own export of it."""
    engine = require_engine(engine_name)
    name = engine_cleanup.image(engine, unique_name("read-back") + ":1")
    printed_digest(ocibuild("-q", "assemble", "--add", f"{static_binary.path}:/usr/local/bin/cc",
                            "--label", "proof=read-back", "--output", f"{transport}:{name}"))
    shown = ocibuild("inspect", "--json", f"{transport}:{name}")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["config"]["config"]["Labels"]["proof"] == "read-back"
    assert doc["config"]["config"]["User"] == "65532:65532"

    pkg = tmp_path / "k8s.tar.gz"
    made = ocibuild("fabric", "package", "--type", "k8s", "--label", "cc_1", "--image-name", "acme/cc",
                    "--image", f"{transport}:{name}", "--output", str(pkg))
    assert made.returncode == 0, made.stderr
    with tarfile.open(pkg) as outer:
        code = outer.extractfile("code.tar.gz")
        assert code is not None
        with tarfile.open(fileobj=code) as inner:
            member = inner.extractfile("image.json")
            assert member is not None
            image = json.loads(member.read())
    assert image == {"name": "acme/cc", "digest": doc["digest"]}


@pytest.mark.engine
def test_a_missing_engine_image_is_one_clear_error(ocibuild, require_engine):
    require_engine("docker")
    res = ocibuild("inspect", "docker-daemon:ocibuild-test/no-such-image:1")
    assert res.returncode == 3
    assert res.stderr == "error: docker-daemon:ocibuild-test/no-such-image:1: docker has no image " \
                         "ocibuild-test/no-such-image:1\n"
