"""The product's use cases, below the CLI and free of click: write an image
to its outputs, and the main pipeline — a chaincode source or package,
compiled by a builder, assembled on a base, written to every output."""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from .errors import BuildError
from .fabric.common import Limits
from .oci.assembly import Add, Base, OpenBase, Request, assemble
from .oci.blobs import WorkStore
from .oci.image import Image
from .oci.imageset import ImageSet, Referrer, image_set, referrer, same_platform
from .oci.model import ANN_BASE_DIGEST, Platform
from .outputs import Output, write_all
from .progress import Progress
from .registry.options import RegistryOptions
from .transports import base_opener, check_bases

_T = TypeVar("_T")

if TYPE_CHECKING:
    from .builders.warm import WarmSettings
    from .gosource import GoBuild


@dataclass(frozen=True)
class ImageJob:
    """What to assemble and where it goes, checked before any work is done."""
    request: Request
    outputs: Sequence[Output]
    registry: RegistryOptions | None = None    # for docker:// bases (outputs hold their own)
    platforms: tuple[Platform, ...] = ()       # two or more: one image each, under an index
    sbom: bool = True                          # an SPDX SBOM attached to each image as a referrer


@dataclass(frozen=True)
class Outcome:
    """What a run made and wrote: for stdout (the digest) and --metadata-file."""
    images: ImageSet
    outputs: Sequence[Output]
    sboms: Mapping[str, str] = field(default_factory=dict)    # image digest → its SBOM's manifest digest
    timings: Mapping[str, float] = field(default_factory=dict)  # phase → seconds
    builder: str = ""
    toolchain: str = ""

    @property
    def digest(self) -> str:
        return self.images.digest


def run_job(job: ImageJob, progress: Progress) -> Outcome:
    """write_image in a work store of its own. Once every output is written,
    an interrupt during the clean-up does not undo the answer."""
    return _finished(lambda work: write_image(job, work, progress))


def _finished(step: Callable[[WorkStore], _T]) -> _T:
    """`step(work)` in a fresh work store, removed afterwards. An interrupt
    that arrives once `step` has returned (while the work store is being
    removed) does not undo the answer: the outputs are written, so
    "interrupted; nothing was written" would be false. The removal is
    finished, and the answer returned."""
    work = WorkStore()
    try:
        answer = step(work)
    except BaseException:
        work.close()
        raise
    try:
        work.close()
    except KeyboardInterrupt:
        work.close()
    return answer


@contextmanager
def timed(timings: dict[str, float], key: str, progress: Progress, title: str) -> Iterator[None]:
    """A progress phase, its duration kept under `key` (for --metadata-file)."""
    start = time.monotonic()
    with progress.phase(title):
        yield
    timings[key] = round(time.monotonic() - start, 3)


def platforms_of(job: ImageJob) -> list[Platform | None]:
    """The platforms the job makes an image for: its list, else the one its
    request names (None: from an added binary, else the host)."""
    return list(job.platforms) if job.platforms else [job.request.platform]


def write_image(job: ImageJob, work: WorkStore, progress: Progress, timings: dict[str, float] | None = None,
                open_base: OpenBase | None = None, **made: str) -> Outcome:
    """Assemble the job's image (one per platform, under an index when
    several), attach an SBOM to each, and write them to every output."""
    timings = {} if timings is None else timings
    req = job.request
    if open_base is None:
        open_base = base_opener(req.base, work, req.compression, job.registry)
        check_bases(req.base, open_base, job.platforms)
    with timed(timings, "assemble", progress, "assembling" + (
            f" {len(job.platforms)} images" if len(job.platforms) > 1 else "")):
        made_on = [_assemble_one(for_platform(req, p), work, open_base) for p in platforms_of(job)]
        images = [image for image, _ in made_on]
        found = image_set(images, index_annotations(images))
    sboms: dict[str, str] = {}
    if job.sbom:
        with timed(timings, "sbom", progress, "describing the image(s) (SPDX SBOM)"):
            said: set[str] = set()
            found = found.with_referrers(tuple(_sbom(job, image, base, progress, said) for image, base in made_on))
            sboms = {r.subject.digest: r.digest for r in found.referrers}
    with timed(timings, "write", progress, f"writing {len(job.outputs)} output(s)"):
        write_all(job.outputs, found, work, progress.say)
    return Outcome(found, job.outputs, sboms, timings, **made)


def for_platform(req: Request, platform: Platform | None) -> Request:
    """`req` for one platform's image: the adds for every platform and for
    this one."""
    if platform is None:
        return req
    return replace(req, platform=platform,
                   adds=tuple(a for a in req.adds if a.platform is None or same_platform(a.platform, platform)))


def index_annotations(images: list[Image]) -> dict:
    """An index carries what its images have in common of their annotations
    (creation time, Fabric's label and package ID, the user's), not their
    per-platform base digests."""
    docs = [i.manifest_doc.get("annotations") or {} for i in images]
    common = {k: v for k, v in docs[0].items() if all(d.get(k) == v for d in docs)}
    return {k: v for k, v in common.items() if k not in (ANN_BASE_DIGEST,)}


def _assemble_one(req: Request, work: WorkStore, open_base: OpenBase) -> tuple[Image, Base]:
    """The image, and the base it was assembled on."""
    used: list[Base] = []

    def opener(platform: Platform | None) -> Base:
        used.append(open_base(platform))
        return used[-1]

    return assemble(req, work, opener), used[-1]


def _sbom(job: ImageJob, image: Image, base: Base, progress: Progress, said: set[str]) -> Referrer:
    """The SPDX document describing `image`, as a referrer of it; what it
    could not read is said once."""
    from . import __version__
    from .oci.entries import FILE, host_entries
    from .sbom import SPDX_JSON, AddedFile, BaseInfo, describe
    req = for_platform(job.request, image.platform)
    added = [AddedFile("/" + e.path, e.source) for a in req.adds for e in host_entries(a.source, a.dest, 0, 0)
             if e.kind == FILE and e.source]
    info = (BaseInfo(req.base) if base.name is None
            else BaseInfo(base.name or req.base, base.image.digest, builtin=False))
    doc, problems = describe(image.digest, image.platform, added, info, req.created, __version__)
    for problem in problems:
        if problem not in said:
            said.add(problem)
            progress.say(f"warning: SBOM: {problem}")
    return referrer(image.descriptor(), SPDX_JSON, doc, req.created)


@dataclass(frozen=True)
class BuildRequest:
    """`ocibuild build`: the chaincode, how to compile it, and the image job
    (whose request has no files yet: the binary is added here)."""
    source: str                        # a Fabric package or a Go source directory
    image: ImageJob
    binary_path: str                   # absolute, in the image
    env: Mapping[str, str]             # the caller's environment (builders pass on parts of it)
    builder: str = "auto"
    builder_image: str = ""            # "": the builder's image whose Go fits the module
    go: str = ""                       # --go: a toolchain version (1.24, 1.24.4)
    go_proxy: str = ""                 # --go-proxy: a directory, a `fabric deps` tarball or a URL
    package: str = ""                  # --package: the module's package to build (./cmd/cc)
    repacked: bool = False             # the package file was re-made from a tree the peer extracted:
                                       # its package ID is not the peer's, so none is recorded
    go_env: Mapping[str, str] = field(default_factory=dict)   # the caller's GOPROXY, GOFLAGS, ...
    warm: WarmSettings | None = None   # reuse builder containers (None: --fresh-builder)
    network: bool = False
    ldflags: str = ""
    tags: str = ""
    cgo: bool = False
    import_path: str | None = None
    fabric_version: str = "2.5"
    limits: Limits = Limits()


def build_chaincode(req: BuildRequest, progress: Progress) -> Outcome:
    """Compile the chaincode (once per platform) and write its image; what
    was made. The package is read, checked and extracted, and the base
    checked for every platform, before any container starts."""
    return _finished(lambda work: _build_in(req, work, progress))


def _build_in(req: BuildRequest, work: WorkStore, progress: Progress) -> Outcome:
    # Imported here: `assemble` needs none of the package readers or builders.
    from .builders import choose
    from .diagnoses import check_go_platform
    from .errors import InputError
    from .fabric.conventions import INDEXES_PATH, image_changes
    from .fabric.package import DIRECTORY, go_source, open_package
    from .gomodules import check_reachable, modules_from
    from .gosource import GOPATH, GoBuild, check_confined, check_target, select_package
    from .oci.elf import go_version
    from .toolchains import BUILT_WITH_LABEL, Requirement, check_claim, pick, read_requirement

    job, given = req.image, req.image.request
    platforms = list(job.platforms) or [given.platform or Platform.host()]
    for p in platforms:
        check_go_platform(p)              # before anything is read or started
    pkg = open_package(req.source, work.root, req.limits)
    if req.repacked:
        pkg = replace(pkg, package_id="")
    src = go_source(pkg, req.import_path)
    if req.package:
        if pkg.kind != DIRECTORY:
            raise InputError(f"--package {req.package}: a chaincode package names its Go package itself "
                             "(metadata.json path), as the peer builds it; --package is for directory builds")
        src = select_package(src, req.package)
    check_target(src)
    check_confined(src)
    open_base = base_opener(given.base, work, given.compression, job.registry)
    check_bases(given.base, open_base, platforms)
    modules = modules_from(req.go_proxy, req.network, req.go_env, work.root, req.limits)
    builder = choose(req.builder, req.builder_image, progress.say, req.env, req.warm)
    check_reachable(modules, builder.name)
    need = read_requirement(os.path.join(src.root, "go.mod")) if src.mode != GOPATH else Requirement()
    toolchain = pick(builder.toolchains(), need, req.go, builder.name)     # before any container starts
    progress.say(f"toolchain: {toolchain}, for {need}")
    timings: dict[str, float] = {}
    multi = len(platforms) > 1
    adds, built_with = [], None
    for p in platforms:
        go = GoBuild(src, p, ldflags=req.ldflags, tags=req.tags, cgo=req.cgo, network=req.network,
                     toolchain=toolchain, modules=modules)
        out_dir = os.path.join(work.root, "out-" + str(p).replace("/", "-") if multi else "out")
        os.mkdir(out_dir)
        title = f"compiling {pkg.source} ({src.mode} mode) " + (f"for {p} " if multi else "") + f"with {builder.name}"
        with timed(timings, f"compile {p}" if multi else "compile", progress, title):
            binary = _compile(builder, go, out_dir, progress)
        check_machine(binary, p)
        built_with = go_version(binary)    # what the binary says, whatever the toolchain's label claimed
        check_claim(toolchain, built_with)
        adds.append(Add(binary, req.binary_path, platform=p if multi else None))
    if pkg.couchdb_indexes:
        adds.append(Add(pkg.couchdb_indexes, INDEXES_PATH))
    defaults = image_changes(pkg, req.fabric_version)
    if built_with:
        defaults = replace(defaults, labels={**defaults.labels, BUILT_WITH_LABEL: built_with.removeprefix("go")})
    changes = replace(given.changes.over(defaults), on_path=posixpath.dirname(req.binary_path))
    request = replace(given, adds=tuple(adds), platform=None if multi else platforms[0], changes=changes)
    return write_image(replace(job, request=request, platforms=tuple(platforms) if multi else ()), work,
                       progress, timings, open_base, builder=builder.name, toolchain=built_with or str(toolchain))


def _compile(builder, go: GoBuild, out_dir: str, progress: Progress) -> str:
    shown: list[str] = []          # what the builder said: the compiler's messages

    def say(line: str) -> None:
        shown.append(line)
        progress.say(line)

    try:
        return builder.compile(go, out_dir, say)
    except BuildError as e:
        raise explained(e, go, shown, progress.quiet) from None


def check_machine(binary: str, platform: Platform) -> None:
    """The compiled binary is an ELF for `platform` (a builder image that
    ignores GOARCH, or a toolchain that cannot cross-compile, is caught here)."""
    from .errors import InputError
    from .oci.elf import read_elf
    info = read_elf(binary)
    if info is None or not same_platform(info.platform, platform):
        what = "no ELF binary" if info is None else f"a binary for {info.platform}"
        raise InputError(f"the builder made {what}, not one for {platform}; check the builder image "
                         "(it must honour GOOS/GOARCH)")


def explained(e: BuildError, go: GoBuild, shown: list[str], quiet: bool) -> BuildError:
    """The compile failure in one line: what to do when a diagnosis knows
    the cause (diagnoses.compile_hint), else where (the first file:line the
    compiler named)."""
    from .diagnoses import compile_hint, first_position
    hint = compile_hint(go, e.output)
    position = "" if hint else first_position(shown)
    return BuildError(e.builder, e.exit_code, e.output, position=position, hint=hint, shown=not quiet)


@dataclass(frozen=True)
class DepsRequest:
    """`ocibuild fabric deps`: every module SOURCE needs, fetched through the
    configured proxy by the host's go, written as a tarball in the GOPROXY
    layout (`build --go-proxy FILE` reads it, offline)."""
    source: str                        # a Fabric package or a Go module directory
    output: str
    env: Mapping[str, str]             # the caller's environment (PATH, HOME: the host toolchains)
    go_env: Mapping[str, str] = field(default_factory=dict)   # GOPROXY, GOPRIVATE, ... as the CLI read them
    go_proxy: str = ""
    network: bool = True
    go: str = ""
    import_path: str | None = None
    mtime: int = 0                     # SOURCE_DATE_EPOCH for the tarball's entries
    limits: Limits = Limits()


def fetch_deps(req: DepsRequest, progress: Progress) -> str:
    """Write the dependency tarball; a one-line summary of it."""
    return _finished(lambda work: _deps_in(req, work, progress))


def _deps_in(req: DepsRequest, work: WorkStore, progress: Progress) -> str:
    from .builders.host import HostBuilder
    from .errors import InputError
    from .fabric.package import go_source, open_package
    from .gomodules import modules_from, write_deps
    from .gosource import GOPATH, GoBuild, check_confined
    from .toolchains import pick, read_requirement

    pkg = open_package(req.source, work.root, req.limits)
    src = go_source(pkg, req.import_path)
    if src.mode == GOPATH:
        raise InputError(f"{pkg.source} has no go.mod (GOPATH mode): it has no modules to fetch; its "
                         "dependencies travel inside the package, under src/")
    check_confined(src)
    host = HostBuilder(req.env)
    toolchain = pick(host.toolchains(), read_requirement(os.path.join(src.root, "go.mod")), req.go, "host")
    modules = modules_from(req.go_proxy, req.network, req.go_env, work.root, req.limits)
    job = GoBuild(src, Platform.host(), network=req.network, toolchain=toolchain, modules=modules)
    fetch = os.path.join(work.root, "fetch")
    os.mkdir(fetch)
    with progress.phase(f"fetching the modules of {pkg.source} with go{toolchain.version}"):
        try:
            download = host.download(job, fetch, progress.say)
        except BuildError as e:
            from .diagnoses import compile_hint
            raise BuildError("host", e.exit_code, e.output, hint=compile_hint(job, e.output),
                             shown=not progress.quiet, command="go mod download") from None
    count = write_deps(download, req.output, req.mtime)     # no modules at all: an empty proxy
    return f"{req.output}: {count} module(s)"
