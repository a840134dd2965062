"""The product's use cases, below the CLI and free of click: write an image
to its outputs, and the main pipeline — a chaincode source or package,
compiled by a builder, assembled on a base, written to every output."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .errors import BuildError
from .fabric.common import Limits
from .oci.assembly import Add, Request
from .oci.blobs import WorkStore
from .oci.model import Platform
from .outputs import Output, write_all
from .progress import Progress
from .registry.options import RegistryOptions
from .transports import assemble_image

if TYPE_CHECKING:
    from .gosource import GoBuild


@dataclass(frozen=True)
class ImageJob:
    """What to assemble and where it goes, checked before any work is done."""
    request: Request
    outputs: Sequence[Output]
    registry: RegistryOptions | None = None    # for docker:// bases (outputs hold their own)


def run_job(job: ImageJob, progress: Progress) -> str:
    """write_image in a work store of its own; the digest. Once every output
    is written, an interrupt during the clean-up does not undo the answer."""
    return _finished(lambda work: write_image(job, work, progress))


def _finished(step: Callable[[WorkStore], str]) -> str:
    """`step(work)` in a fresh work store, removed afterwards. An interrupt
    that arrives once `step` has returned (while the work store is being
    removed) does not undo the answer: the outputs are written, so
    "interrupted; nothing was written" would be false. The removal is
    finished, and the digest returned."""
    work = WorkStore()
    try:
        digest = step(work)
    except BaseException:
        work.close()
        raise
    try:
        work.close()
    except KeyboardInterrupt:
        work.close()
    return digest


def write_image(job: ImageJob, work: WorkStore, progress: Progress) -> str:
    """Assemble the job's image and write it to every output; its digest."""
    with progress.phase("assembling"):
        image = assemble_image(job.request, work, job.registry)
    with progress.phase(f"writing {len(job.outputs)} output(s)"):
        write_all(job.outputs, image, work, progress.say)
    return image.digest


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
    network: bool = False
    ldflags: str = ""
    tags: str = ""
    cgo: bool = False
    import_path: str | None = None
    fabric_version: str = "2.5"
    limits: Limits = Limits()


def build_chaincode(req: BuildRequest, progress: Progress) -> str:
    """Compile the chaincode and write its image; the image digest. The
    package is read, checked and extracted before any container starts."""
    return _finished(lambda work: _build_in(req, work, progress))


def _build_in(req: BuildRequest, work: WorkStore, progress: Progress) -> str:
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

    check_go_platform(req.image.request.platform or Platform.host())    # before anything is read or started
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
    platform = req.image.request.platform or Platform.host()
    modules = modules_from(req.go_proxy, req.network, req.go_env, work.root, req.limits)
    builder = choose(req.builder, req.builder_image, progress.say, req.env)
    check_reachable(modules, builder.name)
    need = read_requirement(os.path.join(src.root, "go.mod")) if src.mode != GOPATH else Requirement()
    toolchain = pick(builder.toolchains(), need, req.go, builder.name)     # before any container starts
    progress.say(f"toolchain: {toolchain}, for {need}")
    go = GoBuild(src, platform, ldflags=req.ldflags, tags=req.tags, cgo=req.cgo, network=req.network,
                 toolchain=toolchain, modules=modules)
    out_dir = os.path.join(work.root, "out")
    os.mkdir(out_dir)
    with progress.phase(f"compiling {pkg.source} ({src.mode} mode) with {builder.name}"):
        shown: list[str] = []          # what the builder said: the compiler's messages

        def say(line: str) -> None:
            shown.append(line)
            progress.say(line)

        try:
            binary = builder.compile(go, out_dir, say)
        except BuildError as e:
            raise explained(e, go, shown, progress.quiet) from None
    adds = [Add(binary, req.binary_path)]
    if pkg.couchdb_indexes:
        adds.append(Add(pkg.couchdb_indexes, INDEXES_PATH))
    given = req.image.request
    defaults = image_changes(pkg, req.fabric_version)
    built_with = go_version(binary)       # what the binary says, whatever the toolchain's label claimed
    check_claim(toolchain, built_with)
    if built_with:
        defaults = replace(defaults, labels={**defaults.labels, BUILT_WITH_LABEL: built_with.removeprefix("go")})
    changes = replace(given.changes.over(defaults), on_path=posixpath.dirname(req.binary_path))
    request = replace(given, adds=tuple(adds), platform=platform, changes=changes)
    return write_image(replace(req.image, request=request), work, progress)


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
