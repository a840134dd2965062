"""Section "assemble" (issue 2): one large Go binary into an image archive.

Side by side, in one run, each measured --runs times (rounds interleaved,
so slow drift of the machine hits every tool alike; --warmup unmeasured
warm-up rounds first, default one):

  ocibuild gzip   .venv/bin/ocibuild -q assemble --base scratch
                  --add BIN:/usr/local/bin/chaincode --compression gzip
                  --output oci-archive:OUT
  ocibuild none   the same, --compression none
  ocibuild zstd   the same, --compression zstd
  docker          docker buildx build --builder default (the docker driver)
                  --no-cache -t NAME --load CTX   +   docker save NAME -o OUT
                  (Dockerfile: FROM scratch / COPY chaincode /usr/local/bin/chaincode)
  buildah         buildah from scratch; buildah copy; buildah commit --format oci
                  CTR oci-archive:OUT; buildah rm CTR
  floor           in this process: sha256(tar bytes) -> isal gzip level 2
                  (ocibuild.oci.compression) -> sha256 -> null sink; no tar, no files

BIN is --binary, else docker-buildx or dockerd if 55–75 MiB. Its bytes are
identical for every tool; before each docker build its mtime is bumped
(content unchanged) so BuildKit re-sends the context as it would after a
recompile, and --no-cache makes it redo the COPY. Everything the section
makes (temp dir, images, containers, BuildKit cache records) is removed.

Acceptance: ocibuild gzip / (docker buildx build + docker save) <= 1.0 and
ocibuild none / buildah <= 0.5 (median/median).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ocibuild.oci.compression import compression
from ocibuild.oci.elf import read_elf

from .common import (
    CHUNK,
    DEST,
    OCIBUILD,
    TAG,
    Tool,
    build_cache_ids,
    check_ratio,
    docker_cleanup_image,
    exit_status,
    loadavg,
    measure,
    median_or_none,
    mib,
    out,
    prune_new_cache,
    run,
    tool_row,
)

CANDIDATES = ["/usr/libexec/docker/cli-plugins/docker-buildx", "/usr/sbin/dockerd"]
MIN_SIZE, MAX_SIZE = 55 * 2**20, 75 * 2**20     # 55–75 MiB


# --- the binary ----------------------------------------------------------------

def pick_binary(given: str | None) -> Path:
    if given:
        p = Path(given)
        if not p.is_file():
            sys.exit(f"bench: --binary {given}: not a file")
        return p
    for c in CANDIDATES:
        p = Path(c)
        if p.is_file() and MIN_SIZE <= p.stat().st_size <= MAX_SIZE:
            return p
    sizes = ", ".join(f"{c} ({mib(Path(c).stat().st_size)})" if Path(c).is_file() else f"{c} (absent)"
                      for c in CANDIDATES)
    sys.exit(f"bench: no Go binary of 55–75 MiB found: {sizes}; pass --binary PATH")


def elf_interpreter(path: Path) -> str:
    """The ELF loader `path` asks for ("" if static or not ELF): ocibuild
    refuses such an executable on scratch, where no loader is."""
    info = read_elf(str(path))
    return info.interpreter if info else ""


# --- the tools -------------------------------------------------------------------

def ocibuild_runner(work: Path, src: Path, comp: str) -> Callable[[int], int]:
    def go(i: int) -> int:
        dst = work / f"ocibuild-{comp}-{i}.tar"
        run([str(OCIBUILD), "-q", "assemble", "--base", "scratch", "--add", f"{src}:{DEST}",
             "--compression", comp, "--output", f"oci-archive:{dst}"])
        return dst.stat().st_size
    return go


def docker_runner(work: Path, ctx: Path, made: list[str]) -> Callable[[int], int]:
    binary = ctx / "chaincode"

    def go(i: int) -> int:
        name = f"{TAG}:{i}"
        dst = work / f"docker-{i}.tar"
        made.append(name)
        # What a recompile does to the context (bytes unchanged): BuildKit's
        # context sync sees a changed file and sends it again.
        t = time.time_ns()
        os.utime(binary, ns=(t, t))
        run(["docker", "buildx", "build", "--builder", "default", "--no-cache", "--progress", "quiet",
             "-t", name, "--load", str(ctx)])
        run(["docker", "save", name, "-o", str(dst)])
        return dst.stat().st_size
    return go


def buildah_probe() -> tuple[str, list[str], str]:
    """(why buildah cannot be used or "", global storage options, version text).
    The storage's own configured driver (overlay as root here) is tried first;
    vfs only if that fails."""
    if not shutil.which("buildah"):
        return "buildah not found", [], ""
    version = out(["buildah", "--version"]) or "buildah ?"
    for opts in ([], ["--storage-driver", "vfs"]):
        ctr = f"{TAG}-probe"
        if out(["buildah", *opts, "from", "--name", ctr, "scratch"]) is not None:
            out(["buildah", *opts, "rm", ctr])
            info = out(["buildah", *opts, "info", "--format", "{{.store.GraphDriverName}}"])
            driver = info or (opts[1] if opts else "default")
            return "", opts, f"{version.replace('buildah version ', 'buildah ')}, storage driver {driver}"
        out(["buildah", *opts, "rm", ctr])
    return "buildah cannot create a container from scratch (overlay and vfs both failed)", [], ""


def buildah_runner(work: Path, src: Path, opts: list[str], made: list[str]) -> Callable[[int], int]:
    def go(i: int) -> int:
        ctr = f"{TAG}-{i}"
        dst = work / f"buildah-{i}.tar"
        made.append(ctr)
        run(["buildah", *opts, "from", "--name", ctr, "scratch"])
        run(["buildah", *opts, "copy", ctr, str(src), DEST])
        run(["buildah", *opts, "commit", "--format", "oci", ctr, f"oci-archive:{dst}"])
        run(["buildah", *opts, "rm", ctr])
        made.remove(ctr)
        return dst.stat().st_size
    return go


class _NullHashSink:
    def __init__(self):
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b) -> int:
        self.h.update(b)
        self.size += len(b)
        return len(b)


def floor_runner(data: bytes) -> Callable[[int], int]:
    """The in-process floor: what write_layer must at least do for this file."""
    comp = compression("gzip")
    view = memoryview(data)

    def go(i: int) -> int:
        sink = _NullHashSink()
        w = comp.writer(sink)
        diff = hashlib.sha256()
        for off in range(0, len(view), CHUNK):
            chunk = view[off:off + CHUNK]
            diff.update(chunk)
            w.write(chunk)
        w.close()
        diff.hexdigest(), sink.h.hexdigest()
        return sink.size
    return go


# --- the section -------------------------------------------------------------------

def section(args, src_bin: Path, docker_missing: str, buildah_missing: str, buildah_opts: list[str]) -> int:
    size = src_bin.stat().st_size
    interp = elf_interpreter(src_bin)

    print("## assemble: one large binary into an image archive")
    print(f"binary: {src_bin} — {size} bytes ({mib(size)}), added as {DEST}; "
          f"{args.runs} measured runs per tool after {args.warmup} warm-up round(s), interleaved")
    if interp:
        print(f"note: the binary is dynamically linked ({interp}); ocibuild refuses a dynamic "
              f"executable on scratch (it could never start), so every tool adds it as a 0644 file: "
              f"same bytes, same work. Pass --binary with a static Go binary to add it as 0755.")
    print(flush=True)

    load0 = loadavg()
    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-", dir=args.tmpdir))
    docker_images: list[str] = []
    buildah_ctrs: list[str] = []
    cache_before = build_cache_ids() if not docker_missing else None
    try:
        ctx = work / "ctx"
        ctx.mkdir()
        binary = ctx / "chaincode"
        shutil.copyfile(src_bin, binary)       # one file, the same bytes for every tool
        # ocibuild refuses (rightly) a dynamic executable on scratch: no loader
        # there. The bytes, not the mode, make the work: every tool gets 0644.
        os.chmod(binary, 0o644 if interp else 0o755)
        (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY chaincode {DEST}\n")
        data = binary.read_bytes()

        tools = [
            Tool("gzip", "ocibuild --compression gzip", ocibuild_runner(work, binary, "gzip")),
            Tool("none", "ocibuild --compression none", ocibuild_runner(work, binary, "none")),
            Tool("zstd", "ocibuild --compression zstd", ocibuild_runner(work, binary, "zstd")),
            Tool("docker", "docker buildx build --load + docker save (uncompressed)",
                 docker_runner(work, ctx, docker_images) if not docker_missing else None,
                 docker_missing, competitor=True),
            Tool("buildah", "buildah from+copy+commit oci-archive+rm (uncompressed)",
                 buildah_runner(work, binary, buildah_opts, buildah_ctrs) if not buildah_missing else None,
                 buildah_missing, competitor=True),
            Tool("floor", "floor: in-process sha256+isal gzip+sha256", floor_runner(data)),
        ]

        def tidy(rnd: int) -> Callable[[], None]:
            def go() -> None:
                for f in work.glob(f"*-{rnd}.tar"):
                    f.unlink()
                while docker_images:
                    docker_cleanup_image(docker_images.pop())
            return go

        for rnd in range(args.warmup + args.runs):
            measured = rnd >= args.warmup
            for t in tools:
                measure(t, rnd, measured, tidy(rnd))
            print(f"  round {rnd + 1}/{args.warmup + args.runs}{'' if measured else ' (warm-up)'} done",
                  file=sys.stderr, flush=True)
    finally:
        for c in buildah_ctrs:
            out(["buildah", *buildah_opts, "rm", c])
        for name in docker_images:
            docker_cleanup_image(name)
        if cache_before is not None:
            prune_new_cache(cache_before)
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    return report(tools, enforce=not args.ignore_ratios)


def report(tools: list[Tool], enforce: bool = True) -> int:
    by = {t.key: t for t in tools}
    base = median_or_none(by["gzip"])
    print("| tool | median s | min s | ratio to ocibuild gzip (median/median; < 1 = faster) | output bytes |")
    print("|---|---:|---:|---:|---:|")
    for t in tools:
        print(tool_row(t, base, str(t.size)))
    print()

    missing = failed = False
    checks = [("ocibuild gzip / (docker buildx build + docker save)", "gzip", "docker", 1.0),
              ("ocibuild none / buildah", "none", "buildah", 0.5)]
    print("acceptance (median/median; lower is better):")
    for text, a, b, limit in checks:
        m, f = check_ratio(text, by[a], by[b], limit, f"must be <= {limit}", enforce)
        missing, failed = missing or m, failed or f
    failed = failed or any(t.failed for t in tools)
    status = exit_status(missing, failed)
    absent = [t.label for t in tools if t.competitor and t.runner is None]
    if absent:
        print(f"\nbench: competitor(s) not available: {', '.join(absent)} — exit status {status}",
              file=sys.stderr)
    elif failed:
        print(f"\nbench: an acceptance ratio was missed or a tool failed — exit status {status}",
              file=sys.stderr)
    return status
