"""Section "build" (issue 3): a one-line change rebuilt end to end, source
to image archive.

SOURCE is a copy (in the temp dir) of tests/fixtures/grpc-gopath (a
GOPATH-mode gRPC server on Debian's Go libraries, built with --import-path)
if present, else tests/fixtures/chaincode (a stdlib module); --source and
--import-path choose another. Every tool gets its own copy, and the same
edit in the same round.

  ocibuild docker  .venv/bin/ocibuild -q build --builder docker
                   --builder-image IMG SRC --output oci-archive:OUT
  buildx+save      docker buildx build --builder default -f DOCKERFILE
                   -t NAME --load SRC   +   docker save NAME -o OUT
                   (DOCKERFILE: stage 1 FROM IMG, GOPATH or module set-up,
                   COPY . ., RUN --mount=type=cache (Go build cache and module
                   cache) CGO_ENABLED=0 go build -trimpath -buildvcs=false
                   -ldflags=-buildid=; stage 2 FROM scratch, COPY --from, and
                   ocibuild's chaincode config: ENV, LABEL, USER 500:500)
  ocibuild host    ocibuild build --builder host (GOCACHE in the temp dir,
                   or --gocache)
  ocibuild podman  ocibuild build --builder podman (its own cache volume)

IMG is $OCIBUILD_BUILDER_IMAGE or ocibuild's default builder image. Rows:
COLD (--cold-runs times: `docker builder prune -af` first, which also empties
ocibuild's own BuildKit cache mounts, then both tools, order alternating per
round) and WARM (--runs times after --warmup rounds; each round first makes a
new one-line change: a string literal in the main package is rewritten, so
that package recompiles and the binary relinks; ocibuild and buildx swap
places every round). host and podman are warm only, for context:
alternatives users have, not competitors. Afterwards the chaincode binary is
extracted from the last round's outputs: ocibuild and buildx must have built
the same bytes (same toolchain, same flags). After cold rows the bench
empties BuildKit's cache again (`docker builder prune -af`): what it held
before was already pruned for the cold rows. --cold-runs 0 leaves BuildKit's
cache as it was (only the records the bench made are pruned).

Acceptance: warm ocibuild docker / warm buildx+save <= 1.0 (median/median).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .common import (
    ARCHIVE_TRANSPORTS,
    CHAINCODE_CONFIG,
    DEST,
    FIXTURES,
    OCIBUILD,
    TAG,
    Tool,
    ToolFailed,
    build_cache_ids,
    builder_image,
    check_ratio,
    docker_cleanup_image,
    exit_status,
    host_env,
    loadavg,
    measure,
    median_or_none,
    out,
    print_temperatures,
    prune_new_cache,
    run,
)

PODMAN_VOLUME = "ocibuild-go-cache"             # ocibuild.builders.podman.CACHE_VOLUME
E2E_FIXTURES = ("grpc-gopath", "chaincode")      # the first one present is built
_GOPATH_HINT = re.compile(r"\$GOPATH/src/([A-Za-z0-9._~+/-]*[A-Za-z0-9_~+-])")
_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


# --- the source and its change ------------------------------------------------------

@dataclass
class GoSrc:
    path: Path
    gopath: bool                # no go.mod: GOPATH mode
    import_path: str | None     # GOPATH mode only
    vendored: bool


def pick_source(given: str | None, import_path: str | None) -> GoSrc:
    if given:
        src = Path(given)
        if not src.is_dir() or not any(src.glob("*.go")):
            sys.exit(f"bench: --source {given}: not a directory with .go files")
    else:
        found = [FIXTURES / n for n in E2E_FIXTURES if any((FIXTURES / n).glob("*.go"))]
        if not found:
            sys.exit(f"bench: none of {', '.join(E2E_FIXTURES)} in {FIXTURES}; pass --source DIR")
        src = found[0]
    src = src.resolve()
    gopath = not (src / "go.mod").is_file()
    if gopath and not import_path:
        # The fixture says where it lives: "... at $GOPATH/src/example.org/x/y".
        text = "".join(f.read_text(errors="replace") for f in sorted(src.glob("*.go")))
        m = _GOPATH_HINT.search(text)
        import_path = m.group(1) if m else f"example.org/chaincode/{src.name}"
    return GoSrc(src, gopath, import_path if gopath else None, (src / "vendor").is_dir())


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

def buildx_dockerfile(image: str, src: GoSrc) -> str:
    """What a user writes instead: a multi-stage Dockerfile, the same builder
    image and Go flags, the Go caches as cache mounts, a scratch final stage
    with ocibuild's chaincode config."""
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
            "RUN --mount=type=cache,target=/root/.cache/go-build --mount=type=cache,target=/go/pkg/mod \\\n"
            f"    go build -trimpath -buildvcs=false -ldflags=-buildid={mod} -o /out/chaincode .\n"
            "FROM scratch\n"
            f"COPY --from=build /out/chaincode {DEST}\n"
            f"{CHAINCODE_CONFIG}")


def ocibuild_runner(work: Path, src: Path, builder: str, image: str, gosrc: GoSrc,
                    digests: dict[str, str], env: dict[str, str] | None = None) -> Callable[[str], int]:
    def go(label: str) -> int:
        dst = work / f"e2e-{builder}-{label}.tar"
        cmd = [str(OCIBUILD), "-q", "build", "--builder", builder, "--builder-image", image]
        if gosrc.import_path:
            cmd += ["--import-path", gosrc.import_path]
        p = run([*cmd, str(src), "--output", f"oci-archive:{dst}"], env=env)
        digests[label] = p.stdout.decode().strip().splitlines()[-1]
        return dst.stat().st_size
    return go


def buildx_runner(work: Path, ctx: Path, dockerfile: Path, made: list[str]) -> Callable[[str], int]:
    def go(label: str) -> int:
        name = f"{TAG}-e2e:{label}"
        dst = work / f"e2e-buildx-{label}.tar"
        made.append(name)
        run(["docker", "buildx", "build", "--builder", "default", "--progress", "quiet",
             "-f", str(dockerfile), "-t", name, "--load", str(ctx)])
        run(["docker", "save", name, "-o", str(dst)])
        return dst.stat().st_size
    return go


def chaincode_sha256(archive: Path) -> str | None:
    """sha256 of DEST inside an image archive (OCI or docker save; layers
    gzip or plain), or None."""
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
                                return "sha256:" + hashlib.sha256(layer.extractfile(lm).read()).hexdigest()
                except (tarfile.TarError, EOFError, OSError):
                    continue
    except (tarfile.TarError, OSError):
        return None
    return None


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


# --- the section -------------------------------------------------------------------------

class _Rounds:
    """The rounds of one run: each applies the change to every tool's copy,
    then runs the tools; what they leave (archives, docker images) is
    removed after each run, but the last warm round's archives."""

    def __init__(self, work: Path, change: OneLineChange, dirs: list[Path], images: list[str]):
        self.work, self.change, self.dirs, self.images = work, change, dirs, images
        self.token = secrets.token_hex(3)        # new literals every bench run: no stale cache hits
        self.pruned_all = False                  # `docker builder prune -af` ran

    def tidy(self, label: str, keep: bool = False) -> Callable[[], None]:
        def go() -> None:
            if not keep:
                for f in self.work.glob(f"e2e-*-{label}.tar"):
                    f.unlink()
            while self.images:
                docker_cleanup_image(self.images.pop())
        return go

    def cold(self, tools: list[Tool], runs: int) -> None:
        """BuildKit's cache emptied (ocibuild's cache mounts included), then
        both tools; the order alternates between rounds."""
        for k in range(runs):
            label = f"c{k}"
            self.change.apply(self.dirs, f"{self.token}{label}")
            try:
                run(["docker", "builder", "prune", "-af"])
                self.pruned_all = True
            except (ToolFailed, subprocess.TimeoutExpired) as e:
                for t in tools:
                    t.failed = f"docker builder prune failed: {e}"
                break
            for t in (tools if k % 2 == 0 else tools[::-1]):
                measure(t, label, True, self.tidy(label))
            print(f"  cold round {k + 1}/{runs} done", file=sys.stderr, flush=True)

    def warm(self, tools: list[Tool], warmup: int, runs: int) -> None:
        """tools: ocibuild docker, buildx, then the ones for context."""
        # host and podman have their own caches (the bench's GOCACHE, the
        # podman volume): one unmeasured build warms them whatever --warmup is.
        label = "p"
        self.change.apply(self.dirs, f"{self.token}{label}")
        for t in tools[2:]:
            measure(t, label, False, self.tidy(label))

        total = warmup + runs
        for rnd in range(total):
            measured = rnd >= warmup
            label = f"w{rnd}"
            self.change.apply(self.dirs, f"{self.token}{label}")
            # ocibuild and buildx swap places every round: neither always goes first.
            for t in (tools if rnd % 2 == 0 else [tools[1], tools[0], *tools[2:]]):
                measure(t, label, measured, self.tidy(label, keep=rnd == total - 1))
            print(f"  warm round {rnd + 1}/{total}{'' if measured else ' (warm-up)'} done",
                  file=sys.stderr, flush=True)


def section(args, gosrc: GoSrc, change: OneLineChange, docker_missing: str) -> int:
    image = builder_image()
    docker_why, podman_why, host_why, versions = probe(image, docker_missing)

    print("## build: Go source to image archive, a one-line change rebuilt")
    mode = f"GOPATH mode, --import-path {gosrc.import_path}" if gosrc.gopath else \
        f"module, {'vendored' if gosrc.vendored else 'not vendored'}"
    print(f"source: {gosrc.path} ({mode}), copied per tool; the change: {change.describe()} "
          f"gets a new suffix each round")
    print(f"{versions}")
    print(f"{args.cold_runs} cold round(s) (after `docker builder prune -af`), then {args.runs} measured "
          f"warm runs per tool after {args.warmup} warm-up round(s), interleaved")
    print(flush=True)

    load0 = loadavg()
    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-e2e-", dir=args.tmpdir))
    images: list[str] = []
    cache_before = build_cache_ids() if not docker_why else None
    volume_existed = bool(podman_why) or out(["podman", "volume", "exists", PODMAN_VOLUME]) is not None
    digests: dict[str, dict[str, str]] = {"docker": {}, "host": {}, "podman": {}}
    dirs = {key: work / f"src-{key}" / gosrc.path.name for key in ("docker", "buildx", "host", "podman")}
    rounds = _Rounds(work, change, list(dirs.values()), images)
    try:
        for d in dirs.values():
            shutil.copytree(gosrc.path, d, symlinks=True)
        dockerfile = work / "buildx" / "Dockerfile"
        dockerfile.parent.mkdir()
        dockerfile.write_text(buildx_dockerfile(image, gosrc))
        host = host_env(args, work, "host-gocache")     # the bench's own

        oci_docker = ocibuild_runner(work, dirs["docker"], "docker", image, gosrc, digests["docker"])
        buildx = buildx_runner(work, dirs["buildx"], dockerfile, images)
        cold = [
            Tool("oci-cold", "ocibuild build --builder docker, COLD", None if docker_why else oci_docker,
                 docker_why),
            Tool("bx-cold", "docker buildx build --load + docker save, COLD (uncompressed)",
                 None if docker_why else buildx, docker_why, competitor=True),
        ]
        warm = [
            Tool("oci", "ocibuild build --builder docker, WARM (one-line change)",
                 None if docker_why else oci_docker, docker_why),
            Tool("bx", "docker buildx build --load + docker save, WARM (uncompressed)",
                 None if docker_why else buildx, docker_why, competitor=True),
            Tool("host", "ocibuild build --builder host, WARM (context)",
                 None if host_why else ocibuild_runner(work, dirs["host"], "host", image, gosrc,
                                                       digests["host"], host), host_why),
            Tool("podman", "ocibuild build --builder podman, WARM (context)",
                 None if podman_why else ocibuild_runner(work, dirs["podman"], "podman", image, gosrc,
                                                         digests["podman"]), podman_why),
        ]
        rounds.cold(cold, 0 if docker_why else args.cold_runs)
        rounds.warm(warm, args.warmup, args.runs)
        total = args.warmup + args.runs
        checks = same_work(work, f"w{total - 1}", [f"w{r}" for r in range(args.warmup, total)], digests)
    finally:
        while images:
            docker_cleanup_image(images.pop())
        if rounds.pruned_all:
            # The cache was emptied for the cold rows, so what is left is the
            # bench's (by id, shared "from local" records cannot be pruned).
            out(["docker", "builder", "prune", "-af"])
        elif cache_before is not None:
            prune_new_cache(cache_before)
        if not volume_existed:          # the podman builder made it for the bench
            out(["podman", "volume", "rm", PODMAN_VOLUME])
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    return report(cold, warm, checks, enforce=not args.ignore_ratios)


def same_binary_line(a: Path, b: Path) -> list[str]:
    """The line saying whether ocibuild's image `a` and buildx's `b` hold the
    same chaincode binary; none when either is missing."""
    if not (a.exists() and b.exists()):
        return []
    ha, hb = chaincode_sha256(a), chaincode_sha256(b)
    same = ha is not None and ha == hb
    return [f"chaincode binary, last round: ocibuild {ha}, buildx {hb}: "
            f"{'same bytes' if same else 'DIFFERENT — the Dockerfile is not the same build'}"]


def same_work(work: Path, last: str, measured: list[str], digests: dict[str, dict[str, str]]) -> list[str]:
    """Is it the same work? The same binary from ocibuild and buildx, the same
    image from every ocibuild builder, a new binary every round."""
    lines = same_binary_line(work / f"e2e-docker-{last}.tar", work / f"e2e-buildx-{last}.tar")
    present = [k for k in ("docker", "host", "podman") if digests[k]]
    if len(present) > 1:
        agree = sum(1 for r in measured if len({digests[k].get(r) for k in present}) == 1
                    and digests[present[0]].get(r))
        lines.append(f"image digest from ocibuild --builder {'/'.join(present)}: identical in "
                     f"{agree} of {len(measured)} measured round(s)")
    seq = [digests["docker"].get(r) for r in measured if digests["docker"].get(r)]
    if len(seq) > 1:
        new = len(set(seq))
        lines.append(f"one-line change: {new} distinct image(s) from {len(seq)} measured round(s)"
                     + ("" if new == len(seq) else " — the change did NOT reach the binary every round"))
    return lines


def report(cold: list[Tool], warm: list[Tool], checks: list[str], enforce: bool = True) -> int:
    print_temperatures(cold, warm, "ocibuild --builder docker", checks)

    by = {t.key: t for t in cold + warm}
    print("acceptance (median/median; lower is better):")
    oc, bc = by["oci-cold"], by["bx-cold"]
    if oc.times and bc.times:
        print(f"  cold: ocibuild --builder docker / (docker buildx build + docker save) = "
              f"{median_or_none(oc) / median_or_none(bc):.3f} (for information)")
    missing, failed = check_ratio("warm: ocibuild --builder docker / (docker buildx build + docker save)",
                                  by["oci"], by["bx"], 1.0,
                                  "must be <= 1.0: not slower warm, and should be faster", enforce)
    failed = failed or any(t.failed for t in cold + warm)
    return exit_status(missing, failed, "competitor not available: docker buildx",
                       "build: the acceptance ratio was missed or a tool failed")
