"""The command line: reads flags and the environment once, here, passes
plain values down, and turns every OcibuildError into one `error:` line."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click

from . import __version__
from .build import BuildRequest, DepsRequest, ImageJob, Outcome, build_chaincode, fetch_deps, run_job
from .builders import BUILDERS
from .builders.warm import DEFAULT_IDLE, WarmSettings
from .diagnoses import check_linux
from .errors import InputError, OcibuildError
from .extbuilder import Settings, install, outputs_for
from .extbuilder import build as external_build
from .extbuilder import release as external_release
from .extbuilder import run as external_run
from .fabric.common import Limits
from .fabric.conventions import BINARY_PATH, DEFAULT_VERSION
from .fsutil import atomic_write
from .gosource import NETWORK_VARS
from .metadata import metadata
from .oci.assembly import Add, Request
from .oci.blobs import WorkStore
from .oci.compression import compression
from .oci.entries import image_path
from .oci.image import ConfigChanges
from .oci.imageset import same_platform
from .oci.model import Platform
from .oci.reference import EngineRef, RegistryRef, parse_reference
from .outputs import check_distinct, check_platforms
from .progress import human_duration, human_size
from .registry.options import RegistryOptions
from .transports import open_attached, open_image, open_output, parse_base

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
AUTHFILE_HELP = ("Registry credentials from this file only (auth.json as podman login writes it, "
                 "containers-auth.json(5), or docker's config.json), instead of the usual lookup. "
                 "Env: REGISTRY_AUTH_FILE.")


class Ctx:
    """Progress on stderr: a live status line on a terminal (rich), plain
    lines otherwise, nothing with --quiet; each phase says how long it took.
    stdout is kept for the result. --debug and -q/--quiet set `debug` and
    `quiet` here wherever they are given: before the subcommand or after it
    (the console is made on first use, once both are known)."""

    def __init__(self, debug: bool = False, quiet: bool = False):
        self.debug, self.quiet = debug, quiet
        self._console: Any = None
        self._looked = False

    def _terminal(self) -> Any:
        """The rich console when stderr is a terminal and progress is shown, else None."""
        if self.quiet:
            return None
        if not self._looked:
            self._looked = True
            if sys.stderr.isatty():
                from rich.console import Console
                self._console = Console(stderr=True, highlight=False)
        return self._console

    def say(self, msg: str) -> None:
        if self.quiet:
            return
        console = self._terminal()
        if console is not None:
            from rich.markup import escape
            console.print(f"[dim]ocibuild:[/dim] {escape(msg)}")
        else:
            click.echo(f"ocibuild: {msg}", err=True)

    @contextmanager
    def phase(self, title: str) -> Iterator[None]:
        """A step (compile, assemble, write): a spinner on a terminal, then
        `✓ title (1.2 s)`; plain lines `title` and `title: done in 1.2 s`.
        A step that fails says nothing more: the error line follows."""
        start = time.monotonic()
        console = self._terminal()
        if console is None:
            self.say(title)
            yield
            self.say(f"{title}: done in {human_duration(time.monotonic() - start)}")
            return
        from rich.markup import escape
        with console.status(escape(title)):
            yield
        took = human_duration(time.monotonic() - start)
        console.print(f"[green]✓[/green] {escape(title)} [dim]({took})[/dim]")


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value and param.name:
        setattr(ctx.ensure_object(Ctx), param.name, True)
    return value


def _common_flags() -> list[click.Parameter]:
    """--debug and -q/--quiet, taken by the group and by every command, so
    that `ocibuild -q build ...` and `ocibuild build -q ...` are the same;
    they set the run's Ctx instead of being passed to the command."""
    return [click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_set_flag,
                         help="Show tracebacks on errors."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                         callback=_set_flag, help="No progress messages on stderr.")]


class _Flags:
    """What ocibuild's commands and groups add to click's: the common flags,
    and usage errors that know their command (click's parser leaves some,
    such as a missing option value, without it), so the message can point
    to that command's --help."""

    params: list[click.Parameter]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.params.extend(_common_flags())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)          # type: ignore[misc]
        except click.UsageError as e:
            if e.ctx is None:
                e.ctx = ctx
            raise


class _Command(_Flags, click.Command):
    pass


class _Group(_Flags, click.Group):
    command_class = _Command
    group_class = type                   # subgroups (fabric, fabric external) are _Groups too


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocibuild")
@click.pass_context
def cli(ctx):
    """Write OCI images for Fabric chaincode directly: no Dockerfile, no daemon.

    Exit status: 0 done, 1 internal error, 2 usage, 3 bad input, 4 compile
    failed, 5 registry, 6 container engine, 7 output not written, 130
    interrupted."""
    ctx.ensure_object(Ctx)


_IMAGE_OPTIONS = [
    click.option("--base", default="static", show_default=True,
                 help="Built-in base (static: users, CA certificates, time zones; static-bare; scratch) "
                      "or oci:DIR[:ref], oci-archive:FILE[:ref], "
                      "docker-archive:FILE[:name:tag], docker-daemon:NAME:TAG, containers-storage:NAME:TAG, "
                      "docker://HOST/REPO[:TAG|@DIGEST]."),
    click.option("--entrypoint", help="JSON array, or a string split as a shell would."),
    click.option("--cmd", help="JSON array, or a string split as a shell would."),
    click.option("--env", "envs", multiple=True, metavar="K=V",
                 help="Set an environment variable. Repeatable."),
    click.option("--user", help="Default user, e.g. 500:500 or chaincode; default: assemble: the base's "
                                "(65532:65532 for the built-in bases); build: chaincode, 500:500."),
    click.option("--workdir", help="Working directory (absolute); default: the base's."),
    click.option("--label", "labels", multiple=True, metavar="K=V", help="Config label. Repeatable."),
    click.option("--annotation", "annotations", multiple=True, metavar="K=V",
                 help="Manifest annotation. Repeatable."),
    click.option("--platform", metavar="OS/ARCH[/VARIANT][,...]",
                 help="The image's platform, or a comma-separated list: one image per platform under an "
                      "OCI index (build cross-compiles each); default: from an added ELF binary, else the host."),
    click.option("--sbom", type=click.Choice(["spdx", "none"]), default="spdx", show_default=True,
                 help="Attach an SPDX 2.3 SBOM to each image as an OCI referrer (oci:, oci-archive:, docker://)."),
    click.option("--metadata-file", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Write what was made as JSON: digests, outputs, platforms, layers, SBOMs, timings."),
    click.option("--digest-file", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Write the image (or index) digest to FILE, as skopeo --digestfile does."),
    click.option("--compression", "comp", default="gzip", show_default=True,
                 type=click.Choice(["gzip", "zstd", "none"]), help="Compression of the new layer."),
    click.option("--chown", metavar="UID:GID", default="0:0", show_default=True,
                 help="Owner of every added file."),
    click.option("--output", "outputs", multiple=True, required=True, metavar="REF",
                 help="oci:DIR[:ref], oci-archive:FILE[:ref], docker-archive:FILE[:name:tag], "
                      "docker-daemon:NAME:TAG, containers-storage:NAME:TAG, "
                      "docker://HOST[:PORT]/REPO[:TAG]. Repeatable."),
    click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST:PORT",
                 help="Allow plain HTTP or unverified TLS to this registry (localhost, 127.0.0.0/8 "
                      "and [::1] get plain HTTP without it, when they do not speak TLS). Repeatable."),
    click.option("--authfile", metavar="FILE", help=AUTHFILE_HELP),
]


def image_options(fn):
    """The options every image-writing command takes (assemble, build)."""
    for option in reversed(_IMAGE_OPTIONS):
        fn = option(fn)
    return fn


def image_job(opts: Mapping[str, Any], env: Mapping[str, str]) -> ImageJob:
    """Parse image options (as click passes them) into a request and outputs,
    checking every output before anything is built."""
    base = parse_base(opts["base"])
    needs_registry = isinstance(base, RegistryRef) or any(o.startswith("docker://") for o in opts["outputs"])
    registry = registry_options(env, opts["insecure"], opts["authfile"]) if needs_registry else None
    created = source_date_epoch(env.get("SOURCE_DATE_EPOCH"))
    outs = [open_output(o, created, registry) for o in opts["outputs"]]
    check_distinct(outs)
    changes = ConfigChanges(
        entrypoint=_argv(opts["entrypoint"], "--entrypoint"), cmd=_argv(opts["cmd"], "--cmd"),
        env=_pairs(opts["envs"], "--env", _ENV_KEY),
        user=None if opts["user"] is None else _text(opts["user"], "--user"),
        workdir=_workdir(opts["workdir"]), labels=_pairs(opts["labels"], "--label"),
        annotations=_pairs(opts["annotations"], "--annotation"))
    adds = tuple(_add(a) for a in opts.get("adds", ()))
    platforms = _platforms(opts["platform"], adds)
    req = Request(adds=adds, base=opts["base"], compression=compression(opts["comp"]),
                  platform=platforms[0] if len(platforms) == 1 else None,
                  created=created, owner=_owner(opts["chown"]), changes=changes)
    for path in (opts["metadata_file"], opts["digest_file"]):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise InputError(f"cannot write {path}: directory {os.path.dirname(os.path.abspath(path))} "
                             "does not exist")
    check_platforms(outs, platforms, Platform.host())
    for out in outs:
        out.check()
    return ImageJob(req, outs, registry, platforms=tuple(platforms) if len(platforms) > 1 else (),
                    sbom=opts["sbom"] != "none")


def _platforms(text: str | None, adds: tuple[Add, ...]) -> list[Platform]:
    """--platform's list (Linux only: the bases are Linux), each once; else
    the platforms `--add PLATFORM=...` names; else none (decided later)."""
    named = list(dict.fromkeys(a.platform for a in adds if a.platform is not None))
    if not text:
        return named
    platforms: list[Platform] = []
    for item in text.split(","):
        p = check_linux(Platform.parse(item))
        if any(same_platform(p, q) for q in platforms):
            raise InputError(f"--platform {text}: {p} is listed twice")
        platforms.append(p)
    for p in named:
        if not any(same_platform(p, q) for q in platforms):
            raise InputError(f"--add {p}=...: {p} is not in --platform {text}")
    return platforms


def report(outcome: Outcome, opts: Mapping[str, Any]) -> None:
    """The result: the digest on stdout, and the files --digest-file and
    --metadata-file name (written once every output is)."""
    if opts["digest_file"]:
        atomic_write(opts["digest_file"], outcome.digest.encode())
    if opts["metadata_file"]:
        atomic_write(opts["metadata_file"], json.dumps(metadata(outcome), indent=2).encode() + b"\n")
    click.echo(outcome.digest)


@cli.command()
@click.option("--add", "adds", multiple=True, metavar="SRC:DEST",
              help="Add a host file or directory tree at DEST (absolute) in the image. Repeatable.")
@image_options
@click.pass_obj
def assemble(ctx: Ctx, **opts):
    """Assemble an image from a base and host files; print its digest."""
    report(run_job(image_job(opts, os.environ), ctx), opts)


@cli.command("build")
@click.argument("source")
@click.option("--builder", "builder_name", default="auto", show_default=True,
              type=click.Choice(BUILDERS),
              help="auto: docker with buildx if reachable, else podman, else the host's go.")
@click.option("--builder-image", envvar="OCIBUILD_BUILDER_IMAGE", default="",
              help="Go toolchain image (or docker-archive:FILE / oci-archive:FILE to load first); "
                   "default: of the engine's images labelled org.ocibuild.builder.go-version, the lowest Go "
                   "that fits the module's go and toolchain lines. Env: OCIBUILD_BUILDER_IMAGE.")
@click.option("--go", "go_version", default="", metavar="VERSION",
              help="The Go toolchain (1.24, 1.24.4); default: the lowest available that fits the "
                   "module's go and toolchain lines. Host toolchains: go on PATH, OCIBUILD_TOOLCHAINS, "
                   "~/.cache/ocibuild/toolchains, /var/cache/ocibuild/toolchains, /usr/lib/go-*.")
@click.option("--network", type=click.Choice(["none", "default"]), default="none", show_default=True,
              help="Network during the build: none means no module downloads (but from a --go-proxy "
                   "directory or tarball); default passes on GOPROXY, GOPRIVATE, GONOPROXY, GONOSUMDB, GOSUMDB, "
                   "GOINSECURE and GOFLAGS from the environment (not `go env -w` settings).")
@click.option("--package", "go_package", default="", metavar="./DIR|IMPORT-PATH",
              help="Directory builds: the module's main package to build (./cmd/cc, or its import "
                   "path); default: the module's root.")
@click.option("--go-proxy", default="", metavar="DIR|FILE|URL",
              help="Modules from a proxy: a directory in the GOPROXY layout (a GOMODCACHE's "
                   "cache/download is one; works with --network none), a `fabric deps` tarball, or "
                   "an http(s) mirror (needs --network default). go.sum is still verified.")
@click.option("--fresh-builder", is_flag=True,
              help="A new builder container (docker: a BuildKit solve) for this build, as before warm "
                   "builders; default: reuse a warm builder container (see `ocibuild builder`).")
@click.option("--builder-idle", type=click.IntRange(1), default=DEFAULT_IDLE, show_default=True, metavar="SECONDS",
              help="A warm builder container stops by itself after this long unused.")
@click.option("--ldflags", default="", help="Extra -ldflags for go build.")
@click.option("--tags", default="", help="Go build tags (comma-separated).")
@click.option("--cgo", is_flag=True, help="Enable cgo, linked fully static.")
@click.option("--binary-path", default=BINARY_PATH, show_default=True,
              help="Where the binary goes in the image (ending in /: a directory, the binary named "
                   "chaincode in it); its directory is put on PATH.")
@click.option("--import-path", help="GOPATH mode: the package's import path (default: the "
                                    "package's metadata path, else the directory name).")
@click.option("--fabric-version", default=DEFAULT_VERSION, show_default=True,
              help="Written as label org.hyperledger.fabric.version and CORE_CHAINCODE_BUILDLEVEL.")
@click.option("--max-inflated-size", type=click.IntRange(1), default=Limits().max_bytes, show_default=True,
              help="Packages: refuse more than this many bytes once inflated.")
@click.option("--max-entries", type=click.IntRange(1), default=Limits().max_entries, show_default=True,
              help="Packages: refuse more entries than this.")
@image_options
@click.pass_obj
def build_command(ctx: Ctx, source, builder_name, builder_image, go_version, network, go_package, go_proxy,
                  fresh_builder, builder_idle, ldflags, tags, cgo,
                  binary_path, import_path, fabric_version, max_inflated_size, max_entries, **opts):
    """Compile Go chaincode and assemble its image; print its digest.

    SOURCE is a Fabric chaincode package (lifecycle .tar.gz or legacy 1.x
    deployment spec, detected from its content) or a Go module or GOPATH-mode
    package directory. The image follows the peer's conventions: the binary
    on PATH as `chaincode`, no entrypoint, user chaincode (500:500),
    Fabric's labels and environment."""
    env = dict(os.environ)
    go_env = _go_env(env, ctx.debug and network == "default")
    if binary_path.endswith("/"):          # a directory: the binary keeps its name
        binary_path += "chaincode"
    binary_dest = "/" + image_path(binary_path, "--binary-path")
    req = BuildRequest(
        source=source, image=image_job(opts, env), binary_path=binary_dest, env=env, builder=builder_name,
        builder_image=builder_image, go=go_version, network=network == "default", go_proxy=go_proxy, package=go_package,
        go_env=go_env, warm=None if fresh_builder else WarmSettings(builder_state_dir(env), builder_idle),
        ldflags=ldflags, tags=tags, cgo=cgo, import_path=import_path, fabric_version=fabric_version,
        limits=Limits(max_bytes=max_inflated_size, max_entries=max_entries))
    report(build_chaincode(req, ctx), opts)


def builder_state_dir(env: Mapping[str, str]) -> str:
    """Where warm builder containers keep their work areas: the user's
    runtime directory (tmpfs, per user) when there is one, else the cache."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "ocibuild", "builders")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "ocibuild", "builders")


@cli.group("builder")
def builder_group():
    """Warm builder containers: `build` starts one per engine, builder image,
    network mode and cache, reuses it, and it stops by itself when idle."""


@builder_group.command("status")
def builder_status():
    """List your warm builder containers (docker and podman)."""
    from .builders.warm import builders
    for engine_name in ("docker", "podman"):
        if not _engine_here(engine_name):
            continue                   # that engine is not here: nothing of it to show
        found = builders(engine_name, WarmSettings(builder_state_dir(os.environ)))
        for name, key in found:
            click.echo(f"{engine_name}\t{name}\t{key.get('image', '?')}\tnetwork="
                       f"{'default' if key.get('network') else 'none'}\tcache={key.get('cache', '?')}")


@builder_group.command("stop")
def builder_stop():
    """Stop and remove your warm builder containers (docker and podman)."""
    from .builders.warm import stop
    settings = WarmSettings(builder_state_dir(os.environ))
    for engine_name in ("docker", "podman"):
        if not _engine_here(engine_name):
            continue
        for name in stop(engine_name, settings):
            click.echo(f"{engine_name}\t{name}\tstopped")


def _engine_here(name: str) -> bool:
    """Installed and reachable by this user (the cheap probes of --builder auto)."""
    from .builders import engine_unusable
    return not engine_unusable(name, os.environ)


@cli.group()
def fabric():
    """Fabric helpers: package IDs, the peer's image names, writing packages."""


def _go_env(env: dict[str, str], show: bool) -> dict[str, str]:
    """The caller's Go variables a build with the network gets (NETWORK_VARS;
    settings made with `go env -w` live in go's own file and are not read).
    `show`: say them on stderr (--debug), credentials in URLs hidden."""
    go_env = {k: env[k] for k in NETWORK_VARS if k in env}
    if show:
        shown = " ".join(k + "=" + _USERINFO.sub(r"\1***@", v) for k, v in sorted(go_env.items()))
        click.echo(f"debug: Go environment passed to the builder: {shown or 'none set'}", err=True)
    return go_env


_USERINFO = re.compile(r"(://)[^/@\s]+@")


@fabric.command("deps")
@click.argument("source")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The tarball to write (a module proxy tree; `build --go-proxy FILE` reads it).")
@click.option("--go-proxy", default="", metavar="DIR|FILE|URL",
              help="Fetch through this proxy rather than the environment's GOPROXY.")
@click.option("--network", type=click.Choice(["none", "default"]), default="default", show_default=True,
              help="none: only from a --go-proxy directory or tarball.")
@click.option("--go", "go_version", default="", metavar="VERSION", help="The host Go toolchain to use.")
@click.option("--import-path", help="The package's import path, as for build.")
@click.pass_obj
def fabric_deps(ctx: Ctx, source, output, go_proxy, network, go_version, import_path):
    """Fetch every module SOURCE needs into a reproducible tarball.

    SOURCE is a Go module directory or a Fabric package. Run it on a
    connected machine (the host's go fetches, sandboxed, through GOPROXY or
    --go-proxy, checking go.sum); carry the tarball across the air gap and
    build there with `ocibuild build SOURCE --go-proxy FILE`. The same
    go.sum gives the same bytes (SOURCE_DATE_EPOCH sets the entries' mtime)."""
    env = dict(os.environ)
    req = DepsRequest(source=source, output=output, env=env,
                      go_env=_go_env(env, ctx.debug and network == "default"), go_proxy=go_proxy,
                      network=network == "default", go=go_version, import_path=import_path,
                      mtime=source_date_epoch(env.get("SOURCE_DATE_EPOCH")))
    click.echo(fetch_deps(req, ctx))


@fabric.command("install-builder")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--engine", type=click.Choice(["podman", "docker", "none"]), default="podman", show_default=True,
              help="Where images are loaded and chaincode runs (none: build only, e.g. --output docker://...).")
@click.option("--builder", "builder_name", default="auto", show_default=True, type=click.Choice(BUILDERS))
@click.option("--builder-image", default="", help="As for build.")
@click.option("--go", "go_version", default="", metavar="VERSION", help="As for build.")
@click.option("--go-proxy", default="", metavar="DIR|FILE|URL", help="As for build.")
@click.option("--network", type=click.Choice(["none", "default"]), default="none", show_default=True,
              help="During the compile, as for build.")
@click.option("--output", "outputs", multiple=True, metavar="REF",
              help="Also write each image here (e.g. docker://registry/repo:tag). Repeatable.")
@click.option("--run-network", default="host", show_default=True,
              help="The chaincode container's network (host: peer_address resolves as for the peer).")
@click.option("--fabric-version", default=DEFAULT_VERSION, show_default=True)
def fabric_install_builder(directory, engine, builder_name, builder_image, go_version, go_proxy, network, outputs,
                           run_network, fabric_version):
    """Write a peer external builder (DIR/bin/detect, build, release, run).

    The executables call this installation of ocibuild; their settings are
    in DIR/ocibuild-builder.json. Prints the core.yaml entry to add under
    chaincode.externalBuilders."""
    # Paths as absolute paths: the peer runs the builder from its own directory.
    if go_proxy and not go_proxy.startswith(("http://", "https://")):
        go_proxy = os.path.abspath(go_proxy)
    if builder_image.partition(":")[0] in ("docker-archive", "oci-archive", "oci"):
        kind, _, rest = builder_image.partition(":")
        builder_image = f"{kind}:{os.path.abspath(rest)}" if not rest.startswith("/") else builder_image
    settings = Settings(engine=engine, builder=builder_name, builder_image=builder_image, go=go_version,
                        go_proxy=go_proxy, network=network, outputs=tuple(outputs), run_network=run_network,
                        fabric_version=fabric_version)
    for ref in outputs:
        open_output(ref, 0)                  # checked now, not at the peer's first build
    click.echo(install(directory, settings, sys.executable), nl=False)


@fabric.group("external", hidden=True)
def fabric_external():
    """The steps a peer runs (through DIR/bin/*, written by install-builder)."""


@fabric_external.command("build")
@click.option("--settings", "settings_path", required=True)
@click.argument("source_dir")
@click.argument("metadata_dir")
@click.argument("output_dir")
@click.pass_obj
def fabric_external_build(ctx: Ctx, settings_path, source_dir, metadata_dir, output_dir):
    settings = Settings.read(settings_path)
    env = dict(os.environ)
    os.makedirs(output_dir, exist_ok=True)
    # The image options exactly as `ocibuild build SOURCE --output ...` would have them.
    args = [source_dir, *(a for ref in outputs_for(output_dir, settings) for a in ("--output", ref))]
    opts = build_command.make_context("build", args).params
    job = image_job(opts, env)
    click.echo(external_build(source_dir, metadata_dir, output_dir, job, settings, env,
                              _go_env(env, ctx.debug and settings.network == "default"), ctx,
                              warm=WarmSettings(builder_state_dir(env))))


@fabric_external.command("release")
@click.option("--settings", "settings_path", required=True)
@click.argument("output_dir")
@click.argument("release_dir")
def fabric_external_release(settings_path, output_dir, release_dir):
    Settings.read(settings_path)
    external_release(output_dir, release_dir)


@fabric_external.command("run")
@click.option("--settings", "settings_path", required=True)
@click.argument("output_dir")
@click.argument("run_metadata_dir")
@click.pass_obj
def fabric_external_run(ctx: Ctx, settings_path, output_dir, run_metadata_dir):
    try:
        code = external_run(output_dir, run_metadata_dir, Settings.read(settings_path), ctx)
    except KeyboardInterrupt:
        # The peer stopping its chaincode (SIGTERM) is the normal end, not an error.
        click.echo("ocibuild: stopped; the chaincode container is removed", err=True)
        code = 143
    raise SystemExit(code)


@fabric.command("package-id")
@click.argument("package", type=click.Path(dir_okay=False))
def fabric_package_id(package):
    """The package ID (label:sha256) a peer computes for PACKAGE."""
    from .fabric.names import package_id
    click.echo(package_id(package))


@fabric.command("image-name")
@click.argument("ccid")
@click.option("--network-id", default="", help="The peer's CORE_PEER_NETWORKID (often 'dev').")
@click.option("--peer-id", default="", help="The peer's CORE_PEER_ID (e.g. peer0.org1.example.com).")
def fabric_image_name(ccid, network_id, peer_id):
    """The image name a peer looks for (tag latest) before building CCID itself."""
    from .fabric.names import peer_image_name
    click.echo(peer_image_name(network_id, peer_id, ccid))


@fabric.command("package")
@click.argument("source", required=False)
@click.option("--type", "cc_type", type=click.Choice(["golang", "ccaas", "k8s"]), default="golang",
              show_default=True)
@click.option("--label", required=True, help="The package label, e.g. mycc_1.0.")
@click.option("--output", "out", required=True, help="The package file to write (.tar.gz).")
@click.option("--path", "import_path", help="golang: the import path (default: go.mod's module).")
@click.option("--address", help="ccaas: host:port where the chaincode server listens.")
@click.option("--dial-timeout", default="10s", show_default=True, help="ccaas: dial timeout.")
@click.option("--tls-required", is_flag=True, help="ccaas: the peer must use TLS.")
@click.option("--image-name", "image_name_", help="k8s: the image name, e.g. registry/acme/cc.")
@click.option("--image-digest", help="k8s: the image digest sha256:...")
@click.option("--image", "image_ref", help="k8s: read the digest from this image (oci:, oci-archive:, "
                                            "docker-archive:, docker-daemon:, containers-storage:, "
                                            "docker://) instead of --image-digest.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST:PORT",
              help="--image docker://: allow plain HTTP or unverified TLS to this registry.")
@click.option("--authfile", metavar="FILE", help="--image docker://: " + AUTHFILE_HELP)
def fabric_package(source, cc_type, label, out, import_path, address, dial_timeout, tls_required,
                   image_name_, image_digest, image_ref, insecure, authfile):
    """Write a lifecycle package; print its package ID. golang packages SOURCE
    (a module directory) as `peer lifecycle chaincode package` would; ccaas
    and k8s package a connection.json / image.json (SOURCE, if given, is a
    directory whose META-INF/ is included)."""
    from .fabric.writer import write_ccaas, write_golang, write_k8s
    env = os.environ
    mtime = source_date_epoch(env.get("SOURCE_DATE_EPOCH"))
    meta_inf = os.path.join(source, "META-INF") if source and os.path.isdir(
        os.path.join(source, "META-INF")) else None
    if cc_type == "golang":
        if not source:
            raise InputError("fabric package --type golang needs SOURCE, the module directory")
        pid = write_golang(out, source, label, import_path, mtime=mtime)
    elif cc_type == "ccaas":
        if not address:
            raise InputError("fabric package --type ccaas needs --address host:port")
        pid = write_ccaas(out, label, address, dial_timeout, tls_required, meta_inf=meta_inf, mtime=mtime)
    else:
        if not image_name_:
            raise InputError("fabric package --type k8s needs --image-name")
        if image_ref:
            ref = parse_reference(image_ref, "--image")
            if isinstance(ref, EngineRef):
                click.echo(f"ocibuild: note: the digest of {ref} is that of {ref.engine}'s export of it; "
                           "a registry serves the digest ocibuild printed when it wrote the image", err=True)
            with WorkStore() as work:
                image_digest = open_image(ref, registry=registry_options(env, insecure, authfile),
                                          work=work).digest
        if not image_digest:
            raise InputError("fabric package --type k8s needs --image-digest sha256:... or --image REF")
        pid = write_k8s(out, label, image_name_, image_digest, meta_inf=meta_inf, mtime=mtime)
    click.echo(pid)


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: manifest and config.")
@click.option("--platform", help="From an index, the image for os/arch[/variant].")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST:PORT",
              help="docker:// REF: allow plain HTTP or unverified TLS to this registry.")
@click.option("--authfile", metavar="FILE", help="docker:// REF: " + AUTHFILE_HELP)
def inspect(ref, as_json, platform, insecure, authfile):
    """Summarise an image: platform, layers, sizes, config, labels."""
    plat = Platform.parse(platform) if platform else None
    with WorkStore() as work:
        image = open_image(ref, plat, registry=registry_options(os.environ, insecure, authfile), work=work)
        cfg = image.config_doc
    if as_json:
        click.echo(json.dumps({"digest": image.digest, "mediaType": image.media_type,
                               "manifest": image.manifest_doc, "config": cfg}, indent=2))
        return
    run = cfg.get("config") or {}
    rows = [("digest", image.digest), ("platform", str(image.platform)),
            ("created", cfg.get("created", "")), ("user", run.get("User", "")),
            ("entrypoint", _show(run.get("Entrypoint"))), ("cmd", _show(run.get("Cmd"))),
            ("workdir", run.get("WorkingDir", ""))]
    for k, v in rows:
        click.echo(f"{k:<11} {v}")
    for e in run.get("Env") or []:
        click.echo(f"{'env':<11} {e}")
    for k, v in sorted((run.get("Labels") or {}).items()):
        click.echo(f"{'label':<11} {k}={v}")
    for k, v in sorted((image.manifest_doc.get("annotations") or {}).items()):
        click.echo(f"{'annotation':<11} {k}={v}")
    total = 0
    for lay in image.layers:
        d = lay.descriptor
        total += d.size
        click.echo(f"{'layer':<11} {d.digest}  {human_size(d.size):>9}  {d.media_type}")
    click.echo(f"{'size':<11} {human_size(total)} in {len(image.layers)} layer(s), compressed")


@cli.command("sbom")
@click.argument("ref")
@click.option("--platform", help="From an index, the image for os/arch[/variant] (default: the host's).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST:PORT",
              help="docker:// REF: allow plain HTTP or unverified TLS to this registry.")
@click.option("--authfile", metavar="FILE", help="docker:// REF: " + AUTHFILE_HELP)
def sbom_command(ref, platform, insecure, authfile):
    """Print the SPDX SBOM attached to the image REF (an oci:, oci-archive:
    or docker:// reference), found as its OCI referrer."""
    from .sbom import SPDX_JSON
    plat = Platform.parse(platform) if platform else None
    image, found = open_attached(ref, SPDX_JSON, plat, registry=registry_options(os.environ, insecure, authfile))
    if not found:
        raise InputError(f"{ref} ({image.digest}) has no SPDX SBOM attached; ocibuild attaches one unless "
                         "--sbom none (engines and docker-archive: keep none)")
    sys.stdout.buffer.write(found[-1] if found[-1].endswith(b"\n") else found[-1] + b"\n")


def registry_options(env: Mapping[str, str], insecure=(), authfile: str | None = None) -> RegistryOptions:
    """Registry settings from the flags and the environment, read once here.
    Credentials, as podman, skopeo and buildah look for them
    (containers-auth.json(5)): only the file --authfile names, else only
    REGISTRY_AUTH_FILE's; else the first of $XDG_RUNTIME_DIR/containers/auth.json,
    $XDG_CONFIG_HOME/containers/auth.json (~/.config/containers/auth.json)
    and docker's config.json ($DOCKER_CONFIG, else ~/.docker) that has a login
    for the registry. The pulled-blob cache: OCIBUILD_CACHE_DIR, else
    $XDG_CACHE_HOME/ocibuild."""
    home = env.get("HOME") or os.path.expanduser("~")
    files: tuple[str, ...]
    if authfile is not None:
        if not os.path.isfile(authfile):
            why = "is not a file" if os.path.exists(authfile) else "does not exist"
            raise InputError(f"--authfile {authfile} {why}; name the auth.json that `podman login` or "
                             "`docker login` wrote (or leave it out for the default lookup)")
        files, flag = (authfile,), "--authfile"
    elif env.get("REGISTRY_AUTH_FILE"):
        files, flag = (env["REGISTRY_AUTH_FILE"],), "REGISTRY_AUTH_FILE"
    else:
        runtime = env.get("XDG_RUNTIME_DIR")
        config = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        docker = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
        found = ([os.path.join(runtime, "containers", "auth.json")] if runtime else []) + [
            os.path.join(config, "containers", "auth.json"), os.path.join(docker, "config.json")]
        files, flag = tuple(dict.fromkeys(found)), ""
    cache = env.get("OCIBUILD_CACHE_DIR") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "ocibuild")
    return RegistryOptions(insecure=frozenset(insecure), auth_files=files, auth_flag=flag,
                           cache_dir=cache, home=home)


MAX_EPOCH = 253402300799           # 9999-12-31T23:59:59Z
MAX_ID = 4294967294                # uid_t/gid_t; 4294967295 is (uid_t)-1, "no id"


def source_date_epoch(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not _ASCII_DIGITS.fullmatch(value) or len(value) > 12 or int(value) > MAX_EPOCH:
        raise InputError(f"SOURCE_DATE_EPOCH={_shown(value)} is not a whole number of seconds "
                         f"between 0 and {MAX_EPOCH}")
    return int(value)


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _shown(text: str, limit: int = 80) -> str:
    """A value from the user, quoted on one line (long ones shortened)."""
    shown = repr(text[:limit])
    return shown + f"...({len(text)} characters)" if len(text) > limit else shown


def _text(value: str, flag: str) -> str:
    """A text option's value, refused unless it is valid UTF-8 (a name or
    value that is not cannot be written into a JSON document)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{flag} {_shown(value)} is not valid UTF-8 text") from None
    return value


_ADD_PLATFORM = re.compile(r"^([a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?)=(.*)$", re.DOTALL)


def _add(text: str) -> Add:
    """SRC:DEST, or PLATFORM=SRC:DEST for one platform's image only."""
    platform = None
    m = _ADD_PLATFORM.match(text)
    if m:
        platform, text = check_linux(Platform.parse(m.group(1))), m.group(2)
    src, sep, dest = text.rpartition(":")
    if not sep or not src or not dest.startswith("/"):
        raise InputError(f"malformed --add {text!r}: use [PLATFORM=]SRC:DEST with an absolute DEST, "
                         "e.g. ./chaincode:/usr/local/bin/chaincode or linux/arm64=./cc-arm64:/usr/local/bin/cc")
    return Add(src, dest, platform)


def _argv(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    _text(text, flag)
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed {flag} {text!r}: not a JSON array ({e.msg})") from None
        except RecursionError:
            raise InputError(f"malformed {flag}: the JSON is nested too deeply") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"malformed {flag} {text!r}: the JSON must be an array of strings")
        return [_text(v, flag) for v in value]       # a \udcxx escape is no text either
    try:
        return shlex.split(text)
    except ValueError as e:
        raise InputError(f"malformed {flag} {text!r}: {e}") from None


def _pairs(items, flag: str, key_re: re.Pattern | None = None) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = _text(item, flag).partition("=")
        if not sep or not key or (key_re and not key_re.fullmatch(key)):
            raise InputError(f"malformed {flag} {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def _workdir(text: str | None) -> str | None:
    if text is not None and not _text(text, "--workdir").startswith("/"):
        raise InputError(f"--workdir {_shown(text)} must be an absolute path")
    return text


def _owner(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,10})", text)
    if not m or int(m.group(1)) > MAX_ID or int(m.group(2)) > MAX_ID:
        raise InputError(f"malformed --chown {_shown(text)}: use numeric UID:GID, each 0 to {MAX_ID}, "
                         "e.g. 500:500")
    return int(m.group(1)), int(m.group(2))


def _show(v) -> str:
    return json.dumps(v) if v else ""


def _terminated(signum, frame):
    raise KeyboardInterrupt    # unwinds like Ctrl-C: staged outputs and temp files are removed


def main(argv=None) -> None:
    """Run the CLI; every failure ends here as one `error:` line and the exit
    status of its class (errors.py), or a traceback with --debug (before or
    after the subcommand). Shell completion (`_OCIBUILD_COMPLETE=bash_source
    ocibuild`) is click's: it prints its script and exits inside cli.main."""
    state = Ctx()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli.main(args=argv, prog_name="ocibuild", standalone_mode=False, obj=state)
    except OcibuildError as e:
        if state.debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_status)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("error: interrupted; nothing was written", err=True)
        sys.exit(130)
    except click.ClickException as e:
        # A usage error points to the failing (sub)command's own help.
        where = e.ctx.command_path if isinstance(e, click.UsageError) and e.ctx is not None else "ocibuild"
        click.echo(f"error: {e.format_message().removesuffix('.')} (see {where} --help)", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing was written", err=True)
        sys.exit(130)
    except OSError as e:               # the machine refused (a full TMPDIR, ...): say what, where
        if state.debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}; nothing was written", err=True)
        sys.exit(1)
    except Exception as e:             # a safety net, not a substitute for the specific messages
        if state.debug:
            raise
        if isinstance(e.__cause__, KeyboardInterrupt):   # e.g. wrapped by a class being created
            click.echo("error: interrupted; nothing was written", err=True)
            sys.exit(130)
        what = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        click.echo(f"error: internal error: {what} (rerun with --debug and report it)", err=True)
        sys.exit(1)
