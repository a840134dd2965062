"""Every transport, dispatched in one place: `open_image` reads an image
from any reference (files, engines, registries), `open_output` makes the
Output for any reference, `base_opener` gives assembly its base (built-in
or a reference). References are parsed once, by ocibuild.oci.reference.

The engine and registry packages are imported only when a reference needs
them: python-on-whales and httpx cost a tenth of a second to import."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError
from .oci.assembly import Base, OpenBase, Request, assemble
from .oci.bases import builtin_base, builtin_names
from .oci.blobs import WorkStore
from .oci.compression import Compression
from .oci.documents import PlatformMissing
from .oci.image import Image
from .oci.imageset import same_platform
from .oci.model import Platform
from .oci.readers import open_image as open_file_image
from .oci.reference import EngineRef, FileRef, Reference, RegistryRef, parse_reference
from .outputs import Output
from .registry.options import RegistryOptions


def open_image(ref: Reference | str, platform: Platform | None = None, *,
               registry: RegistryOptions | None = None, work: WorkStore | None = None) -> Image:
    """The image `ref` names; from an index, the one for `platform` (default:
    the host's). `registry` is needed for docker:// references; `work` holds
    what an engine saves for engine references."""
    if isinstance(ref, str):
        ref = parse_reference(ref, "image reference")
    if isinstance(ref, FileRef):
        return open_file_image(ref, platform)
    if isinstance(ref, RegistryRef):
        from .registry.pull import pull_image
        return pull_image(ref, platform, registry or RegistryOptions())
    if work is None:
        raise InputError(f"cannot read {ref} here: reading from an engine needs a work directory")
    return _engine_image(ref, work)


def open_attached(ref: Reference | str, artifact_type: str, platform: Platform | None = None, *,
                  registry: RegistryOptions | None = None) -> tuple[Image, list[bytes]]:
    """The image `ref` names (for `platform`, from an index) and the payloads
    of its `artifact_type` referrers (its SBOMs): from a layout's index.json,
    or a registry's referrers API or fallback tag. Engines keep none."""
    if isinstance(ref, str):
        ref = parse_reference(ref, "image reference")
    if isinstance(ref, EngineRef):
        raise InputError(f"{ref}: an engine keeps no referrers (SBOMs); read them from the oci:, "
                         "oci-archive: or docker:// output the image was written to")
    image = open_image(ref, platform, registry=registry)
    if isinstance(ref, FileRef):
        from .oci.readers import attached
        return image, attached(ref, image.digest, artifact_type)
    from .registry.pull import Puller
    with Puller(ref, registry or RegistryOptions()) as p:
        return image, p.referrers(image.digest, artifact_type)


def _engine_image(ref: EngineRef, work: WorkStore) -> Image:
    """An engine's image, saved as a docker-archive into `work` and read from there."""
    from .engines import Engine
    engine = Engine(ref.engine)
    if not engine.has(ref.name):
        raise InputError(f"{ref}: {engine.name} has no image {ref.name}")
    # The archive holds that one image (podman names it localhost/..., docker does not).
    return open_file_image(FileRef("docker-archive", engine.save(ref.name, work)))


def open_output(text: str, created: int, registry: RegistryOptions | None = None) -> Output:
    """The Output `text` names; `registry` for docker:// ones."""
    ref = parse_reference(text, "--output")
    if isinstance(ref, FileRef):
        from .outputs.files import ArchiveOutput, LayoutOutput
        return LayoutOutput(ref) if ref.transport == "oci" else ArchiveOutput(ref, created)
    if isinstance(ref, EngineRef):
        from .engines import Engine
        from .outputs.engine import EngineOutput
        return EngineOutput(ref, Engine(ref.engine))
    from .registry.push import RegistryOutput
    return RegistryOutput(ref, registry or RegistryOptions())


def parse_base(spec: str) -> Reference | None:
    """None for a built-in base's name, else the reference `--base` names."""
    if spec in builtin_names():
        return None
    if ":" not in spec:
        raise InputError(f"unknown base {spec!r}: use {', '.join(builtin_names())}, or oci:DIR[:ref], "
                         "oci-archive:FILE[:ref], docker-archive:FILE[:name:tag], docker://REF")
    return parse_reference(spec, "--base")


def base_opener(spec: str, work: WorkStore, compression: Compression,
                registry: RegistryOptions | None = None) -> OpenBase:
    """What assembly calls, once it knows the platform, to get the base;
    each platform's base opened once (a built-in base is built once)."""
    ref = parse_base(spec)
    opened: dict[Platform | None, Base] = {}

    def open_base(platform: Platform | None) -> Base:
        key = None if ref is None else platform
        if key in opened:
            return opened[key]
        if ref is None:
            image, paths = builtin_base(spec, work, compression)
            base = Base(image, paths, None)
        else:
            image = open_image(ref, platform, registry=registry, work=work)
            # The base's name, not its host path: the digest must not depend on
            # where the base file sits. Unnamed, only its digest is recorded.
            # Names as the user gave them (a registry's short name stays short).
            name = (spec.removeprefix("docker://") if isinstance(ref, RegistryRef)
                    else ref.name if isinstance(ref, EngineRef) else ref.ref)
            base = Base(image, None, name)
        opened[key] = base
        return base

    return open_base


def check_bases(spec: str, open_base: OpenBase, platforms: Sequence[Platform]) -> None:
    """Before anything is compiled: the base has an image for each platform
    (from its index), or one error names every platform it lacks."""
    missing, have = [], []
    for p in platforms:
        try:
            plat = open_base(p).image.platform
        except PlatformMissing as e:
            missing.append(str(p))
            have = e.have
            continue
        if plat.architecture and not same_platform(plat, p):
            missing.append(str(p))
            have = [str(plat)]
    if missing:
        raise InputError(f"the base {spec} has no image for {', '.join(missing)} (it has: "
                         f"{', '.join(have) or 'none'}); pick a base with every platform, or drop them "
                         "from --platform")


def assemble_image(req: Request, work: WorkStore, registry: RegistryOptions | None = None) -> Image:
    """`req` assembled on the base it names."""
    return assemble(req, work, base_opener(req.base, work, req.compression, registry))
