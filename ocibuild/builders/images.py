"""The builder image, made present in the engine (docker or podman).

It is named either as an image the engine already has, or as an archive to
load first — the air-gapped way to bring a toolchain:
`docker-archive:FILE[:NAME:TAG]`, `oci-archive:FILE[:REF]` or `oci:DIR[:REF]`.
An archive is loaded only when the engine lacks that exact image (same
config digest, which is the image ID in docker and podman alike)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..engines import Engine
from ..errors import EngineError, InputError
from ..gosource import GoBuild
from ..oci.blobs import WorkStore
from ..oci.readers import archive_identity, open_image
from ..oci.reference import FileRef, parse_reference
from ..progress import Say
from ..toolchains import BUILDER_LABEL, GoVersion, Toolchain

ARCHIVES = ("docker-archive", "oci-archive", "oci")  # --builder-image transports loaded first
# Used when the engine has no image labelled with its Go version.
DEFAULT_IMAGE = "localhost/ocibuild/go-builder:bookworm"
# Archives without a usable name are loaded under this repository, tagged
# with their config digest: the name says exactly which image it is.
LOADED_REPO = "localhost/ocibuild/builder"


def is_archive(ref: str) -> bool:
    return ref.partition(":")[0] in ARCHIVES


def engine_toolchains(engine: Engine, image: str) -> list[Toolchain]:
    """The toolchains a container builder may use: the --builder-image
    given (its Go version from its label, when it has one), else every image
    in the engine labelled with its Go version (the first name per version),
    else the default image."""
    if image:
        labels = _archive_labels(image) if is_archive(image) else engine.labels(image)
        return [Toolchain(GoVersion.parse(str((labels or {}).get(BUILDER_LABEL, ""))), image)]
    return labelled_toolchains(engine.labelled(BUILDER_LABEL))


def labelled_toolchains(labelled: Iterable[tuple[str, str]]) -> list[Toolchain]:
    """Toolchains from (image name, its BUILDER_LABEL value): the first name
    per version, by name; the default image when there are none."""
    found: dict[GoVersion, Toolchain] = {}
    for name, value in sorted(labelled):
        version = GoVersion.parse(value)
        if version is not None and version not in found:
            found[version] = Toolchain(version, name)
    return list(found.values()) or [Toolchain(None, DEFAULT_IMAGE)]


def _archive_labels(ref: str) -> dict:
    """The config labels of a --builder-image archive, read in place (the
    config only; an archive that is not one is refused when it is loaded)."""
    archive = parse_reference(ref, "--builder-image")
    assert isinstance(archive, FileRef)
    if not os.path.exists(archive.path):
        raise InputError(f"--builder-image {ref}: {archive.path} does not exist")
    labels = (open_image(archive).config_doc.get("config") or {}).get("Labels")
    return labels if isinstance(labels, dict) else {}


def image_for(job: GoBuild, given: str) -> str:
    """The builder image a job compiles in: its chosen toolchain's, else the
    --builder-image given, else the default."""
    return job.toolchain.where if job.toolchain else (given or DEFAULT_IMAGE)


def no_go(engine: str, image: str) -> InputError:
    return InputError(f"builder image {image} has no `go` on PATH (in {engine}); "
                      "pass a Go toolchain image with --builder-image")


def ensure_image(engine: Engine, ref: str, say: Say) -> str:
    """The name under which `engine` has the builder image `ref`, loading an
    archive first when the engine lacks it."""
    if not is_archive(ref):
        if engine.image_id(ref) is None:
            raise InputError(f"builder image {ref} not found in {engine.name}; load it "
                             f"({engine.name} load -i FILE) or pass --builder-image docker-archive:FILE")
        return ref
    archive = parse_reference(ref, "--builder-image")
    assert isinstance(archive, FileRef)
    if not os.path.exists(archive.path):
        raise InputError(f"--builder-image {ref}: {archive.path} does not exist")
    config, named = archive_identity(archive)    # the manifest and config only, never the layers
    name = named or f"{LOADED_REPO}:{config.partition(':')[2]}"
    if engine.image_id(name) == config:
        return name
    say(f"loading the builder image {name} from {archive.path} into {engine.name}")
    # Engines load docker-archives; docker 20.10 cannot load OCI archives,
    # podman 4.3 not one whose index.json lists more than the image (its
    # SBOM, say), and neither loads an oci: directory: those are written as a
    # docker-archive first.
    if archive.transport == "docker-archive":
        engine.load(archive.path)
    else:
        with WorkStore() as work:
            engine.load_image(open_image(archive), name, work)
    if engine.image_id(name) != config:
        # An untagged archive, or one the engine named its own way: name it by ID.
        try:
            engine.tag(config, name)
        except EngineError as e:
            raise EngineError(f"{engine.name} loaded {archive.path} but has no image with config "
                              f"{config} ({e})") from None
        if engine.image_id(name) != config:
            raise EngineError(f"{engine.name} loaded {archive.path} but has no image with config {config}")
    return name
