"""Section "modules" (issue 10): an unvendored Go module built through a
local Go module proxy, COLD and WARM: ocibuild against docker buildx build
of the equivalent multi-stage Dockerfile, both fetching from the same proxy.

The proxy and the source come from tests/goproxy.py (imported, not copied):
a proxy tree in the GOPROXY layout holding example.com/greet v1.2.0,
example.com/loud v0.3.0 (which requires greet) and github.com/google/go-cmp
at the version of Debian's golang-github-google-go-cmp-dev (from
/usr/share/gocode/src), served over HTTP (Python's threaded http.server,
every request recorded) on the docker bridge's gateway address, which
BuildKit's RUN steps and the host both reach. SOURCE: a main module
requiring loud and go-cmp (greet // indirect), with go.mod and go.sum and
no vendor/, copied per tool.

  ocibuild  .venv/bin/ocibuild -q build --builder docker --builder-image IMG
            --network default --go-proxy URL SRC --output oci-archive:OUT
  buildx    docker buildx build --builder default -f DOCKERFILE -t NAME
            --load SRC  +  docker save NAME -o OUT
            (DOCKERFILE: FROM IMG, ENV GOPROXY=URL GOSUMDB=off CGO_ENABLED=0,
            COPY . ., RUN --mount=type=cache (Go build cache and module
            cache) go build -trimpath -buildvcs=false -ldflags=-buildid=
            -mod=readonly; FROM scratch, COPY --from, ocibuild's chaincode
            config)

IMG is $OCIBUILD_BUILDER_IMAGE or ocibuild's default builder image. Rows:
COLD (--cold-runs rounds, each after `docker builder prune -af`, which
empties both tools' module and build caches, so every module is downloaded
from the proxy again; the order alternates per round) and WARM (--runs
rounds after --warmup, a one-line change in main.go each round, the tools
swapping places). Checks: in each cold round each tool fetched every
module's .zip from the proxy, in warm rounds nothing; the last round's
chaincode binary is the same bytes from both. Before ocibuild has
`--go-proxy` (`ocibuild build --help` lacks it) its rows are SKIPPED
("skipped: ocibuild has no --go-proxy yet"), buildx's are still measured,
and the section's status is 0.

Acceptance: warm ocibuild / warm buildx+save <= 1.0 (median/median); cold
for information.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .build import OneLineChange, _Rounds, buildx_runner, probe, same_binary_line
from .common import (
    CHAINCODE_CONFIG,
    DEST,
    OCIBUILD,
    REPO,
    Tool,
    build_cache_ids,
    builder_image,
    check_ratio,
    docker_cleanup_image,
    exit_status,
    loadavg,
    out,
    print_temperatures,
    prune_new_cache,
    run,
)

if str(REPO / "tests") not in sys.path:
    sys.path.append(str(REPO / "tests"))
import goproxy  # noqa: E402  (tests/goproxy.py: the proxy the tests use)

NO_GO_PROXY = "ocibuild has no --go-proxy yet"


def has_go_proxy() -> bool:
    """Does this ocibuild's `build` take --go-proxy?"""
    return "--go-proxy" in (out([str(OCIBUILD), "build", "--help"]) or "")


def bridge_address() -> str | None:
    """The docker bridge's gateway (e.g. 172.17.0.1): an address of the host
    that containers on the default network reach too."""
    return out(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"])


def modules() -> tuple[list[goproxy.Module], list[goproxy.Module], list[goproxy.Module]]:
    """(every module the proxy holds, the ones main requires, the rest it needs)."""
    greet, loud = goproxy.example_modules()
    gocmp = goproxy.debian_module()
    return [greet, loud, gocmp], [loud, gocmp], [greet]


def buildx_dockerfile(image: str, url: str) -> str:
    """What a user writes instead: build.py's multi-stage Dockerfile for a
    module, fetching from the proxy at `url`."""
    return (f"FROM {image} AS build\n"
            f"ENV CGO_ENABLED=0 GOPROXY={url} GOSUMDB=off GOFLAGS= \\\n"
            "    GOCACHE=/root/.cache/go-build GOMODCACHE=/go/pkg/mod\n"
            "WORKDIR /src\n"
            "COPY . .\n"
            "RUN --mount=type=cache,target=/root/.cache/go-build --mount=type=cache,target=/go/pkg/mod \\\n"
            "    go build -trimpath -buildvcs=false -ldflags=-buildid= -mod=readonly -o /out/chaincode .\n"
            "FROM scratch\n"
            f"COPY --from=build /out/chaincode {DEST}\n"
            f"{CHAINCODE_CONFIG}")


def ocibuild_runner(work: Path, src: Path, image: str, url: str) -> Callable[[str], int]:
    def go(label: str) -> int:
        dst = work / f"e2e-ocibuild-{label}.tar"
        run([str(OCIBUILD), "-q", "build", "--builder", "docker", "--builder-image", image,
             "--network", "default", "--go-proxy", url, str(src), "--output", f"oci-archive:{dst}"])
        return dst.stat().st_size
    return go


def counted(runner: Callable[[str], int], server: goproxy.ProxyServer, key: str,
            seen: dict[tuple[str, str], list[str]]) -> Callable[[str], int]:
    """`runner`, recording the proxy paths requested while it ran (tools run
    one at a time) as seen[(key, round label)]."""
    def go(label: str) -> int:
        before = len(server.requests)
        try:
            return runner(label)
        finally:
            seen[(key, label)] = server.requests[before:]
    return go


def section(args, docker_missing: str) -> int:
    image = builder_image()
    docker_why, _, _, versions = probe(image, docker_missing)
    address = None if docker_why else bridge_address()
    if not docker_why and not address:
        docker_why = "no docker bridge network (`docker network inspect bridge`)"
    try:
        pool, direct, indirect = modules()
    except (ValueError, OSError, subprocess.CalledProcessError) as e:
        docker_why = docker_why or f"the Debian module for the proxy: {e}"
        pool, direct, indirect = [], [], []
    oci_why = docker_why or ("" if has_go_proxy() else NO_GO_PROXY)

    print("## modules: an unvendored module built through a local Go module proxy")
    print("proxy: tests/goproxy.py's tree over HTTP on the docker bridge gateway "
          f"({address or '?'}): " + ", ".join(f"{m.path} {m.version}" for m in pool)
          + f"; source: a main module requiring {', '.join(m.path for m in direct)} "
            f"({', '.join(m.path for m in indirect)} indirect), go.sum, no vendor/, copied per tool")
    print(versions)
    print(f"{args.cold_runs} cold round(s) (after `docker builder prune -af`), then {args.runs} measured "
          f"warm runs per tool after {args.warmup} warm-up round(s), interleaved")
    print(flush=True)

    cold = [Tool("oci-cold", "ocibuild build --builder docker --go-proxy URL, COLD", None, oci_why),
            Tool("bx-cold", "docker buildx build --load + docker save, COLD (uncompressed)", None, docker_why,
                 competitor=True)]
    warm = [Tool("oci", "ocibuild build --builder docker --go-proxy URL, WARM (one-line change)", None, oci_why),
            Tool("bx", "docker buildx build --load + docker save, WARM (uncompressed)", None, docker_why,
                 competitor=True)]
    if docker_why:
        return report(cold, warm, [], len(pool), not args.ignore_ratios)

    load0 = loadavg()
    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-modules-", dir=args.tmpdir))
    images: list[str] = []
    cache_before = build_cache_ids()
    seen: dict[tuple[str, str], list[str]] = {}
    rounds = None
    try:
        root = goproxy.write_proxy(work / "proxy", pool)
        dirs = {key: goproxy.chaincode_module(work / f"src-{key}" / "chaincode", direct, pool=indirect)
                for key in ("ocibuild", "buildx")}
        change = OneLineChange(dirs["ocibuild"])
        rounds = _Rounds(work, change, list(dirs.values()), images)
        with goproxy.serve_http(root, host=address or "127.0.0.1") as server:
            dockerfile = work / "buildx" / "Dockerfile"
            dockerfile.parent.mkdir()
            dockerfile.write_text(buildx_dockerfile(image, server.url))
            bx = counted(buildx_runner(work, dirs["buildx"], dockerfile, images), server, "buildx", seen)
            oci = None if oci_why else counted(ocibuild_runner(work, dirs["ocibuild"], image, server.url),
                                               server, "ocibuild", seen)
            for t in (cold[0], warm[0]):
                t.runner = oci
            for t in (cold[1], warm[1]):
                t.runner = bx
            rounds.cold(cold, args.cold_runs)
            rounds.warm(warm, args.warmup, args.runs)
        total = args.warmup + args.runs
        rows = {"ocibuild": [cold[0], warm[0]], "buildx": [cold[1], warm[1]]}
        checks = same_work(work, f"w{total - 1}", seen, pool, args, rows)
    finally:
        while images:
            docker_cleanup_image(images.pop())
        if rounds is not None and rounds.pruned_all:
            out(["docker", "builder", "prune", "-af"])
        elif cache_before is not None:
            prune_new_cache(cache_before)
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    return report(cold, warm, checks, len(pool), not args.ignore_ratios)


def same_work(work: Path, last: str, seen: dict[tuple[str, str], list[str]], pool: list[goproxy.Module],
              args, rows: dict[str, list[Tool]]) -> list[str]:
    """Did the builds go through the proxy, and build the same binary?"""
    zips = {f"/{goproxy.escape(m.path)}/@v/{goproxy.escape(m.version)}.zip" for m in pool}
    order = [f"c{k}" for k in range(args.cold_runs)] + [f"w{r}" for r in range(args.warmup + args.runs)]
    lines = []
    for key, tools in rows.items():
        labels = [label for label in order if (key, label) in seen]
        # Cold: the cold rounds, or else the tool's first build (nothing cached yet).
        cold = [seen[(key, label)] for label in labels if label.startswith("c")] or \
            [seen[(key, label)] for label in labels[:1]]
        warm = [seen[(key, label)] for label in labels[1:] if label.startswith("w")]
        row = tools[0] if labels and labels[0].startswith("c") else tools[1]     # the row of those builds
        if cold and row.failed:
            lines.append(f"{key}: proxy use not checked: its build failed")
        elif cold:
            full = sum(1 for reqs in cold if zips <= set(reqs))
            if labels[0].startswith("c"):
                got = f"in {full} of {len(cold)} cold round(s)"
            else:
                got = f"in its first build (no cold round): {'yes' if full else 'NO'}"
            lines.append(f"{key}: every module's .zip fetched from the proxy {got} "
                         f"({sum(len(r) for r in cold) / len(cold):.0f} requests per build)")
            if full != len(cold):
                row.failed = "a cold build did not fetch every module from the proxy"
        if warm:
            lines.append(f"{key}: {sum(len(r) for r in warm)} proxy request(s) in {len(warm)} warm round(s) "
                         "after its first build (the module cache is warm: 0 expected)")
    return lines + same_binary_line(work / f"e2e-ocibuild-{last}.tar", work / f"e2e-buildx-{last}.tar")


def report(cold: list[Tool], warm: list[Tool], checks: list[str], n_modules: int, enforce: bool = True) -> int:
    print_temperatures(cold, warm, "ocibuild", checks)

    print("acceptance (median/median; lower is better):")
    oc, bc, ow, bw = *cold, *warm
    if ow.missing == NO_GO_PROXY:
        print(f"  warm: ocibuild / (docker buildx build + docker save): skipped: {NO_GO_PROXY}")
        failed = any(t.failed for t in (bc, bw))
        return exit_status(False, failed, "", "modules: a tool failed")
    if oc.times and bc.times:
        print(f"  cold: ocibuild / (docker buildx build + docker save) = "
              f"{statistics.median(oc.times) / statistics.median(bc.times):.3f} "
              f"(for information; {n_modules} modules fetched)")
    missing, failed = check_ratio("warm: ocibuild / (docker buildx build + docker save)", ow, bw, 1.0,
                                  "must be <= 1.0: not slower warm", enforce)
    failed = failed or any(t.failed for t in cold + warm)
    return exit_status(missing, failed, "competitor not available: docker buildx",
                       "modules: the acceptance ratio was missed or a tool failed")
