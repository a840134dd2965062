"""Section "build" (issues 3 and 13): a one-line change rebuilt end to end,
Go source to image archive, three sources side by side, every ocibuild
builder against docker buildx and podman build.

SOURCES (--sources, default all three; --source DIR [--import-path P] puts
one directory of your own in their place):
  chaincode  tests/fixtures/chaincode: the sample chaincode, a stdlib module
  grpc       tests/fixtures/grpc-gopath: a GOPATH-mode gRPC server on
             Debian's Go libraries, built with --import-path (from the
             fixture's doc comment: example.org/chaincode/grpchealth)
  vendored   a module with a vendor/ tree of --vendor-files generated .go
             files (benchmarks/vendored.py: 6 modules, 30 packages, ~4 MB of
             source at the default 300; deterministic, generated once per
             run in the temp dir), -mod=vendor; main links all of it

Every tool gets its own copy of each source, and the same edit in the same
round: the main package's first string literal gets a new suffix, so the
package recompiles and the binary relinks (ocibuild --builder auto's copy
and the floor's copies get suffixes of their own: they share ocibuild
--builder docker's warm container and caches, and must not find its object
ready). ocibuild's runs read Python's bytecode cache, written before the
first section, as an installed ocibuild has its .pyc files.

  ocibuild docker   .venv/bin/ocibuild -q build --builder docker
                    --builder-image IMG [--import-path P] SRC --output
                    oci-archive:OUT   (a warm builder container by default)
  ocibuild podman   the same, --builder podman (rootful)
  ocibuild rootless the same, --builder podman, run as the user `ocibuild`
                    through runuser (env -i, cwd /), as tests/test_build_cli.py
                    does: the user's own podman, images and volume
  ocibuild host     the same, --builder host (GOCACHE in the temp dir, or --gocache)
  ocibuild auto     the same, --builder auto (its pick is printed)
  floor (WARM only) ocibuild docker's compile alone: the Dockerfile's go
                    build line (same flags, same bytes) run with `docker
                    exec` in ocibuild's own running warm docker builder, on
                    its caches, the source mirrored into its work area
                    beforehand (untimed); no Python, no image inspect, no
                    assembly, no output. What ocibuild docker takes beyond
                    it is ocibuild's own cost; it bounds what any tool
                    built this way can reach against buildx + save.
  buildx + save     docker buildx build --builder default -f DOCKERFILE -t NAME
                    --load SRC  +  docker save NAME -o OUT
  podman build      podman build --layers=false --pull=never -f DOCKERFILE -t
  + save            NAME SRC  +  podman save NAME -o OUT

DOCKERFILE, the same for buildx and podman: stage 1 FROM IMG, GOPATH or
module set-up, COPY . ., RUN --mount=type=cache,id=... (Go build cache and
module cache) CGO_ENABLED=0 go build -trimpath -buildvcs=false
-ldflags=-buildid= (-mod=vendor or -mod=readonly); stage 2 FROM scratch,
COPY --from, and ocibuild's chaincode config (ENV, LABEL, USER 500:500).
buildx's and podman's cache mounts have ids of their own for the run.

IMG is $OCIBUILD_BUILDER_IMAGE or ocibuild's default builder image. Rows:
COLD (--cold-runs rounds, the tools' order rotating; not --builder auto)
gives every build empty Go caches of its own WITHOUT pruning anything
shared (benchmarks/caches.py): fresh cache-mount ids in the Dockerfiles
(BuildKit's; podman's /var/tmp/buildah-cache/ID), a fresh cache volume for
ocibuild's docker, podman and rootless builders (so a new warm builder
container too: its key holds the volume; stopped with its volume after each
source's cold round), a fresh GOCACHE for the host; one per source, tool
and round. The builder image and the Dockerfiles' FROM/ENV/WORKDIR steps
stay cached, as on any machine that built once. WARM: one unmeasured round
(every cache and warm container made), --warmup more, then --runs measured
rounds, the order rotating; ocibuild's usual caches and warm builders.

This machine is shared: another process's `ocibuild builder stop` (the test
suite runs one at its end) removes every warm builder container. So before
each WARM docker, podman, rootless or auto run, one whose warm builder is
gone gets it started again, untimed, by a build of a tiny module (its caches
are in the volume, which a stop keeps); the report counts these. A build
that fails, or a WARM one whose warm builder was replaced during it, is run
again (twice at most, each said in the report), only the last run timed; a
cold build run again gets fresh caches again.

Checks on the last round's outputs, per source: one chaincode binary from
every tool but auto (same toolchain, same flags: same bytes), one image
digest from ocibuild's docker, podman, rootless and host builders every
round, a new image every round; the vendored binary's build information
lists every vendored module. Removed afterwards: the temp dirs, images,
the bench's BuildKit cache records (by id), buildah cache dirs, volumes and
warm builder containers it made (benchmarks/caches.py's Owned).

Acceptance, per source, WARM (median/median): ocibuild docker, podman and
rootless podman / (buildx + save) <= 0.6 each; ocibuild auto / ocibuild with
the builder auto picks <= 1.05 (at most 5 % slower). Cold ratios and
ocibuild podman / podman build are printed for information.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import secrets
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import vendored
from .caches import (
    BENCH_LABEL,
    ROOTLESS_USER,
    Engine,
    Owned,
    buildah_cache_dirs,
    buildah_cache_root,
    cache_mounts,
    fresh_command,
    rootless_env,
    rootless_prefix,
)
from .common import (
    ARCHIVE_TRANSPORTS,
    CHAINCODE_CONFIG,
    DEST,
    FIXTURES,
    OCIBUILD,
    SAMPLE,
    TAG,
    Tool,
    ToolFailed,
    build_cache_ids,
    builder_image,
    docker_cleanup_image,
    exit_status,
    host_env,
    loadavg,
    measure,
    median_or_none,
    out,
    prune_new_cache,
    rotate,
    run,
    tool_row,
)

SOURCES = ("chaincode", "grpc", "vendored")
GRPC = FIXTURES / "grpc-gopath"
VENDOR_FILES = 300
KEYS = ("bx", "pm", "docker", "podman", "rootless", "host", "auto", "floor")
COLD_KEYS = KEYS[:-2]                            # auto, floor: warm only (docker's warm builder)
OWN_SUFFIX = {"auto": "a", "floor": "f"}         # share docker's warm caches: an edit of their own
OCIBUILD_KEYS = ("docker", "podman", "rootless", "host", "auto")
SAME_IMAGE = ("docker", "podman", "rootless", "host")    # one image digest per round
LABELS = {
    "bx": "docker buildx build --load + docker save",
    "pm": "podman build + podman save",
    "docker": "ocibuild build --builder docker",
    "podman": "ocibuild build --builder podman",
    "rootless": "ocibuild build --builder podman, rootless (user ocibuild)",
    "host": "ocibuild build --builder host",
    "auto": "ocibuild build --builder auto",
    "floor": "floor: its go build alone, docker exec'd in ocibuild's warm builder",
}
SHORT = {"bx": "buildx", "pm": "podman build", "docker": "ocibuild docker", "podman": "ocibuild podman",
         "rootless": "ocibuild rootless", "host": "ocibuild host", "auto": "ocibuild auto",
         "floor": "floor (docker exec go build)"}
ENGINE_OF = {"docker": "docker", "podman": "podman", "rootless": "podman-rootless"}
RETRIES = 2                                      # a failed build is run again (see common.measure)
TARGET = 0.6                                     # ocibuild docker/podman / (buildx + save), warm
AUTO_LIMIT = 1.05                                # ocibuild auto / the builder it picks, warm
_GOPATH_HINT = re.compile(r"\$GOPATH/src/([A-Za-z0-9._~+/-]*[A-Za-z0-9_~+-])")
_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


# --- the sources and their change ------------------------------------------------------

@dataclass
class GoSrc:
    path: Path
    gopath: bool                # no go.mod: GOPATH mode
    import_path: str | None     # GOPATH mode only
    vendored: bool
    key: str = ""               # chaincode, grpc, vendored, or the --source directory's name
    note: str = ""              # what it is, for the report

    def mode(self) -> str:
        return (f"GOPATH mode, --import-path {self.import_path}" if self.gopath else
                f"module, {'vendored' if self.vendored else 'not vendored'}")


def pick_source(given: str | Path, import_path: str | None = None, key: str = "") -> GoSrc:
    src = Path(given)
    if not src.is_dir() or not any(src.glob("*.go")):
        sys.exit(f"bench: --source {given}: not a directory with .go files")
    src = src.resolve()
    gopath = not (src / "go.mod").is_file()
    if gopath and not import_path:
        # The fixture says where it lives: "... at $GOPATH/src/example.org/x/y".
        text = "".join(f.read_text(errors="replace") for f in sorted(src.glob("*.go")))
        m = _GOPATH_HINT.search(text)
        import_path = m.group(1) if m else f"example.org/chaincode/{src.name}"
    return GoSrc(src, gopath, import_path if gopath else None, (src / "vendor").is_dir(), key or src.name)


def pick_sources(args, work: Path) -> list[GoSrc]:
    """--source, else the --sources list (the vendored one generated in `work`)."""
    if args.source:
        return [pick_source(args.source, args.import_path)]
    found = []
    for key in args.sources.split(","):
        if key == "chaincode":
            found.append(pick_source(SAMPLE, key=key))
        elif key == "grpc":
            found.append(pick_source(GRPC, key=key))
        elif key == "vendored":
            src = pick_source(vendored.generate(work / "vendored" / "vendored", args.vendor_files), key=key)
            src.note = vendored.describe(src.path) + ", generated"
            found.append(src)
        else:
            sys.exit(f"bench: --sources: unknown source {key!r} (use {', '.join(SOURCES)})")
    return found


class OneLineChange:
    """One line of the main package, rewritten each round: the first string
    literal outside imports and comments gets a new suffix. A literal (unlike
    a comment) changes the compiled code, so Go recompiles the package and
    relinks the binary, as after a real edit."""

    def __init__(self, src: Path):
        files = [src / "main.go"] if (src / "main.go").is_file() else sorted(
            f for f in src.glob("*.go") if not f.name.endswith("_test.go"))
        for f in files:
            lines = f.read_text().splitlines(keepends=True)
            in_import = False
            for i, line in enumerate(lines):
                st = line.strip()
                if in_import:
                    in_import = not st.startswith(")")
                    continue
                if st.startswith("import ("):
                    in_import = True
                    continue
                if st.startswith(("import ", "package ", "//", "/*", "*")):
                    continue
                m = _STRING.search(line)
                if m and "//" not in line[:m.start()] and "`" not in line[:m.start()]:
                    self.file, self.lines, self.index, self.m = f.name, lines, i, m
                    return
        sys.exit(f"bench: no string literal found to change in {src}'s main package")

    def describe(self) -> str:
        return f"{self.file}:{self.index + 1} `{self.lines[self.index].strip()}`"

    def apply(self, dirs: list[Path], token: str) -> None:
        lit = self.m.group(1)
        new = f"{lit[:-2]}-{token}\\n" if lit.endswith("\\n") else f"{lit}-{token}"
        line = self.lines[self.index]
        lines = list(self.lines)
        lines[self.index] = f'{line[:self.m.start()]}"{new}"{line[self.m.end():]}'
        text = "".join(lines)
        for d in dirs:
            (d / self.file).write_text(text)


# --- the tools ------------------------------------------------------------------------

def buildx_dockerfile(image: str, src: GoSrc, cache_id: str) -> str:
    """What a user writes instead: a multi-stage Dockerfile, the same builder
    image and Go flags, the Go caches as cache mounts (ids CACHE_ID-build,
    -mod), a scratch final stage with ocibuild's chaincode config."""
    if src.gopath:
        setup = ("ENV CGO_ENABLED=0 GO111MODULE=off GOPATH=/go:/usr/share/gocode \\\n"
                 "    GOCACHE=/root/.cache/go-build GOMODCACHE=/go/pkg/mod\n"
                 f"WORKDIR /go/src/{src.import_path}\n")
        mod = ""
    else:
        setup = ("ENV CGO_ENABLED=0 GOCACHE=/root/.cache/go-build GOMODCACHE=/go/pkg/mod\n"
                 "WORKDIR /src\n")
        mod = " -mod=vendor" if src.vendored else " -mod=readonly"
    return (f"FROM {image} AS build\n"
            f"{setup}"
            "COPY . .\n"
            f"RUN {cache_mounts(cache_id)} \\\n"
            f"    go build -trimpath -buildvcs=false -ldflags=-buildid={mod} -o /out/chaincode .\n"
            "FROM scratch\n"
            f"COPY --from=build /out/chaincode {DEST}\n"
            f"{CHAINCODE_CONFIG}")


def buildx_runner(work: Path, ctx: Path, dockerfile: Callable[[str], Path], made: list[str],
                  name: str = "e2e") -> Callable[[str], int]:
    """docker buildx build --load + docker save, the Dockerfile of round LABEL
    from `dockerfile(label)`; OUT is work/e2e-NAME-bx-LABEL.tar."""
    def go(label: str) -> int:
        image = f"{TAG}-{name}:{label}"
        dst = work / f"e2e-{name}-bx-{label}.tar"
        made.append(image)
        run(["docker", "buildx", "build", "--builder", "default", "--progress", "quiet",
             "-f", str(dockerfile(label)), "-t", image, "--load", str(ctx)])
        run(["docker", "save", image, "-o", str(dst)])
        return dst.stat().st_size
    return go


def chaincode_bytes(archive: Path) -> bytes | None:
    """DEST inside an image archive (OCI or docker save; layers gzip or plain), or None."""
    want = DEST.lstrip("/")
    try:
        with tarfile.open(archive) as outer:
            for m in outer:
                if not m.isfile() or m.size < 512:
                    continue
                try:
                    with tarfile.open(fileobj=outer.extractfile(m), mode="r:*") as layer:
                        for lm in layer:
                            if lm.isfile() and lm.name.lstrip("./") == want:
                                return layer.extractfile(lm).read()
                except (tarfile.TarError, EOFError, OSError):
                    continue
    except (tarfile.TarError, OSError):
        return None
    return None


def chaincode_sha256(archive: Path) -> str | None:
    data = chaincode_bytes(archive)
    return None if data is None else "sha256:" + hashlib.sha256(data).hexdigest()


def probe(image: str, docker_missing: str) -> tuple[str, str, str, str]:
    """(why docker cannot build, why podman cannot, why host cannot, versions)."""
    archive = image.partition(":")[0] in ARCHIVE_TRANSPORTS
    why = "the bench needs the builder image by name, not an archive" if archive else ""
    docker_why = docker_missing or why
    if not docker_why and out(["docker", "image", "inspect", "--format", "{{.Id}}", image]) is None:
        docker_why = f"builder image {image} not in docker (run scripts/setup)"
    podman_why = why
    if not shutil.which("podman"):
        podman_why = "podman not found"
    elif not podman_why and out(["podman", "image", "exists", image]) is None:
        podman_why = f"builder image {image} not in podman (run scripts/setup)"
    host_why = "" if shutil.which("go") else "no go on PATH"
    versions = [f"builder image {image}"]
    if not docker_why:
        iid = out(["docker", "image", "inspect", "--format", "{{.Id}}", image]) or "?"
        gv = out(["docker", "run", "--rm", "--network", "none", image, "go", "version"]) or "go ?"
        versions[0] += f" ({iid[:19]}, {gv.replace('go version ', '')})"
    if not host_why:
        versions.append("host " + (out(["go", "version"]) or "go ?").replace("go version ", ""))
    if not podman_why:
        versions.append(out(["podman", "--version"]) or "podman ?")
    return docker_why, podman_why, host_why, "; ".join(versions)


def probe_rootless(image: str, podman_why: str) -> str:
    """Why rootless podman (the user ocibuild) cannot build, or ""."""
    if podman_why:
        return podman_why
    env = rootless_env()
    if env is None:
        return "no user ocibuild (or no runuser): scripts/setup makes it"
    if not os.path.isdir(env["XDG_RUNTIME_DIR"]):
        return f"no {env['XDG_RUNTIME_DIR']} for the user ocibuild (scripts/setup makes it)"
    if Engine.rootless()("image", "exists", image) is None:
        return f"builder image {image} not in the user ocibuild's podman (run scripts/setup)"
    return ""


def auto_pick() -> tuple[str, str]:
    """(what `--builder auto` picks here, why it skipped the ones before)."""
    from ocibuild.builders import first_usable
    try:
        name, skipped = first_usable(dict(os.environ))
    except Exception as e:                          # noqa: BLE001  (an EngineError: none usable)
        return "", str(e)
    return name, "; ".join(skipped)


# --- the runners -----------------------------------------------------------------------

class Runners:
    """One runner per (source, tool); what they leave is tidied after every
    build (images) or round (archives but the last round's)."""

    def __init__(self, args, work: Path, area: Path | None, image: str, owned: Owned, token: str):
        self.args, self.work, self.area, self.image, self.owned, self.token = args, work, area, image, owned, token
        self.dirs: dict[tuple[str, str], Path] = {}
        self.digests: dict[tuple[str, str], dict[str, str]] = {}       # (source, tool) -> {round: digest}
        self.docker_images: list[str] = []
        self.podman_images: list[str] = []
        self.buildah: list[Path] = []
        self.rewarmed: dict[str, int] = {}                             # tool -> warm builders restarted
        self.primed = False                                            # the unmeasured warm round is done
        self.tries: dict[tuple[str, str, str], int] = {}               # cold builds run, per round
        self.floor_at: dict[str, tuple[str, Path, str, Path]] = {}     # source -> (container, dir, inside, src)

    def warm_hooks(self, key: str) -> tuple[Callable[[], None], Callable[[], str]]:
        """(prepare, disturbed) of a WARM ocibuild run on docker, podman or
        rootless (auto: docker's). This machine is shared: another process's
        `ocibuild builder stop` removes every warm builder container. So
        before the run, one that is gone is started again, untimed, by a
        build of a tiny module of its own (its caches are in the volume,
        which a stop keeps); after it, a run whose warm builder was replaced
        meanwhile (a start inside the timed run) does not count."""
        engine = {"auto": "docker"}.get(key, key)
        eng = next((e for e in self.owned.engines.values() if e.name == ENGINE_OF.get(engine)), None)
        seen: list[str | None] = [None]
        image_id = eng.image_id(self.image) if eng is not None else ""

        def prepare() -> None:
            if eng is None or not self.primed:
                return
            seen[0] = eng.warm_running(self.owned.default[eng.name], image_id)
            if seen[0] is not None:
                return
            self.rewarmed[key] = self.rewarmed.get(key, 0) + 1
            root = self.area if key == "rootless" else self.work
            hello = root / "rewarm" / "hello"
            if not hello.exists():
                hello.mkdir(parents=True)
                (hello / "go.mod").write_text("module example.org/rewarm\n\ngo 1.19\n")
                (hello / "main.go").write_text('package main\n\nfunc main() { println("warm") }\n')
            prefix = rootless_prefix() if key == "rootless" else ()
            run([*prefix, str(OCIBUILD), "-q", "build", "--builder", "podman" if key == "rootless" else key,
                 "--builder-image", self.image, str(hello), "--output", f"oci-archive:{root / 'rewarm.tar'}"],
                cwd="/")
            seen[0] = eng.warm_running(self.owned.default[eng.name], image_id)

        def disturbed() -> str:
            if eng is None or not self.primed or seen[0] is None:
                return ""
            now = eng.warm_running(self.owned.default[eng.name], image_id)
            return "" if now == seen[0] else "its warm builder container was removed during the run (not by the bench)"
        return prepare, disturbed

    def copy(self, src: GoSrc, key: str) -> Path:
        root = self.area if key == "rootless" else self.work
        d = root / "src" / src.key / key / src.path.name
        shutil.copytree(src.path, d, symlinks=True)
        self.dirs[(src.key, key)] = d
        self.digests[(src.key, key)] = {}
        return d

    def output(self, src: GoSrc, key: str, label: str) -> Path:
        return (self.area if key == "rootless" else self.work) / f"e2e-{src.key}-{key}-{label}.tar"

    def fresh(self, src: GoSrc, label: str, what: str) -> str:
        return f"{TAG}-{self.token}-{src.key}-{label}-{what}"

    def attempt(self, src: GoSrc, key: str, label: str) -> str:
        """Round `label` for a cold build of `key`: `label` the first time,
        then LABEL.rN, so that a build run again after a failure gets empty
        caches again (not the ones the failed attempt began to fill)."""
        n = self.tries.get((src.key, key, label), 0)
        self.tries[(src.key, key, label)] = n + 1
        return f"{label}.r{n}" if n else label

    def runner(self, src: GoSrc, key: str, cold: bool) -> Callable[[str], int]:
        if key == "floor":
            return self.floor(src)
        if key == "bx":
            return self.buildx(src, cold)
        if key == "pm":
            return self.podman_build(src, cold)
        return self.ocibuild(src, key, cold)

    def dockerfile(self, src: GoSrc, label: str, cold: bool, what: str) -> Path:
        """The Dockerfile of competitor `what` (bx, pm): cache ids of its own,
        for the whole run (warm) or fresh for this source and round (cold)."""
        if cold:
            label = self.attempt(src, what, label)
        cid = self.fresh(src, label, what) if cold else f"{TAG}-{self.token}-{what}"
        df = self.work / "dockerfiles" / f"{src.key}-{label if cold else 'warm'}-{what}"
        if not df.exists():
            df.parent.mkdir(exist_ok=True)
            df.write_text(buildx_dockerfile(self.image, src, cid))
            if what == "pm":
                self.buildah += buildah_cache_dirs(cid)
        return df

    def ocibuild(self, src: GoSrc, key: str, cold: bool) -> Callable[[str], int]:
        d = self.dirs[(src.key, key)]
        digests = self.digests[(src.key, key)]

        def go(label: str) -> int:
            dst = self.output(src, key, label)
            argv = ["-q", "build", "--builder", "podman" if key == "rootless" else key,
                    "--builder-image", self.image]
            if src.import_path:
                argv += ["--import-path", src.import_path]
            argv += [str(d), "--output", f"oci-archive:{dst}"]
            prefix = rootless_prefix() if key == "rootless" else ()
            env = None
            tried = self.attempt(src, key, label) if cold else label
            if key == "host":
                env = ({**os.environ, "GOCACHE": str(self.work / "gocache" / f"{src.key}-{tried}")} if cold
                       else host_env(self.args, self.work, "host-gocache"))
            if cold and key in ENGINE_OF:
                volume = self.owned.volume(ENGINE_OF[key], self.fresh(src, tried, "vol"))
                cmd = fresh_command(self.fresh(src, tried, "oci"), volume, argv, prefix)
            else:
                cmd = [*prefix, str(OCIBUILD), *argv]
            p = run(cmd, env=env, cwd="/")
            digests[label] = p.stdout.decode().strip().splitlines()[-1]
            return dst.stat().st_size
        return go

    def floor_hooks(self, src: GoSrc) -> tuple[Callable[[], None], Callable[[], str]]:
        """(prepare, disturbed) of the floor: docker's (its warm builder
        started again if another process stopped it), then, untimed, the
        floor's source mirrored into that builder's work area (what
        ocibuild does before its exec) and where it is recorded."""
        from ocibuild.builders.container import mirror
        from ocibuild.builders.warm import WORK
        prepare_docker, disturbed = self.warm_hooks("docker")
        eng = next(e for e in self.owned.engines.values() if e.name == "docker")
        image_id = eng.image_id(self.image)

        def prepare() -> None:
            prepare_docker()
            cid = eng.warm_running(self.owned.default[eng.name], image_id)
            if cid is None:
                raise ToolFailed("ocibuild's warm docker builder is not running (its unmeasured round failed?)")
            area = eng("inspect", "--format", "{{range .Mounts}}{{if eq .Destination \"" + WORK
                       + "\"}}{{.Source}}{{end}}{{end}}", cid)
            if not area:
                raise ToolFailed(f"ocibuild's warm docker builder {cid[:12]} has no {WORK} mount")
            here = Path(area) / f"bench-floor-{self.token}"          # not build-*: ocibuild sweeps those
            shutil.rmtree(here, ignore_errors=True)
            top = here / "gopath" / "src" / str(src.import_path) if src.gopath else here / "src"
            mirror(str(self.dirs[(src.key, "floor")]), str(top))
            (here / "out").mkdir()
            self.floor_at[src.key] = (cid, here, f"{WORK}/{here.name}", top.relative_to(here))
        return prepare, disturbed

    def floor(self, src: GoSrc) -> Callable[[str], int]:
        """ocibuild docker's compile and nothing else: the Dockerfile's go
        build line (same flags, same binary) `docker exec`'d in ocibuild's
        own running warm builder, on its caches; no Python, no image
        inspect, no assembly. What ocibuild docker takes beyond this row is
        ocibuild's own cost."""
        def go(label: str) -> int:
            cid, here, inside, rel = self.floor_at[src.key]
            env = (["-e", "GO111MODULE=off", "-e", f"GOPATH={inside}/gopath:/usr/share/gocode"] if src.gopath
                   else ["-e", "GO111MODULE=on"])
            mod = [] if src.gopath else ["-mod=vendor" if src.vendored else "-mod=readonly"]
            run(["docker", "exec", *env, "-w", f"{inside}/{rel}", cid, "go", "build", "-trimpath",
                 "-buildvcs=false", "-ldflags=-buildid=", *mod, "-o", f"{inside}/out/chaincode", "."])
            return (here / "out" / "chaincode").stat().st_size
        return go

    def buildx(self, src: GoSrc, cold: bool) -> Callable[[str], int]:
        return buildx_runner(self.work, self.dirs[(src.key, "bx")],
                             lambda label: self.dockerfile(src, label, cold, "bx"), self.docker_images, src.key)

    def podman_build(self, src: GoSrc, cold: bool) -> Callable[[str], int]:
        ctx = self.dirs[(src.key, "pm")]

        def go(label: str) -> int:
            name = f"localhost/{TAG}-{src.key}-pm:{label}"
            dst = self.output(src, "pm", label)
            self.podman_images.append(name)
            run(["podman", "build", "-q", "--layers=false", "--pull=never", "--label", f"{BENCH_LABEL}={TAG}",
                 "-t", name, "-f", str(self.dockerfile(src, label, cold, "pm")), str(ctx)])
            run(["podman", "save", "-o", str(dst), name])
            return dst.stat().st_size
        return go

    def tidy(self, label: str, keep: bool = False) -> Callable[[], None]:
        def go() -> None:
            if not keep:
                for root in filter(None, (self.work, self.area)):
                    for f in root.glob(f"e2e-*-{label}.tar"):
                        f.unlink()
            while self.docker_images:
                docker_cleanup_image(self.docker_images.pop())
            if self.podman_images:
                out(["podman", "rmi", "-f", *self.podman_images])
                self.podman_images.clear()
        return go

    def clean(self) -> None:
        self.tidy("", keep=True)()
        for _, here, _, _ in self.floor_at.values():
            shutil.rmtree(here, ignore_errors=True)
        ids = (out(["podman", "images", "-q", "--filter", f"label={BENCH_LABEL}={TAG}"]) or "").split()
        if ids:
            out(["podman", "rmi", "-f", *sorted(set(ids))])
        for d in self.buildah:
            shutil.rmtree(d, ignore_errors=True)


# --- the section -------------------------------------------------------------------------

def run_rounds(args, srcs: list[GoSrc], changes: dict[str, OneLineChange], runners: Runners, owned: Owned,
               cold: dict[str, list[Tool]], warm: dict[str, list[Tool]]) -> list[str]:
    """The cold rounds, then the warm ones; the measured warm rounds' labels."""
    token = runners.token

    def change(src: GoSrc, label: str) -> None:
        dirs = [d for (s, k), d in runners.dirs.items() if s == src.key and k not in OWN_SUFFIX]
        changes[src.key].apply(dirs, f"{token}{label}")
        for k, suffix in OWN_SUFFIX.items():
            if (src.key, k) in runners.dirs:
                changes[src.key].apply([runners.dirs[(src.key, k)]], f"{token}{label}{suffix}")

    for k in range(args.cold_runs):
        label = f"c{k}"
        for src in srcs:
            change(src, label)
            for t in rotate(cold[src.key], k):
                measure(t, label, True, runners.tidy(label))
            owned.end_round()                   # the fresh volumes' warm builders, and the volumes
        print(f"  cold round {k + 1}/{args.cold_runs} done", file=sys.stderr, flush=True)
    total = args.warmup + args.runs
    for rnd in range(-1, total):                # -1: every cache and warm builder made, unmeasured
        label = "p" if rnd < 0 else f"w{rnd}"
        for src in srcs:
            change(src, label)
            for t in rotate(warm[src.key], max(rnd, 0)):
                measure(t, label, rnd >= args.warmup, runners.tidy(label, keep=rnd == total - 1))
        runners.primed = True
        print(f"  warm round {rnd + 2}/{total + 1}{'' if rnd >= args.warmup else ' (warm-up)'} done",
              file=sys.stderr, flush=True)
    return [f"w{r}" for r in range(args.warmup, total)]


def section(args, docker_missing: str) -> int:
    image = builder_image()
    docker_why, podman_why, host_why, versions = probe(image, docker_missing)
    rootless_why = probe_rootless(image, podman_why)
    picked, skipped = auto_pick()
    auto_why = "" if picked else f"--builder auto finds no builder: {skipped}"
    whys = {"bx": docker_why, "pm": podman_why, "docker": docker_why, "podman": podman_why, "floor": docker_why,
            "rootless": rootless_why, "host": host_why,
            "auto": auto_why or {"docker": docker_why, "podman": podman_why, "host": host_why}.get(picked, "")}

    print("## build: Go source to image archive, a one-line change rebuilt, three sources")
    load0 = loadavg()
    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-e2e-", dir=args.tmpdir))
    area = None
    engines = [e for e, why in ((Engine.docker(), docker_why), (Engine.podman(), podman_why),
                                (Engine.rootless(), rootless_why)) if not why]
    owned = Owned(engines)
    cache_before = build_cache_ids() if not docker_why else None
    buildah_root_existed = buildah_cache_root().exists()
    runners = None
    srcs: list[GoSrc] = []
    cold: dict[str, list[Tool]] = {}
    warm: dict[str, list[Tool]] = {}
    checks: dict[str, list[str]] = {}
    try:
        if not rootless_why:
            # The rootless user's sources and outputs: a directory it can reach (the
            # temp dir may be below a 0700 one) and write.
            area = Path(tempfile.mkdtemp(prefix="ocibuild-bench-e2e-rootless-", dir="/tmp"))
            area.chmod(0o755)
            os.chown(area, pwd.getpwnam(ROOTLESS_USER).pw_uid, -1)
        srcs = pick_sources(args, work)
        runners = Runners(args, work, area, image, owned, secrets.token_hex(3))
        changes = {}
        for src in srcs:
            for key in KEYS:
                if not whys[key]:
                    runners.copy(src, key)
            changes[src.key] = OneLineChange(src.path)
            cold[src.key] = [Tool(k, f"{LABELS[k]}, COLD", None if whys[k] else runners.runner(src, k, True),
                                  whys[k], competitor=k in ("bx", "pm"), retries=RETRIES) for k in COLD_KEYS]
            warm[src.key] = []
            for k in KEYS:
                hooks = (runners.floor_hooks(src) if k == "floor" and not whys[k] else
                         runners.warm_hooks(k) if k in ("docker", "podman", "rootless", "auto") else (None, None))
                warm[src.key].append(Tool(k, f"{LABELS[k]}, WARM", None if whys[k] else runners.runner(src, k, False),
                                          whys[k], competitor=k in ("bx", "pm"), retries=RETRIES,
                                          prepare=hooks[0], disturbed=hooks[1]))

        for src in srcs:
            print(f"source {src.key}: {src.path} ({src.mode()}{'; ' + src.note if src.note else ''}); "
                  f"the change: {changes[src.key].describe()} gets a new suffix each round")
        print(versions)
        print(f"--builder auto picks {picked or 'nothing'}"
              + (f" (skipped: {skipped})" if skipped and picked else "")
              + (f"; rootless podman: {rootless_why}" if rootless_why else "; rootless: user ocibuild, runuser"))
        print(f"{args.cold_runs} cold round(s) (fresh cache ids, volumes and GOCACHE per source and tool; "
              f"nothing shared pruned), then one unmeasured round, {args.warmup} warm-up round(s) and "
              f"{args.runs} measured warm runs per tool, interleaved, the order rotating")
        print(flush=True)

        measured = run_rounds(args, srcs, changes, runners, owned, cold, warm)
        last = f"w{args.warmup + args.runs - 1}"
        for src in srcs:
            checks[src.key] = same_work(src, runners, last, measured, warm[src.key])
    finally:
        if runners is not None:
            runners.clean()
        owned.clean()
        if cache_before is not None:
            prune_new_cache(cache_before)       # the Dockerfiles' cache mounts, the cold rows' too
        if not buildah_root_existed:
            try:
                buildah_cache_root().rmdir()
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
        if area is not None:
            shutil.rmtree(area, ignore_errors=True)

    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    if runners is not None and runners.rewarmed:
        print("warm builder containers found stopped before a WARM run (by another process) and started again, "
              "untimed: " + ", ".join(f"{SHORT[k]} {n}×" for k, n in runners.rewarmed.items()))
    return report(srcs, cold, warm, checks, picked, enforce=not args.ignore_ratios)


# --- the checks and the report --------------------------------------------------------------

def same_binary_line(a: Path, b: Path) -> list[str]:
    """The line saying whether ocibuild's image `a` and buildx's `b` hold the
    same chaincode binary; none when either is missing."""
    if not (a.exists() and b.exists()):
        return []
    ha, hb = chaincode_sha256(a), chaincode_sha256(b)
    same = ha is not None and ha == hb
    return [f"chaincode binary, last round: ocibuild {ha}, buildx {hb}: "
            f"{'same bytes' if same else 'DIFFERENT — the Dockerfile is not the same build'}"]


def same_work(src: GoSrc, runners: Runners, last: str, measured: list[str], warm: list[Tool]) -> list[str]:
    """Is it the same work? One binary from every tool but auto (whose
    literal differs), one image digest from ocibuild's builders, a new image
    every round, and for the vendored source every vendored module linked."""
    lines = []
    bins = {}
    for key in KEYS:
        f = runners.output(src, key, last)
        if key != "auto" and f.exists():
            bins[key] = chaincode_bytes(f)
    bad = False
    if bins:
        shas = {k: ("sha256:" + hashlib.sha256(b).hexdigest()) if b else "none" for k, b in bins.items()}
        if len(set(shas.values())) == 1 and None not in bins.values():
            lines.append(f"chaincode binary, last round: {next(iter(shas.values()))} "
                         f"({len(next(iter(bins.values()))):,} bytes) from {', '.join(SHORT[k] for k in bins)}: "
                         "same bytes")
        else:
            bad = True
            lines.append("chaincode binary, last round: DIFFERENT — "
                         + ", ".join(f"{SHORT[k]} {s}" for k, s in shas.items()))
        if src.vendored:
            lines.append(vendored_line(src, next((b for b in bins.values() if b), None), runners.work))
    present = [k for k in SAME_IMAGE if runners.digests.get((src.key, k))]
    if len(present) > 1:
        agree = sum(1 for r in measured
                    if len({runners.digests[(src.key, k)].get(r) for k in present}) == 1
                    and runners.digests[(src.key, present[0])].get(r))
        lines.append(f"image digest from ocibuild --builder {'/'.join(SHORT[k].split()[1] for k in present)}: "
                     f"identical in {agree} of {len(measured)} measured round(s)")
        bad = bad or agree != len(measured)
    first = next((k for k in ("docker", "podman", "host") if runners.digests.get((src.key, k))), None)
    seq = [runners.digests[(src.key, first)].get(r) for r in measured] if first else []
    seq = [d for d in seq if d]
    if len(seq) > 1:
        new = len(set(seq))
        lines.append(f"one-line change: {new} distinct image(s) from {len(seq)} measured round(s) of "
                     f"{SHORT[first]}" + ("" if new == len(seq) else " — the change did NOT reach the binary"))
        bad = bad or new != len(seq)
    if bad and warm:
        t = next((t for t in warm if t.key == "docker"), warm[0])
        t.failed = t.failed or "the tools did not do the same work (see the checks)"
    return lines


def vendored_line(src: GoSrc, binary: bytes | None, work: Path) -> str:
    """How many of the vendored modules the binary's build information lists."""
    from ocibuild.oci.buildinfo import read_buildinfo
    want = {line.split()[1] for line in (src.path / "vendor" / "modules.txt").read_text().splitlines()
            if line.startswith("# ")}
    if binary is None:
        return "vendored modules linked: binary not found"
    f = work / "vendored-binary"
    f.write_bytes(binary)
    info = read_buildinfo(str(f))
    f.unlink()
    got = {m.path for m in (info.deps if info else ())}
    return (f"vendored modules in the binary's build information: {len(want & got)} of {len(want)}"
            + ("" if want <= got else " — NOT all linked"))


def ratio(a: Tool | None, b: Tool | None) -> float | None:
    ma, mb = (median_or_none(a) if a else None), (median_or_none(b) if b else None)
    return ma / mb if ma and mb else None


def report(srcs: list[GoSrc], cold: dict[str, list[Tool]], warm: dict[str, list[Tool]],
           checks: dict[str, list[str]], picked: str, enforce: bool = True) -> int:
    source_tables(srcs, cold, warm, checks)
    summary_table(srcs, cold, warm)
    missing, failed = acceptance(srcs, warm, picked, enforce)
    information(srcs, cold, warm)
    tools = [t for s in srcs for t in cold[s.key] + warm[s.key]]
    failed = failed or any(t.failed for t in tools)
    missing = missing or any(t.missing for t in tools)
    return exit_status(missing, failed, "a tool was not available (see SKIPPED rows)",
                       "build: an acceptance ratio was missed or a tool failed")


def source_tables(srcs: list[GoSrc], cold: dict[str, list[Tool]], warm: dict[str, list[Tool]],
                  checks: dict[str, list[str]]) -> None:
    for src in srcs:
        print(f"### source {src.key}")
        print("| tool | median s | min s | ratio to buildx + save, same temperature (median/median; < 1 = "
              "faster) | output bytes |")
        print("|---|---:|---:|---:|---:|")
        for group in (cold[src.key], warm[src.key]):
            bx = next(t for t in group if t.key == "bx")
            for t in group:
                print(tool_row(t, median_or_none(bx), str(t.size), not_run="--cold-runs 0"))
        print()
        for line in checks.get(src.key, []):
            print(line)
        for t in cold[src.key] + warm[src.key]:
            if t.retried:
                print(f"run again after a failure: {t.label}: " + "; ".join(t.retried))
        print()


def summary_table(srcs: list[GoSrc], cold: dict[str, list[Tool]], warm: dict[str, list[Tool]]) -> None:
    print("### all sources: median s and ratio to buildx + save, same source and temperature")
    print("| tool | " + " | ".join(f"{s.key} s | ratio" for s in srcs) + " |")
    print("|---|" + "---:|---:|" * len(srcs))
    for word, groups in (("COLD", cold), ("WARM", warm)):
        for key in KEYS if word == "WARM" else COLD_KEYS:
            cells = []
            for s in srcs:
                by = {t.key: t for t in groups.get(s.key, [])}
                med, r = median_or_none(by[key]) if key in by else None, ratio(by.get(key), by.get("bx"))
                cells.append(f"{med:.3f} | {r:.2f}" if med is not None and r is not None else
                             f"{med:.3f} | —" if med is not None else "— | —")
            print(f"| {word} {LABELS[key]} | " + " | ".join(cells) + " |")
    print()


def acceptance(srcs: list[GoSrc], warm: dict[str, list[Tool]], picked: str, enforce: bool) -> tuple[bool, bool]:
    """The acceptance lines: (missing, failed)."""
    missing = failed = False
    print("acceptance (WARM, median/median; lower is better):")
    for src in srcs:
        by = {t.key: t for t in warm[src.key]}
        for key in ("docker", "podman", "rootless"):
            m, f = check(f"{src.key}: ocibuild --builder {SHORT[key].split()[1]} / (docker buildx build + "
                         "docker save)", by[key], by["bx"], TARGET, f"must be <= {TARGET}", enforce)
            missing, failed = missing or m, failed or f
        base = by.get(picked)
        if base is None:
            print(f"  {src.key}: ocibuild --builder auto / the builder it picks: NOT MEASURED — "
                  f"auto picks {picked or 'nothing'}")
            missing = True
        else:
            m, f = check(f"{src.key}: ocibuild --builder auto / ocibuild --builder {picked} (its pick)",
                         by["auto"], base, AUTO_LIMIT, f"must be <= {AUTO_LIMIT}: at most 5 % slower", enforce)
            missing, failed = missing or m, failed or f
    return missing, failed


def information(srcs: list[GoSrc], cold: dict[str, list[Tool]], warm: dict[str, list[Tool]]) -> None:
    print("for information (median/median):")
    for src in srcs:
        for word, groups in (("cold", cold), ("warm", warm)):
            by = {t.key: t for t in groups[src.key]}
            parts = [f"{SHORT[k]} / buildx {r:.3f}" for k in ("docker", "podman", "rootless", "host")
                     if (r := ratio(by.get(k), by.get("bx"))) is not None]
            r = ratio(by.get("podman"), by.get("pm"))
            if r is not None:
                parts.append(f"ocibuild podman / (podman build + save) {r:.3f}")
            if (r := ratio(by.get("floor"), by.get("bx"))) is not None:
                over = median_or_none(by["docker"]) if "docker" in by else None
                parts.append(f"the floor (docker exec go build alone) / buildx {r:.3f}"
                             + (f", ocibuild docker takes {over - median_or_none(by['floor']):.3f} s more"
                                if over is not None else ""))
            if parts:
                print(f"  {word} {src.key}: " + "; ".join(parts))


def check(text: str, a: Tool, b: Tool, limit: float, must: str, enforce: bool) -> tuple[bool, bool]:
    """One acceptance line, median(a) / median(b) <= limit: (missing, failed);
    not `enforce`d (--ignore-ratios), a miss is printed but not counted."""
    for t in (a, b):
        if t.missing:
            print(f"  {text}: NOT MEASURED — {t.label}: {t.missing}")
            return True, False
    r = ratio(a, b)
    if r is None or a.failed or b.failed:
        print(f"  {text}: NOT MEASURED — a run failed")
        return False, True
    ok = r <= limit
    verdict = "PASS" if ok else "FAIL" if enforce else "FAIL (not counted: --ignore-ratios)"
    print(f"  {text} = {r:.3f} ({must}): {verdict}")
    return False, not ok and enforce
