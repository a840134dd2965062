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
COLD (--cold-runs rounds, the order alternating) gives both tools empty
module and build caches of their own WITHOUT pruning anything shared
(benchmarks/caches.py): fresh cache-mount ids in the Dockerfile, a fresh
cache volume for ocibuild's warm builder (so a new warm builder container,
stopped with its volume after the round), so every module is downloaded
from the proxy again. WARM: one unmeasured round, then --runs rounds after
--warmup, a one-line change in main.go each round, the tools swapping
places; buildx's cache mounts of its own for the run, ocibuild's usual
caches and warm builder. Checks: in each cold round each tool fetched every
module's .zip from the proxy, in measured warm rounds nothing; the last
round's chaincode binary is the same bytes from both. Removed afterwards:
the temp dir, images, the bench's BuildKit cache records (by id), the
volumes and warm builder containers it made. Before ocibuild has
`--go-proxy` (`ocibuild build --help` lacks it) its rows are SKIPPED
("skipped: ocibuild has no --go-proxy yet"), buildx's are still measured,
and the section's status is 0.

Acceptance: warm ocibuild / warm buildx+save <= 1.0 (median/median); cold
for information.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .build import OneLineChange, buildx_runner, probe, same_binary_line
from .caches import Engine, Owned, cache_mounts, fresh_command
from .common import (
    CHAINCODE_CONFIG,
    DEST,
    OCIBUILD,
    REPO,
    TAG,
    Tool,
    build_cache_ids,
    builder_image,
    check_ratio,
    docker_cleanup_image,
    exit_status,
    loadavg,
    measure,
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
    that containers on the default network reach too. dockerd 20.10 leaves
    Gateway out of the default bridge's IPAM config when it took the subnet
    from docker0's own address; the gateway is then that subnet's first
    address, docker0's."""
    import ipaddress
    import json
    found = out(["docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"])
    try:
        config = (json.loads(found or "null") or [{}])[0]
        return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, StopIteration):
        return None


def modules() -> tuple[list[goproxy.Module], list[goproxy.Module], list[goproxy.Module]]:
    """(every module the proxy holds, the ones main requires, the rest it needs)."""
    greet, loud = goproxy.example_modules()
    gocmp = goproxy.debian_module()
    return [greet, loud, gocmp], [loud, gocmp], [greet]


def buildx_dockerfile(image: str, url: str, cache_id: str) -> str:
    """What a user writes instead: build.py's multi-stage Dockerfile for a
    module, fetching from the proxy at `url`, cache mount ids CACHE_ID-build, -mod."""
    return (f"FROM {image} AS build\n"
            f"ENV CGO_ENABLED=0 GOPROXY={url} GOSUMDB=off GOFLAGS= \\\n"
            "    GOCACHE=/root/.cache/go-build GOMODCACHE=/go/pkg/mod\n"
            "WORKDIR /src\n"
            "COPY . .\n"
            f"RUN {cache_mounts(cache_id)} \\\n"
            "    go build -trimpath -buildvcs=false -ldflags=-buildid= -mod=readonly -o /out/chaincode .\n"
            "FROM scratch\n"
            f"COPY --from=build /out/chaincode {DEST}\n"
            f"{CHAINCODE_CONFIG}")


def ocibuild_runner(work: Path, src: Path, image: str, url: str,
                    fresh: Callable[[str], tuple[str, str]] | None = None) -> Callable[[str], int]:
    """`fresh(label)`: (cache id, volume) of a cold round's own caches."""
    def go(label: str) -> int:
        dst = work / f"e2e-modules-ocibuild-{label}.tar"
        argv = ["-q", "build", "--builder", "docker", "--builder-image", image,
                "--network", "default", "--go-proxy", url, str(src), "--output", f"oci-archive:{dst}"]
        run(fresh_command(*fresh(label), argv) if fresh else [str(OCIBUILD), *argv])
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
    print(f"{args.cold_runs} cold round(s) (fresh cache ids and volume; nothing shared pruned), then one "
          f"unmeasured round, {args.warmup} warm-up round(s) and {args.runs} measured warm runs per tool, "
          "interleaved")
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
    owned = Owned([Engine.docker()])
    token = secrets.token_hex(3)
    seen: dict[tuple[str, str], list[str]] = {}
    checks: list[str] = []
    try:
        root = goproxy.write_proxy(work / "proxy", pool)
        dirs = {key: goproxy.chaincode_module(work / f"src-{key}" / "chaincode", direct, pool=indirect)
                for key in ("ocibuild", "buildx")}
        change = OneLineChange(dirs["ocibuild"])
        with goproxy.serve_http(root, host=address or "127.0.0.1") as server:
            def dockerfile(label: str) -> Path:
                cold = label.startswith("c")
                df = work / "buildx" / f"Dockerfile-{label if cold else 'warm'}"
                if not df.exists():
                    df.parent.mkdir(exist_ok=True)
                    cid = f"{TAG}-{token}-modules-{label if cold else 'warm'}"
                    df.write_text(buildx_dockerfile(image, server.url, cid))
                return df

            def fresh(label: str) -> tuple[str, str]:
                name = f"{TAG}-{token}-modules-{label}"
                return name, owned.volume("docker", f"{name}-vol")

            bx = counted(buildx_runner(work, dirs["buildx"], dockerfile, images, "modules"), server, "buildx", seen)
            for t in (cold[1], warm[1]):
                t.runner = bx
            if not oci_why:
                cold[0].runner = counted(ocibuild_runner(work, dirs["ocibuild"], image, server.url, fresh),
                                         server, "ocibuild", seen)
                warm[0].runner = counted(ocibuild_runner(work, dirs["ocibuild"], image, server.url),
                                         server, "ocibuild", seen)
            labels = run_rounds(args, change, list(dirs.values()), token, work, images, owned, cold, warm)
        measured = [f"w{r}" for r in range(args.warmup, args.warmup + args.runs)]
        checks = same_work(work, labels, measured, seen, pool,
                           {"ocibuild": [cold[0], warm[0]], "buildx": [cold[1], warm[1]]})
    finally:
        while images:
            docker_cleanup_image(images.pop())
        owned.clean()
        if cache_before is not None:
            prune_new_cache(cache_before)       # the Dockerfiles' cache mounts, the cold rows' too
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    return report(cold, warm, checks, len(pool), not args.ignore_ratios)


def run_rounds(args, change: OneLineChange, dirs: list[Path], token: str, work: Path, images: list[str],
               owned: Owned, cold: list[Tool], warm: list[Tool]) -> list[str]:
    """Cold rounds (caches of their own), one unmeasured warm round, the warm
    rounds; every round's label, in order."""
    def tidy(label: str, keep: bool = False) -> Callable[[], None]:
        def go() -> None:
            if not keep:
                for f in work.glob(f"e2e-modules-*-{label}.tar"):
                    f.unlink()
            while images:
                docker_cleanup_image(images.pop())
        return go

    labels = []
    for k in range(args.cold_runs):
        label = f"c{k}"
        labels.append(label)
        change.apply(dirs, f"{token}{label}")
        for t in (cold if k % 2 == 0 else cold[::-1]):
            measure(t, label, True, tidy(label))
        owned.end_round()
        print(f"  cold round {k + 1}/{args.cold_runs} done", file=sys.stderr, flush=True)
    total = args.warmup + args.runs
    for rnd in range(-1, total):
        label = "p" if rnd < 0 else f"w{rnd}"
        labels.append(label)
        change.apply(dirs, f"{token}{label}")
        for t in (warm if rnd % 2 == 0 else warm[::-1]):
            measure(t, label, rnd >= args.warmup, tidy(label, keep=rnd == total - 1))
        print(f"  warm round {rnd + 2}/{total + 1}{'' if rnd >= args.warmup else ' (warm-up)'} done",
              file=sys.stderr, flush=True)
    return labels


def same_work(work: Path, labels: list[str], measured: list[str], seen: dict[tuple[str, str], list[str]],
              pool: list[goproxy.Module], rows: dict[str, list[Tool]]) -> list[str]:
    """Did the builds go through the proxy, and build the same binary?"""
    zips = {f"/{goproxy.escape(m.path)}/@v/{goproxy.escape(m.version)}.zip" for m in pool}
    lines = []
    for key, (cold_row, warm_row) in rows.items():
        cold = [seen[(key, label)] for label in labels if label.startswith("c") and (key, label) in seen]
        if cold_row.failed and cold_row.runner:
            lines.append(f"{key}: proxy use not checked: its cold build failed")
        elif cold:
            full = sum(1 for reqs in cold if zips <= set(reqs))
            lines.append(f"{key}: every module's .zip fetched from the proxy in {full} of {len(cold)} cold "
                         f"round(s) ({sum(len(r) for r in cold) / len(cold):.0f} requests per build)")
            if full != len(cold):
                cold_row.failed = "a cold build did not fetch every module from the proxy"
        first = seen.get((key, "p"))
        if first is not None:
            lines.append(f"{key}: first warm-cache build (unmeasured): {sum(1 for z in zips if z in first)} of "
                         f"{len(zips)} module .zip(s) fetched (its usual caches may hold them already)")
        warm = [seen[(key, label)] for label in measured if (key, label) in seen]
        if warm:
            n = sum(len(r) for r in warm)
            lines.append(f"{key}: {n} proxy request(s) in {len(warm)} measured warm round(s) "
                         "(the module cache is warm: 0 expected)")
            if n:
                warm_row.failed = warm_row.failed or "a warm build fetched from the proxy"
    last = labels[-1]
    return lines + same_binary_line(work / f"e2e-modules-ocibuild-{last}.tar",
                                    work / f"e2e-modules-bx-{last}.tar")


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
