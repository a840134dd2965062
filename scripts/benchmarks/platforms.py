"""Section "platforms" (issue 12): a two-platform build (linux/amd64 +
linux/arm64) of the sample chaincode (tests/fixtures/chaincode), source to
one archive holding both images, a one-line change rebuilt, COLD and WARM.
Every binary is cross-compiled (GOOS/GOARCH on the build machine's
toolchain), nothing is emulated.

  ocibuild docker  .venv/bin/ocibuild -q build --builder docker --builder-image
                   IMG --platform linux/amd64,linux/arm64 SRC --output
                   oci-archive:OUT --metadata-file META   (also --builder
                   podman and host; the default --sbom spdx, so every image
                   gets its SBOM referrer: the competitors make none)
  buildx each      per platform P: docker buildx build --builder default
                   --platform P -f DOCKERFILE -t NAME-ARCH --load SRC; then
                   docker save NAME-amd64 NAME-arm64 -o OUT (two images, no index)
  buildx bake      docker buildx bake --builder default: one target per
                   platform (output type=docker, i.e. --load), both in one
                   invocation, built in parallel; then docker save as above
  buildx one build docker buildx build --platform linux/amd64,linux/arm64
                   --output type=oci,dest=OUT: what a user would write; probed
                   every run with type=oci, type=docker,dest= and --load, and
                   measured only if one of them works. With the docker driver
                   of dockerd 20.10 (no containerd image store) each is
                   refused before anything is built, and a docker-container
                   builder needs the moby/buildkit image from a registry;
                   the row prints the refusals, word for word
  podman build     podman build --layers=false --pull=never --build-arg
                   BUILDPLATFORM=HOST --platform linux/amd64,linux/arm64
                   --manifest localhost/NAME -f DOCKERFILE SRC; then podman
                   manifest push --all localhost/NAME oci-archive:OUT (an OCI
                   index, both images). --build-arg BUILDPLATFORM: podman 4.3
                   leaves $BUILDPLATFORM empty in `FROM --platform=`, so
                   without it the build stage asks for an arm64 builder image
                   (probed every run and printed). --layers=false: no
                   intermediate images left behind (and faster than the
                   default --layers here)

DOCKERFILE, the same text for buildx and podman (cross-compiling, as Docker's
multi-platform guide writes it): FROM --platform=$BUILDPLATFORM IMG AS build,
ARG TARGETOS TARGETARCH, COPY . ., RUN --mount=type=cache,id=... (Go build
cache and module cache) GOOS=$TARGETOS GOARCH=$TARGETARCH CGO_ENABLED=0 go
build -trimpath -buildvcs=false -ldflags=-buildid= -mod=readonly; FROM
scratch, COPY --from, ocibuild's chaincode config (ENV, LABEL, USER
500:500). Each competitor's cache mounts have ids of its own: in a round
every tool builds the same source, and with one shared cache the second
buildx tool would find the first one's RUN step and Go objects ready.

IMG is $OCIBUILD_BUILDER_IMAGE or ocibuild's default builder image. Rows:
COLD (--cold-runs rounds, the tools' order rotating) gives every tool empty
Go caches WITHOUT pruning anything shared: the Dockerfile's cache mounts get
fresh `id=`s (BuildKit cache mounts; podman's /var/tmp/buildah-cache/ID),
ocibuild --builder docker and podman a fresh cache volume for the warm
builder container (so a new container: its key holds the volume; stopped
with its volume after the round) and fresh BuildKit cache mount ids for
--fresh-builder (ocibuild takes no option for these: the cold rows run
ocibuild's own CLI through benchmarks/caches.py's launcher), and
--builder host a fresh GOCACHE. The builder image and the Dockerfile's
FROM/ENV/WORKDIR steps stay cached, as on any machine that built once. WARM
(--runs rounds after --warmup, each a new one-line change in main.go, the
order rotating): each competitor's own cache mounts for the whole run,
ocibuild's usual caches. Checks on the last round's outputs: each
holds an amd64 and an arm64 image, each binary is an ELF for its platform,
and every tool built the same bytes per platform; ocibuild's docker, podman
and host builders give one index digest each round. Removed afterwards:
the temp dir, images, manifest lists, the bench's BuildKit cache records
(by id, as the other sections), buildah cache dirs, and the volumes and
warm builder containers it made.

No acceptance target: the ratios (ocibuild / each competitor, median/median)
are printed for information. Exit status 3 if docker buildx or podman
cannot run at all, 1 if a tool failed or the binaries differ, else 0; the
refused one-build row does not count as missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from .build import OneLineChange, probe
from .caches import (
    BENCH_LABEL,
    Engine,
    Owned,
    buildah_cache_dirs,
    buildah_cache_root,
    cache_mounts,
    fresh_command,
)
from .common import (
    CHAINCODE_CONFIG,
    DEST,
    OCIBUILD,
    SAMPLE,
    TAG,
    Tool,
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
)

PLATFORMS = ("linux/amd64", "linux/arm64")
ARCHES = tuple(p.split("/")[1] for p in PLATFORMS)
ELF_MACHINES = {"amd64": 0x3E, "arm64": 0xB7}
MACHINE_NAMES = {0x3E: "x86-64", 0xB7: "AArch64"}
LABEL = BENCH_LABEL                             # on podman build's images: found and removed by it

KEYS = ("oci-docker", "bx-each", "bx-bake", "bx-one", "oci-podman", "pm", "oci-host")
LABELS = {
    "oci-docker": "ocibuild build --builder docker --platform linux/amd64,linux/arm64 → oci-archive",
    "bx-each": "docker buildx build --load, once per platform, + docker save (2 images, no index)",
    "bx-bake": "docker buildx bake (2 targets, parallel) --load + docker save (2 images, no index)",
    "bx-one": "docker buildx build --platform linux/amd64,linux/arm64 --output type=oci (one build)",
    "oci-podman": "ocibuild build --builder podman --platform linux/amd64,linux/arm64 → oci-archive",
    "pm": "podman build --platform linux/amd64,linux/arm64 --manifest + manifest push --all oci-archive",
    "oci-host": "ocibuild build --builder host --platform linux/amd64,linux/arm64 (context)",
}


def host_platform() -> str:
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def dockerfile(image: str, cache_id: str) -> str:
    """The equivalent multi-stage, cross-compiling Dockerfile, its cache
    mounts' ids CACHE_ID-build and CACHE_ID-mod."""
    mounts = cache_mounts(cache_id)
    return ("FROM --platform=$BUILDPLATFORM " f"{image} AS build\n"
            "ARG TARGETOS TARGETARCH\n"
            "ENV CGO_ENABLED=0 GOCACHE=/root/.cache/go-build GOMODCACHE=/go/pkg/mod\n"
            "WORKDIR /src\n"
            "COPY . .\n"
            f"RUN {mounts} \\\n"
            "    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false -ldflags=-buildid= "
            "-mod=readonly -o /out/chaincode .\n"
            "FROM scratch\n"
            f"COPY --from=build /out/chaincode {DEST}\n"
            f"{CHAINCODE_CONFIG}")


def _err(p) -> str:
    """The first ERROR/Error line of a failed command (else its last line)."""
    lines = [x.strip() for x in (p.stderr or p.stdout).decode(errors="replace").splitlines() if x.strip()]
    return next((x for x in lines if x.lower().startswith("error")), lines[-1] if lines else f"exit {p.returncode}")


def probe_buildx(work: Path, ctx: Path, df: Path) -> tuple[list[str], str]:
    """Ask buildx for one two-platform build, three ways; (lines saying
    what it answered, the --output that worked or "")."""
    lines, works = [], ""
    ways = [("--output type=oci,dest=F", ["--output", f"type=oci,dest={work / 'probe-oci.tar'}"]),
            ("--output type=docker,dest=F", ["--output", f"type=docker,dest={work / 'probe-docker.tar'}"]),
            ("--load", ["--load"])]
    for what, opt in ways:
        p = run(["docker", "buildx", "build", "--builder", "default", "--progress", "quiet",
                 "--platform", ",".join(PLATFORMS), "-f", str(df), *opt, str(ctx)], check=False, timeout=600)
        if p.returncode == 0:
            lines.append(f"buildx, both platforms in one build, {what}: works")
            works = works or ("oci" if "type=oci" in what else "")
        else:
            lines.append(f"buildx, both platforms in one build, {what}: refused: {_err(p)}")
    for f in work.glob("probe-*.tar"):
        f.unlink()
    return lines, works


def probe_podman_buildplatform(work: Path, image: str) -> str:
    """Does podman build set $BUILDPLATFORM for `FROM --platform=`? A
    one-stage build for the other platform FROM --platform=$BUILDPLATFORM
    IMG, no pull: it finds IMG only if $BUILDPLATFORM is the host's."""
    d = work / "probe-podman"
    d.mkdir()
    (d / "Dockerfile").write_text(f"FROM --platform=$BUILDPLATFORM {image}\nLABEL {LABEL}={TAG}\n")
    other = next(x for x in PLATFORMS if x != host_platform())
    p = run(["podman", "build", "-q", "--layers=false", "--pull=never", "--platform", other,
             "--label", f"{LABEL}={TAG}", str(d)], check=False, timeout=300)
    shutil.rmtree(d)
    if p.returncode == 0:
        return "podman build sets $BUILDPLATFORM itself (the --build-arg is redundant here)"
    return (f"podman build without --build-arg BUILDPLATFORM: {_err(p)} (an empty $BUILDPLATFORM: the "
            "build stage asks for the target's image)")


# --- reading the outputs ------------------------------------------------------------

IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


def _binary_in_layers(tf: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                      layers: list[str]) -> tuple[str, int] | None:
    want = DEST.lstrip("/")
    for name in reversed(layers):
        m = members.get(name)
        if m is None:
            continue
        with tarfile.open(fileobj=tf.extractfile(m), mode="r:*") as layer:
            for lm in layer:
                if lm.isfile() and lm.name.lstrip("./") == want:
                    data = layer.extractfile(lm).read()
                    return "sha256:" + hashlib.sha256(data).hexdigest(), int.from_bytes(data[18:20], "little")
    return None


def platform_binaries(archive: Path) -> dict[str, tuple[str, int]]:
    """{arch: (sha256 of the chaincode binary, its ELF e_machine)} of every
    image in an OCI archive (through its indexes; SBOM artifacts skipped) or
    a `docker save` archive."""
    found: dict[str, tuple[str, int]] = {}
    with tarfile.open(archive) as tf:
        members = {m.name.lstrip("./"): m for m in tf.getmembers() if m.isfile()}

        def read(name: str) -> dict | list:
            return json.loads(tf.extractfile(members[name]).read())

        def blob(digest: str) -> str:
            return "blobs/" + digest.replace(":", "/", 1)

        if "index.json" in members:
            todo = list(read("index.json")["manifests"])
            while todo:
                d = todo.pop(0)
                if blob(d["digest"]) not in members:
                    continue
                doc = read(blob(d["digest"]))
                if "manifests" in doc:
                    todo += doc["manifests"]
                elif doc.get("config", {}).get("mediaType") in IMAGE_CONFIGS:
                    arch = read(blob(doc["config"]["digest"])).get("architecture", "?")
                    got = _binary_in_layers(tf, members, [blob(x["digest"]) for x in doc["layers"]])
                    if got:
                        found[arch] = got
        elif "manifest.json" in members:
            for entry in read("manifest.json"):
                arch = read(entry["Config"]).get("architecture", "?")
                got = _binary_in_layers(tf, members, entry["Layers"])
                if got:
                    found[arch] = got
    return found


# --- the runners ---------------------------------------------------------------------

class Made:
    """What the rounds leave in the engines, removed after each round
    (docker images, podman manifest lists and images) or at the end (buildah
    cache dirs; cache records, volumes and warm builders: Before)."""

    def __init__(self):
        self.docker: list[str] = []
        self.manifests: list[str] = []
        self.buildah: list[Path] = []

    def tidy(self) -> None:
        while self.docker:
            docker_cleanup_image(self.docker.pop())
        while self.manifests:
            out(["podman", "manifest", "rm", self.manifests.pop()])
        ids = (out(["podman", "images", "-q", "--filter", f"label={LABEL}={TAG}"]) or "").split()
        if ids:
            out(["podman", "rmi", "-f", *sorted(set(ids))])


class Runners:
    def __init__(self, args, work: Path, image: str, dirs: dict[str, Path], made: Made, token: str, owned: Owned):
        self.args, self.work, self.image, self.dirs, self.made, self.token = args, work, image, dirs, made, token
        self.owned = owned
        self.digests: dict[str, dict[str, str]] = {k: {} for k in ("docker", "podman", "host")}
        self.timings: dict[str, dict[str, dict[str, float]]] = {k: {} for k in ("docker", "podman", "host")}

    def fresh(self, label: str, what: str) -> str:
        return f"{TAG}-{self.token}-{label}-{what}"

    def _df(self, label: str, cold: bool, what: str) -> Path:
        """The Dockerfile of competitor `what`: its cache mounts get ids of its
        own, for the whole run (warm) or fresh for round `label` (cold). In a
        round every tool builds the same source: with one shared cache, the
        second buildx tool would find the first one's RUN step and Go
        objects ready."""
        cid = self.fresh(label, what) if cold else f"{TAG}-{self.token}-{what}"
        df = self.work / f"Dockerfile-{label if cold else 'warm'}-{what}"
        if not df.exists():
            df.write_text(dockerfile(self.image, cid))
            self.made.buildah += buildah_cache_dirs(cid)
        return df

    def ocibuild(self, builder: str, cold: bool) -> Callable[[str], int]:
        src = self.dirs[f"oci-{builder}"]

        def go(label: str) -> int:
            dst = self.work / f"out-oci-{builder}-{label}.tar"
            meta = self.work / f"meta-{builder}-{label}.json"
            argv = ["-q", "build", "--builder", builder, "--builder-image", self.image,
                    "--platform", ",".join(PLATFORMS), str(src), "--output", f"oci-archive:{dst}",
                    "--metadata-file", str(meta)]
            env = None
            if builder == "host":
                env = ({**os.environ, "GOCACHE": str(self.work / f"gocache-{label}")} if cold
                       else host_env(self.args, self.work, "host-gocache"))
            if cold and builder != "host":
                volume = self.owned.volume(builder, self.fresh(label, "vol"))
                cmd = fresh_command(self.fresh(label, "oci"), volume, argv)
            else:
                cmd = [str(OCIBUILD), *argv]
            p = run(cmd, env=env)
            self.digests[builder][label] = p.stdout.decode().strip().splitlines()[-1]
            try:
                self.timings[builder][label] = json.loads(meta.read_text()).get("timings", {})
            except (OSError, ValueError):
                pass
            return dst.stat().st_size
        return go

    def _save(self, names: list[str], dst: Path) -> int:
        run(["docker", "save", *names, "-o", str(dst)])
        return dst.stat().st_size

    def buildx_each(self, cold: bool) -> Callable[[str], int]:
        ctx = self.dirs["bx-each"]

        def go(label: str) -> int:
            df = self._df(label, cold, "bx")
            names = []
            for p, arch in zip(PLATFORMS, ARCHES, strict=True):
                name = f"{TAG}-each:{label}-{arch}"
                self.made.docker.append(name)
                names.append(name)
                run(["docker", "buildx", "build", "--builder", "default", "--progress", "quiet",
                     "--platform", p, "-f", str(df), "-t", name, "--load", str(ctx)])
            return self._save(names, self.work / f"out-bx-each-{label}.tar")
        return go

    def buildx_bake(self, cold: bool) -> Callable[[str], int]:
        ctx = self.dirs["bx-bake"]

        def go(label: str) -> int:
            df = self._df(label, cold, "bake")
            names = [f"{TAG}-bake:{label}-{arch}" for arch in ARCHES]
            targets = {arch: {"context": str(ctx), "dockerfile": str(df), "platforms": [p], "tags": [name],
                              "output": ["type=docker"]}
                       for p, arch, name in zip(PLATFORMS, ARCHES, names, strict=True)}
            bake = self.work / f"bake-{label}.json"
            bake.write_text(json.dumps({"group": {"default": {"targets": list(ARCHES)}}, "target": targets}))
            self.made.docker += names
            run(["docker", "buildx", "bake", "--builder", "default", "--progress", "quiet", "-f", str(bake)])
            return self._save(names, self.work / f"out-bx-bake-{label}.tar")
        return go

    def buildx_one(self, cold: bool) -> Callable[[str], int]:
        ctx = self.dirs["bx-each"]

        def go(label: str) -> int:
            df = self._df(label, cold, "one")
            dst = self.work / f"out-bx-one-{label}.tar"
            run(["docker", "buildx", "build", "--builder", "default", "--progress", "quiet",
                 "--platform", ",".join(PLATFORMS), "-f", str(df), "--output", f"type=oci,dest={dst}", str(ctx)])
            return dst.stat().st_size
        return go

    def podman_build(self, cold: bool) -> Callable[[str], int]:
        ctx = self.dirs["pm"]

        def go(label: str) -> int:
            df = self._df(label, cold, "pm")
            manifest = f"localhost/{TAG}-pm:{label}"
            self.made.manifests.append(manifest)
            run(["podman", "build", "-q", "--layers=false", "--pull=never",
                 "--build-arg", f"BUILDPLATFORM={host_platform()}", "--platform", ",".join(PLATFORMS),
                 "--label", f"{LABEL}={TAG}", "--manifest", manifest, "-f", str(df), str(ctx)])
            dst = self.work / f"out-pm-{label}.tar"
            run(["podman", "manifest", "push", "--all", "--quiet", manifest, f"oci-archive:{dst}"])
            return dst.stat().st_size
        return go


# --- the section -----------------------------------------------------------------------

class Before:
    """What existed before the run, so that only what the bench made is removed."""

    def __init__(self, docker_why: str, podman_why: str):
        self.cache = build_cache_ids() if not docker_why else None
        # ocibuild's cache volumes and warm builders (the cold rows' own, the usual ones if new)
        self.owned = Owned([e for e, why in ((Engine.docker(), docker_why), (Engine.podman(), podman_why))
                            if not why])
        self.root = buildah_cache_root()
        self.root_existed = self.root.exists()

    def clean(self, made: Made) -> None:
        made.tidy()
        self.owned.clean()
        if self.cache is not None:
            prune_new_cache(self.cache)         # the Dockerfiles' and cold rows' cache mounts too
        for d in made.buildah:                  # podman build's cache mounts
            shutil.rmtree(d, ignore_errors=True)
        if not self.root_existed:
            try:
                self.root.rmdir()
            except OSError:
                pass


def probes(docker_why: str, podman_why: str, work: Path, image: str, runners: Runners) -> tuple[str, list[str]]:
    """(why the one two-platform buildx build cannot run, or "", the probe lines)."""
    notes: list[str] = []
    one_why = docker_why
    if not docker_why:
        notes, works = probe_buildx(work, runners.dirs["bx-each"], runners._df("", False, "one"))
        if works != "oci":
            one_why = "refused here: " + "; ".join(line.split(": refused: ", 1)[-1] for line in notes
                                                  if "refused" in line and "type=oci" in line) \
                + " (see the probe lines)"
    if not podman_why:
        notes.append(probe_podman_buildplatform(work, image))
    return one_why, notes


def make_tools(runners: Runners, is_cold: bool, whys: dict[str, str]) -> list[Tool]:
    word = "COLD" if is_cold else "WARM"
    made_by = {
        "oci-docker": lambda: runners.ocibuild("docker", is_cold),
        "bx-each": lambda: runners.buildx_each(is_cold),
        "bx-bake": lambda: runners.buildx_bake(is_cold),
        "bx-one": lambda: runners.buildx_one(is_cold),
        "oci-podman": lambda: runners.ocibuild("podman", is_cold),
        "pm": lambda: runners.podman_build(is_cold),
        "oci-host": lambda: runners.ocibuild("host", is_cold),
    }
    return [Tool(k, f"{LABELS[k]}, {word}", None if whys[k] else make(), whys[k], competitor=not k.startswith("oci"))
            for k, make in made_by.items()]


def run_rounds(args, change: OneLineChange, dirs: list[Path], token: str, work: Path, made: Made,
               cold: list[Tool], warm: list[Tool], owned: Owned) -> list[str]:
    """The cold rounds, then the warm ones; the measured warm rounds' labels."""
    for k in range(args.cold_runs):
        label = f"c{k}"
        change.apply(dirs, f"{token}{label}")
        for t in rotate(cold, k):
            measure(t, label, True, tidy(work, label, made))
        owned.end_round()                       # the fresh volumes' warm builders, and the volumes
        print(f"  cold round {k + 1}/{args.cold_runs} done", file=sys.stderr, flush=True)
    total = args.warmup + args.runs
    for rnd in range(total):
        label = f"w{rnd}"
        change.apply(dirs, f"{token}{label}")
        for t in rotate(warm, rnd):
            measure(t, label, rnd >= args.warmup, tidy(work, label, made, keep=rnd == total - 1))
        print(f"  warm round {rnd + 1}/{total}{'' if rnd >= args.warmup else ' (warm-up)'} done",
              file=sys.stderr, flush=True)
    return [f"w{r}" for r in range(args.warmup, total)]


def section(args, docker_missing: str) -> int:
    image = builder_image()
    docker_why, podman_why, host_why, versions = probe(image, docker_missing)

    print("## platforms: a two-platform build (linux/amd64 + linux/arm64), source to one archive")
    load0 = loadavg()
    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-platforms-", dir=args.tmpdir))
    made = Made()
    before = Before(docker_why, podman_why)
    cold: list[Tool] = []
    warm: list[Tool] = []
    checks: list[str] = []
    try:
        dirs = {k: work / f"src-{k}" / SAMPLE.name for k in KEYS if k != "bx-one"}
        for d in dirs.values():
            shutil.copytree(SAMPLE, d, symlinks=True)
        change = OneLineChange(dirs["oci-docker"])
        token = secrets.token_hex(3)
        runners = Runners(args, work, image, dirs, made, token, before.owned)
        one_why, notes = probes(docker_why, podman_why, work, image, runners)

        print(f"source: {SAMPLE} (module, not vendored), copied per tool; the change: {change.describe()} "
              "gets a new suffix each round")
        print(f"{versions}; build platform {host_platform()}, cross-compiling for {', '.join(PLATFORMS)}")
        print(f"{args.cold_runs} cold round(s) (fresh cache ids, volume and GOCACHE; nothing shared pruned), "
              f"then {args.runs} measured warm runs per tool after {args.warmup} warm-up round(s), "
              "interleaved, the order rotating")
        for line in notes:
            print(line)
        print(flush=True)

        whys = {"oci-docker": docker_why, "bx-each": docker_why, "bx-bake": docker_why, "bx-one": one_why,
                "oci-podman": podman_why, "pm": podman_why, "oci-host": host_why}
        cold, warm = make_tools(runners, True, whys), make_tools(runners, False, whys)
        measured = run_rounds(args, change, list(dirs.values()), token, work, made, cold, warm, before.owned)
        last = f"w{args.warmup + args.runs - 1}"
        checks = same_work(work, last, measured, runners, warm) + where_time_goes(runners, measured, warm)
    finally:
        before.clean(made)
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    return report(cold, warm, checks, docker_why, podman_why)


def tidy(work: Path, label: str, made: Made, keep: bool = False) -> Callable[[], None]:
    def go() -> None:
        if not keep:
            for f in work.glob(f"out-*-{label}.tar"):
                f.unlink()
        made.tidy()
    return go


def same_work(work: Path, last: str, measured: list[str], runners: Runners, warm: list[Tool]) -> list[str]:
    """Both platforms in every output, each binary for its platform, the same
    bytes from every tool; one index digest from ocibuild's three builders."""
    outputs = {"ocibuild docker": f"out-oci-docker-{last}.tar", "buildx each": f"out-bx-each-{last}.tar",
               "buildx bake": f"out-bx-bake-{last}.tar", "buildx one build": f"out-bx-one-{last}.tar",
               "ocibuild podman": f"out-oci-podman-{last}.tar", "podman build": f"out-pm-{last}.tar",
               "ocibuild host": f"out-oci-host-{last}.tar"}
    bins = {k: platform_binaries(work / f) for k, f in outputs.items() if (work / f).exists()}
    lines = []
    bad = False
    if bins:
        lines.append("images per output, last round: " + ", ".join(
            f"{k} {'+'.join(sorted(v)) or 'none'}" for k, v in bins.items()))
        for arch in ARCHES:
            shas = {k: v[arch][0] for k, v in bins.items() if arch in v}
            machines = {MACHINE_NAMES.get(v[arch][1], hex(v[arch][1])) for v in bins.values() if arch in v}
            same = len(shas) == len(bins) and len(set(shas.values())) == 1
            elf_ok = machines == {MACHINE_NAMES[ELF_MACHINES[arch]]}
            bad = bad or not same or not elf_ok
            sha = next(iter(shas.values()), "none")
            lines.append(f"linux/{arch} chaincode binary, last round: "
                         + (f"{sha} from all {len(bins)} tools, same bytes" if same else
                            "DIFFERENT — " + ", ".join(f"{k} {s}" for k, s in shas.items()))
                         + f"; ELF machine {'/'.join(sorted(machines))}"
                         + ("" if elf_ok else f" — NOT {MACHINE_NAMES[ELF_MACHINES[arch]]}"))
    present = [b for b in ("docker", "podman", "host") if runners.digests[b]]
    if len(present) > 1:
        agree = sum(1 for r in measured if len({runners.digests[b].get(r) for b in present}) == 1
                    and runners.digests[present[0]].get(r))
        lines.append(f"index digest from ocibuild --builder {'/'.join(present)}: identical in {agree} of "
                     f"{len(measured)} measured round(s)")
        bad = bad or agree != len(measured)
    seq = [runners.digests["docker"].get(r) for r in measured if runners.digests["docker"].get(r)]
    if len(seq) > 1:
        lines.append(f"one-line change: {len(set(seq))} distinct index digest(s) from {len(seq)} measured round(s)"
                     + ("" if len(set(seq)) == len(seq) else " — the change did NOT reach the binary every round"))
    if bad and warm:
        warm[0].failed = warm[0].failed or "the outputs do not hold the same two binaries (see the checks)"
    return lines


def where_time_goes(runners: Runners, measured: list[str], warm: list[Tool]) -> list[str]:
    """ocibuild's own phase timings (--metadata-file), medians of the measured
    warm rounds; the rest of its wall time is Python's start-up, reading the
    source, checking the engine and picking the toolchain."""
    lines = []
    walls = {t.key: median_or_none(t) for t in warm}
    for b in ("docker", "podman", "host"):
        rounds = [runners.timings[b][r] for r in measured if r in runners.timings[b]]
        if not rounds:
            continue
        phases = sorted({p for t in rounds for p in t}, key=lambda p: (not p.startswith("compile"), p))
        med = {p: statistics.median(t.get(p, 0.0) for t in rounds) for p in phases}
        wall = walls.get(f"oci-{b}")
        rest = f"; the rest of its {wall:.2f} s wall time {wall - sum(med.values()):.2f}" if wall else ""
        lines.append(f"ocibuild --builder {b}, WARM, its phases (median s): "
                     + ", ".join(f"{p} {v:.2f}" for p, v in med.items()) + rest)
    return lines


def row(t: Tool, base: float | None) -> str:
    if t.missing:
        word = "REFUSED" if t.missing.startswith("refused here") else "SKIPPED"
        return f"| {t.label} | {word} | — | — | {t.missing} |"
    if not t.times:
        if t.failed:
            return f"| {t.label} | FAILED | — | — | {t.failed.splitlines()[0]} |"
        return f"| {t.label} | NOT RUN | — | — | --cold-runs 0 |"
    med = statistics.median(t.times)
    note = " (FAILED after some runs)" if t.failed else ""
    return (f"| {t.label} | {med:.3f} | {min(t.times):.3f} | {f'{med / base:.2f}' if base else '—'} "
            f"| {t.size}{note} |")


PAIRS = (("oci-docker", "bx-each", "ocibuild --builder docker / (buildx once per platform + docker save)"),
         ("oci-docker", "bx-bake", "ocibuild --builder docker / (buildx bake + docker save)"),
         ("oci-docker", "bx-one", "ocibuild --builder docker / buildx one two-platform build"),
         ("oci-podman", "pm", "ocibuild --builder podman / (podman build --manifest + manifest push)"))


def report(cold: list[Tool], warm: list[Tool], checks: list[str], docker_why: str, podman_why: str) -> int:
    print("| tool | median s | min s | ratio to ocibuild --builder docker, same temperature (median/median; "
          "< 1 = faster) | output bytes |")
    print("|---|---:|---:|---:|---:|")
    for group in (cold, warm):
        base = median_or_none(group[0]) if group else None
        for t in group:
            if group is cold and t.missing.startswith("refused here"):
                continue                        # said once, in the warm rows
            print(row(t, base))
    print()
    for line in checks:
        print(line)
    if checks:
        print()
    print("ratios (median/median; < 1: ocibuild faster; for information, no acceptance target):")
    for word, group in (("cold", cold), ("warm", warm)):
        by = {t.key: t for t in group}
        for a, b, text in PAIRS:
            ta, tb = by.get(a), by.get(b)
            if ta and tb and ta.times and tb.times:
                print(f"  {word}: {text} = {statistics.median(ta.times) / statistics.median(tb.times):.3f}")
            elif tb and tb.missing and word == "warm":
                print(f"  {word}: {text}: not measured — {tb.missing}")
    failed = any(t.failed for t in cold + warm)
    missing = bool(docker_why or podman_why)
    return exit_status(missing, failed, "competitor not available: "
                       + "; ".join(w for w in (docker_why, podman_why) if w),
                       "platforms: a tool failed or the outputs differ")
