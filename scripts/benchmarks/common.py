"""What every section shares: running tools, timing them, the docker
helpers, the machine line and the pieces of the report tables."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
OCIBUILD = REPO / ".venv" / "bin" / "ocibuild"
FIXTURES = REPO / "tests" / "fixtures"
SAMPLE = FIXTURES / "chaincode"                 # the sample chaincode (size, registry)
DEST = "/usr/local/bin/chaincode"
TIMEOUT = 900
CHUNK = 1 << 20
TAG = f"ocibuild-bench-{os.getpid()}"
# What `ocibuild build` writes into a chaincode image's config by default
# (ocibuild.fabric.conventions), so a Dockerfile's image is the same image.
CHAINCODE_CONFIG = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
                    "CORE_CHAINCODE_BUILDLEVEL=2.5\n"
                    "LABEL org.hyperledger.fabric.chaincode.type=GOLANG org.hyperledger.fabric.version=2.5\n"
                    "USER 500:500\n")
ARCHIVE_TRANSPORTS = ("docker-archive", "oci-archive", "oci")


class ToolFailed(Exception):
    pass


def run(cmd: list[str], timeout: int = TIMEOUT, check: bool = True,
        env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env, cwd=cwd)
    if check and p.returncode != 0:
        tail = (p.stderr or p.stdout).decode(errors="replace").strip().splitlines()[-8:]
        raise ToolFailed(f"{' '.join(cmd)} exited {p.returncode}:\n    " + "\n    ".join(tail))
    return p


def out(cmd: list[str]) -> str | None:
    """stdout of a quick query, or None if the command fails or is missing."""
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.decode(errors="replace").strip() if p.returncode == 0 else None


def compile_bytecode() -> None:
    """Python's bytecode cache for this checkout's ocibuild, as `pip install`
    writes it for an installed package (its dependencies in .venv have
    theirs already): without it every timed run would compile each module
    it imports (~0.1 s), and the rootless user, who cannot write here, on
    every run. Written once, before any section; every run then reads it
    (PYTHONDONTWRITEBYTECODE stops writing, not reading)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "ocibuild")],
                   stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=TIMEOUT)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def host_env(args, work: Path, name: str) -> dict[str, str]:
    """The environment of an `ocibuild build --builder host`: GOCACHE is
    --gocache if given (shared, e.g. between smoke runs), else a fresh one
    in the section's temp dir, so no cache of the machine's is used."""
    return {**os.environ, "GOCACHE": str(Path(args.gocache).resolve() if args.gocache else work / name)}


def builder_image() -> str:
    """The Go builder image: $OCIBUILD_BUILDER_IMAGE, else ocibuild's default."""
    from ocibuild.builders.images import DEFAULT_IMAGE
    return os.environ.get("OCIBUILD_BUILDER_IMAGE") or DEFAULT_IMAGE


# --- timing ------------------------------------------------------------------------

@dataclass
class Tool:
    key: str
    label: str
    runner: Callable[[Any], int] | None     # round label -> output size in bytes
    missing: str = ""                       # why it cannot run
    competitor: bool = False
    times: list[float] = field(default_factory=list)
    size: int | None = None
    failed: str = ""
    retries: int = 0                        # a failed run is run again, this many times in all
    retried: list[str] = field(default_factory=list)     # why each retry was needed
    prepare: Callable[[], None] | None = None            # before each run, not timed
    disturbed: Callable[[], str] | None = None           # after a run, not timed: why it does not count, or ""


def measure(t: Tool, label: Any, measured: bool, after: Callable[[], None]) -> None:
    """Run `t` once for round `label`, then `after` (even if it failed);
    a measured round adds its time and output size. `t.prepare` runs first,
    untimed. A failed run, or one that `t.disturbed` says does not count, is
    run again while `t.retries` lasts (another process on a shared machine
    can remove a container under it); only the last run is timed."""
    if t.runner is None or t.failed:
        return
    try:
        while True:
            try:
                if t.prepare is not None:
                    t.prepare()
                t0 = time.perf_counter()
                n = t.runner(label)
                dt = time.perf_counter() - t0
                why = t.disturbed() if t.disturbed is not None else ""
                if why and len(t.retried) < t.retries:
                    t.retried.append(f"{label}: {why}")
                    print(f"bench: {t.label}, round {label}: {why}; running it again", file=sys.stderr)
                    continue
                break
            except (ToolFailed, subprocess.TimeoutExpired, OSError) as e:
                if len(t.retried) >= t.retries:
                    raise
                t.retried.append(f"{label}: {str(e).splitlines()[-1].strip()}")
                print(f"bench: {t.label} failed in round {label}, trying again: {e}", file=sys.stderr)
    except (ToolFailed, subprocess.TimeoutExpired, OSError) as e:
        t.failed = str(e)
        print(f"bench: {t.label} failed: {e}", file=sys.stderr)
        return
    finally:
        after()
    if measured:
        t.times.append(dt)
        t.size = n


def rotate(tools: list[Tool], k: int) -> list[Tool]:
    """Round k's order: the tools rotated by k, so none always goes first."""
    k %= len(tools)
    return tools[k:] + tools[:k]


# --- docker ----------------------------------------------------------------------------

def docker_probe() -> tuple[str, str]:
    """(why docker buildx cannot be used or "", version text)."""
    if not shutil.which("docker"):
        return "docker client not found", ""
    if out(["docker", "info", "--format", "{{.ServerVersion}}"]) is None:
        return "dockerd not reachable (`docker info` fails; run scripts/setup)", ""
    bx = out(["docker", "buildx", "version"])
    if bx is None:
        return ("docker buildx plugin not installed "
                "(/usr/libexec/docker/cli-plugins/docker-buildx; run scripts/setup)"), ""
    ins = out(["docker", "buildx", "inspect", "default"]) or ""
    driver = next((line.split(":", 1)[1].strip() for line in ins.splitlines() if line.startswith("Driver:")), "?")
    if driver != "docker":
        return f"builder 'default' uses driver {driver!r}, not 'docker'", ""
    bk = next((line.split(":", 1)[1].strip() for line in ins.splitlines()
               if line.strip().startswith(("Buildkit:", "BuildKit version:"))), "?")
    server = out(["docker", "version", "--format", "{{.Server.Version}}"]) or "?"
    words = bx.split()
    return "", f"dockerd {server}, buildx {words[1] if len(words) > 1 else bx} (docker driver, BuildKit {bk})"


def build_cache_ids() -> set[str] | None:
    """Ids of BuildKit cache records in dockerd (None if they cannot be listed)."""
    text = out(["docker", "buildx", "du", "--builder", "default", "--verbose"])
    if text is None:
        return None
    return {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("ID:")}


def prune_new_cache(before: set[str]) -> None:
    """Remove the BuildKit cache records made since `before` was taken (one
    id per prune: several --filter id= are ANDed). Records that another
    build made meanwhile would go too; in-use records are never pruned."""
    for _ in range(3):                   # a record can hold its parent until pruned
        new = sorted((build_cache_ids() or set()) - before)
        if not new:
            return
        for i in new:
            out(["docker", "buildx", "prune", "--builder", "default", "-f", "--filter", f"id={i}"])
    left = (build_cache_ids() or set()) - before
    if left:
        print(f"bench: {len(left)} BuildKit cache record(s) could not be pruned: {sorted(left)}",
              file=sys.stderr)


def docker_cleanup_image(name: str) -> None:
    out(["docker", "rmi", "-f", name])


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount: whatever debootstrap left
    mounted inside (proc, sys, after a failure) is unmounted first."""
    if not os.path.lexists(path):
        return
    prefix = str(path.resolve()) + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
    except OSError:
        mounts = []
    for m in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        out(["umount", "-l", m])
    run(["rm", "-rf", "--one-file-system", str(path)], check=False)


# --- the report ------------------------------------------------------------------------

def machine_line(docker_v: str, buildah_v: str) -> str:
    import isal
    import zstandard
    commit = out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"
    dirty = out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "ocibuild"])
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"machine: nproc {os.cpu_count()} ({cpu}), kernel {platform.release()}, "
            f"Python {platform.python_version()}, ocibuild {commit}{'+dirty' if dirty else ''} "
            f"(isal {isal.__version__}, zstandard {zstandard.__version__}); "
            f"{docker_v or 'docker: n/a'}; {buildah_v or 'buildah: n/a'}")


def tool_row(t: Tool, base: float | None, last: str, not_run: str = "not run") -> str:
    """One row of a timing table: | label | median s | min s | ratio to `base` | last |;
    SKIPPED, FAILED or NOT RUN (with the reason in the last column) when
    there is no time."""
    if t.missing:
        return f"| {t.label} | SKIPPED | — | — | {t.missing} |"
    if not t.times:
        if t.failed:
            return f"| {t.label} | FAILED | — | — | {t.failed.splitlines()[0]} |"
        return f"| {t.label} | NOT RUN | — | — | {not_run} |"
    med = statistics.median(t.times)
    ratio = f"{med / base:.2f}" if base else "—"
    note = " (FAILED after some runs)" if t.failed else ""
    return f"| {t.label} | {med:.3f} | {min(t.times):.3f} | {ratio} | {last}{note} |"


def print_temperatures(cold: list[Tool], warm: list[Tool], ratio_to: str, checks: list[str]) -> None:
    """The COLD and WARM rows in one table, each group's ratios to its first
    tool (`ratio_to` names it), then the check lines."""
    print(f"| tool | median s | min s | ratio to {ratio_to}, same temperature (median/median; < 1 = faster) "
          "| output bytes |")
    print("|---|---:|---:|---:|---:|")
    for group in (cold, warm):
        base = median_or_none(group[0])
        for t in group:
            print(tool_row(t, base, str(t.size), not_run="--cold-runs 0"))
    print()
    for line in checks:
        print(line)
    if checks:
        print()


def median_or_none(t: Tool) -> float | None:
    return statistics.median(t.times) if t.times else None


def check_ratio(text: str, a: Tool, b: Tool, limit: float, must: str, enforce: bool) -> tuple[bool, bool]:
    """Print one acceptance line, median(a) / median(b) <= limit; returns
    (missing, failed). Not `enforce`d (--ignore-ratios), a miss is printed
    but not counted: tiny smoke inputs make the timings meaningless."""
    if b.runner is None:
        print(f"  {text}: NOT MEASURED — {b.missing}")
        return True, False
    if not a.times or not b.times or a.failed or b.failed:
        print(f"  {text}: NOT MEASURED — a run failed")
        return False, True
    r = statistics.median(a.times) / statistics.median(b.times)
    ok = r <= limit
    verdict = "PASS" if ok else "FAIL" if enforce else "FAIL (not counted: --ignore-ratios)"
    print(f"  {text} = {r:.3f} ({must}): {verdict}")
    return False, not ok and enforce


def exit_status(missing: bool, failed: bool, missing_says: str = "", failed_says: str = "") -> int:
    """3 a tool was not available, 1 one failed or missed its ratio, else 0;
    with the matching `*_says`, a last line on stderr saying which."""
    status = 3 if missing else 1 if failed else 0
    says = missing_says if missing else failed_says if failed else ""
    if says:
        print(f"\nbench: {says} — exit status {status}", file=sys.stderr)
    return status
