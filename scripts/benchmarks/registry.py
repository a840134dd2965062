"""Section "registry" (issues 5 and 13): images pushed to a local registry,
ocibuild against skopeo copy.

Two images, made once:

  IMG.tar  the sample chaincode's: `ocibuild fabric package --label bench_1`
           of tests/fixtures/chaincode, then `ocibuild build --builder host
           PKG --output oci-archive:IMG.tar:v1` (GOCACHE in the temp dir, or
           --gocache): 3.5 MB, 2 layers — start-up and round trips.
  LARGE    an OCI layout, LARGE_LAYERS layers of LARGE_LAYER_MIB MiB of random
           bytes each (gzip-compressed by ocibuild, as it writes layers by
           default: incompressible, and skopeo pushes compressed layers as they
           are), by chained `ocibuild assemble --base static-bare | oci:LARGE:…
           --add FILE` — throughput.

The registry: Debian's docker-registry (/usr/bin/docker-registry serve
CONFIG, JSON config, plain HTTP on 127.0.0.1, filesystem storage in the temp
dir). --runs rounds after --warmup, the tools' order alternating per round,
each image in turn:

  ocibuild  .venv/bin/ocibuild -q assemble --sbom none --base SRC
            --output docker://127.0.0.1:PORT/bench/cc:v1 --insecure-registry
            127.0.0.1:PORT   (ocibuild has no copy command: a re-assembly with
            nothing added, so the same layers, a new small config and manifest;
            --sbom none: skopeo copies the image alone, so does this push)
  skopeo    skopeo copy --quiet --dest-tls-verify=false SRC
            docker://127.0.0.1:PORT/bench/cc:v1

with SRC oci-archive:IMG.tar:v1, then oci:LARGE:v1 (a layout: skopeo would
unpack an archive first). ocibuild's runs use Python's bytecode cache, as an
installed ocibuild does (bench writes it first: common.compile_bytecode).

Rows: COLD (each tool gets a fresh registry with empty storage, started
untimed, and an empty client cache: OCIBUILD_CACHE_DIR for ocibuild; for
skopeo, which has no flag or variable for its blob-info cache, as root a
private mount namespace with a bench dir bind-mounted over
/var/lib/containers/cache, else XDG_DATA_HOME) and WARM (the same push
again to the same registry and repository: every blob present). Blobs
uploaded are counted from the registry's access log (finished uploads,
201); the peak RSS of each tool's process (wait4) shows memory staying
flat. Afterwards the layer digests in both registries must equal the
image's. Registries are stopped and the temp dir removed.

Acceptance: every push done, same layers.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .common import (
    OCIBUILD,
    SAMPLE,
    TIMEOUT,
    Tool,
    ToolFailed,
    exit_status,
    host_env,
    loadavg,
    measure,
    median_or_none,
    out,
    remove_tree,
    run,
    tool_row,
)

REGISTRY_BIN = Path("/usr/bin/docker-registry")
REG_LABEL = "bench_1"
REG_REPO, REG_TAG = "bench/cc", "v1"
LARGE_LAYERS, LARGE_LAYER_MIB = 4, 64
SKOPEO_CACHE = Path("/var/lib/containers/cache")     # containers/image's blob-info cache as root
_REG_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) ')


class BenchRegistry:
    """Debian's docker-registry (distribution) on 127.0.0.1, plain HTTP, no
    auth, filesystem storage in `root` (empty at start); as
    tests/registry_harness.py starts it, config in JSON (YAML reads it)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.storage = root / "storage"
        self.access_log = root / "access.log"
        self.proc: subprocess.Popen | None = None

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        cfg = {"version": 0.1,
               "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": False}},
               "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                           "maintenance": {"uploadpurging": {"enabled": False}}},
               "http": {"addr": self.hostport, "secret": secrets.token_hex(16)}}
        config = self.root / "config.yml"
        config.write_text(json.dumps(cfg, indent=2))
        with open(self.access_log, "ab") as o, open(self.root / "registry.log", "ab") as e:
            self.proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdout=o, stderr=e,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.root / "registry.log").read_text(errors="replace").strip().splitlines()[-5:]
                self.proc = None
                raise ToolFailed("docker-registry exited at start:\n    " + "\n    ".join(tail))
            if self.get("/v2/") is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise ToolFailed(f"docker-registry did not answer /v2/ within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def get(self, path: str, accept: str = "") -> bytes | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path, headers={"Accept": accept} if accept else {})
            resp = conn.getresponse()
            data = resp.read()
            return data if resp.status == 200 else None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def mark(self) -> int:
        """A position in the access log. A line is written when its request
        completes; a marker request waited for makes the log complete."""
        token = secrets.token_hex(8)
        self.get(f"/v2/?sync={token}")
        deadline = time.monotonic() + 10
        while token.encode() not in self.access_log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.access_log.stat().st_size

    def uploaded(self, since: int) -> tuple[int, int]:
        """(blobs uploaded, their bytes) in requests after log position `since`:
        a finished upload is a PUT (or monolithic POST) on .../blobs/uploads/
        with ?digest=, answered 201."""
        end = self.mark()
        with open(self.access_log, "rb") as f:
            f.seek(since)
            text = f.read(end - since).decode(errors="replace")
        n = size = 0
        for m in _REG_ACCESS.finditer(text):
            parts = urllib.parse.urlsplit(m["uri"])
            digest = urllib.parse.parse_qs(parts.query).get("digest", [""])[0]
            if m["method"] in ("PUT", "POST") and "/blobs/uploads/" in parts.path and digest \
                    and m["status"] == "201":
                hexpart = digest.split(":", 1)[1]
                data = self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
                n += 1
                size += data.stat().st_size
        return n, size

    def layers(self) -> list[str] | None:
        raw = self.get(f"/v2/{REG_REPO}/manifests/{REG_TAG}",
                       "application/vnd.oci.image.manifest.v1+json, "
                       "application/vnd.docker.distribution.manifest.v2+json")
        return [layer["digest"] for layer in json.loads(raw)["layers"]] if raw else None


def skopeo_cache_isolation() -> tuple[list[str], str]:
    """How to give skopeo a blob-info cache of the bench's own: (a command
    prefix taking the cache dir as {cache}, a note). skopeo 1.9 has no flag or
    variable for the cache's place (containers/image: BlobInfoCacheDir, not
    exposed); as root it is /var/lib/containers/cache, so skopeo runs in a
    private mount namespace with a bench dir bind-mounted there; not as root
    it is $XDG_DATA_HOME/containers/cache, set per run."""
    if os.geteuid() != 0:
        return [], "skopeo: XDG_DATA_HOME points at a bench dir (its blob-info cache)"
    if not SKOPEO_CACHE.is_dir() or not shutil.which("unshare"):
        return [], (f"NOTE: skopeo used the machine's own blob-info cache ({SKOPEO_CACHE} absent or "
                    f"no unshare): no flag or variable moves it")
    return (["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" "$1" && shift && exec "$@"', "{cache}", str(SKOPEO_CACHE)],
            f"skopeo: no flag or variable moves its blob-info cache ({SKOPEO_CACHE}/"
            f"blob-info-cache-v1.boltdb as root), so each skopeo run is `unshare --mount` with a bench "
            f"dir bind-mounted over {SKOPEO_CACHE} (a few ms of its time; the machine's cache untouched)")


def _sample_image(args, work: Path) -> tuple[str, list[str]]:
    """Make IMG.tar in `work`; its reference and layer digests."""
    pkg, img = work / "sample.tar.gz", work / "img.tar"
    run([str(OCIBUILD), "-q", "fabric", "package", "--label", REG_LABEL, "--output", str(pkg),
         str(SAMPLE)])
    run([str(OCIBUILD), "-q", "build", "--builder", "host", str(pkg),
         "--output", f"oci-archive:{img}:{REG_TAG}"], env=host_env(args, work, "gocache"))
    with tarfile.open(img) as tf:
        index = json.load(tf.extractfile("index.json"))
        mdigest = index["manifests"][0]["digest"]
        manifest = json.load(tf.extractfile("blobs/" + mdigest.replace(":", "/")))
    img_layers = [layer["digest"] for layer in manifest["layers"]]
    img_blob_bytes = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    print(f"IMG.tar: {img.stat().st_size} bytes; {len(img_layers)} layer(s), config + layers "
          f"{img_blob_bytes} bytes; manifest {mdigest}", flush=True)
    return f"oci-archive:{img}:{REG_TAG}", img_layers


def ocibuild_env(**extra: str) -> dict[str, str]:
    """The environment of ocibuild's runs: the bench's own, and `extra`."""
    return {**os.environ, **extra}


def _large_image(work: Path) -> tuple[str, list[str]]:
    """Make LARGE in `work`; its reference and layer digests."""
    layout, base = work / "large", "static-bare"
    for i in range(LARGE_LAYERS):
        f = work / f"random-{i}.bin"
        with open(f, "wb") as o:
            for _ in range(LARGE_LAYER_MIB):
                o.write(os.urandom(1 << 20))
        tag = REG_TAG if i == LARGE_LAYERS - 1 else f"part{i}"
        run([str(OCIBUILD), "-q", "assemble", "--sbom", "none", "--base", base, "--add", f"{f}:/data/random-{i}.bin",
             "--output", f"oci:{layout}:{tag}"], env=ocibuild_env())
        f.unlink()
        base = f"oci:{layout}:{tag}"
    index = json.loads((layout / "index.json").read_bytes())
    [desc] = [d for d in index["manifests"]
              if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == REG_TAG]
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes())
    layers = [layer["digest"] for layer in manifest["layers"]]
    size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    print(f"LARGE: an OCI layout; {len(layers)} layer(s) ({LARGE_LAYERS} of {LARGE_LAYER_MIB} MiB random bytes, "
          f"gzip, on static-bare), config + layers {size} bytes; manifest {desc['digest']}", flush=True)
    return f"oci:{layout}:{REG_TAG}", layers


def run_peak(cmd: list[str], env: dict[str, str]) -> tuple[int, float]:
    """run(), without output: the command's peak RSS in bytes and its CPU
    seconds, user + system (wait4's: its own and its children's)."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        timer = threading.Timer(TIMEOUT, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-8:]
            raise ToolFailed(f"{' '.join(cmd)} exited {p.returncode}:\n    " + "\n    ".join(tail))
    return usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


Push = Callable[[BenchRegistry, Path], tuple[int, float]]     # (registry, client cache) -> (peak RSS, CPU s)


def _pushes(src: str, work: Path, wrap: list[str]) -> tuple[Push, Push]:
    """(ocibuild's push of `src`, skopeo's)."""
    def ocibuild_push(reg: BenchRegistry, cache: Path) -> tuple[int, float]:
        # --sbom none: skopeo copies the image alone; so does this push (like for like).
        return run_peak([str(OCIBUILD), "-q", "assemble", "--sbom", "none", "--base", src,
                         "--output", f"docker://{reg.hostport}/{REG_REPO}:{REG_TAG}",
                         "--insecure-registry", reg.hostport], env=ocibuild_env(OCIBUILD_CACHE_DIR=str(cache)))

    def skopeo_push(reg: BenchRegistry, cache: Path) -> tuple[int, float]:
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", src,
               f"docker://{reg.hostport}/{REG_REPO}:{REG_TAG}"]
        env = {**os.environ, "TMPDIR": str(work / "tmp")}
        if os.geteuid() != 0:
            env["XDG_DATA_HOME"] = str(cache)
        return run_peak([w.replace("{cache}", str(cache)) for w in wrap] + cmd, env=env)

    (work / "tmp").mkdir(exist_ok=True)
    return ocibuild_push, skopeo_push


@dataclass
class Case:
    """One image pushed by both tools, cold then warm."""
    name: str                                   # IMG.tar, LARGE
    tools: list[Tool]                           # ocibuild cold, skopeo cold, ocibuild warm, skopeo warm
    src: str = ""
    layers: list[str] = field(default_factory=list)
    pairs: list[tuple[Tool, Tool, Push]] = field(default_factory=list)
    blobs: dict[str, tuple[int, int]] = field(default_factory=dict)    # key -> (blobs, bytes), last run
    peak: dict[str, int] = field(default_factory=dict)                 # key -> peak RSS, measured runs
    cpu: dict[str, list[float]] = field(default_factory=dict)          # key -> CPU s of each measured run


def _round(work: Path, rnd: int, measured: bool, case: Case,
           registries: list[BenchRegistry]) -> dict[str, BenchRegistry]:
    """One round of `case`: a fresh registry per tool, its cold push, then its
    warm push; the running registries, by the cold tool's key."""
    order = case.pairs if rnd % 2 == 0 else case.pairs[::-1]
    regs: dict[str, tuple[BenchRegistry, Path]] = {}
    for cold, _, _ in order:                 # fresh, empty registry + fresh caches (not timed)
        if cold.missing or cold.failed:
            continue
        reg = BenchRegistry(work / f"reg-{cold.key}-{rnd}")
        registries.append(reg)
        cache = reg.root / "client-cache"
        cache.mkdir()
        try:
            reg.start()
        except ToolFailed as e:
            cold.failed = str(e)
            print(f"bench: {cold.label}: {e}", file=sys.stderr)
            continue
        regs[cold.key] = (reg, cache)
    for phase in (0, 1):                     # cold pushes of both tools, then warm pushes of both
        for pair in order:
            t, push = (pair[0] if phase == 0 else pair[1]), pair[2]
            if pair[0].key not in regs or t.failed:
                continue
            reg, cache = regs[pair[0].key]
            mark = reg.mark()
            used: list[tuple[int, float]] = []
            t.runner = lambda _l, reg=reg, cache=cache, push=push, used=used: used.append(push(reg, cache)) or 0
            measure(t, "", measured, lambda: None)
            if measured and not t.failed:
                case.blobs[t.key] = reg.uploaded(mark)
                case.peak[t.key] = max([case.peak.get(t.key, 0), *(rss for rss, _ in used)])
                case.cpu.setdefault(t.key, []).extend(cpu for _, cpu in used)
    return {key: reg for key, (reg, _) in regs.items()}


def _tools(missing: str, skopeo_missing: str, src: str, suffix: str = "") -> list[Tool]:
    return [Tool(f"oci-cold{suffix}", f"COLD ocibuild -q assemble --base {src} --output docker://…", None, missing),
            Tool(f"sk-cold{suffix}", f"COLD skopeo copy {src} docker://…", None, missing or skopeo_missing,
                 competitor=True),
            Tool(f"oci-warm{suffix}", "WARM ocibuild (all blobs present)", None, missing),
            Tool(f"sk-warm{suffix}", "WARM skopeo copy (all blobs present)", None, missing or skopeo_missing,
                 competitor=True)]


def _check_layers(case: Case, regs: dict[str, BenchRegistry], checks: list[str]) -> None:
    for cold, _, _ in case.pairs:
        if cold.key in regs:
            got = regs[cold.key].layers()
            checks.append(f"{cold.key.split('-')[0]}: layers in the registry "
                          + (f"= {case.name}'s layers (same digests)" if got == case.layers
                             else f"DIFFER from {case.name}'s: {got}"))
            if got != case.layers:
                cold.failed = cold.failed or f"layers in the registry differ from {case.name}'s"


def section(args) -> int:
    missing = ""
    if not REGISTRY_BIN.is_file():
        missing = f"{REGISTRY_BIN} not installed (Debian's docker-registry; run scripts/setup)"
    skopeo_missing = "" if shutil.which("skopeo") else "skopeo not found"
    if not shutil.which("go"):
        missing = missing or "no go on PATH for `ocibuild build --builder host`"
    wrap, wrap_note = skopeo_cache_isolation()
    skopeo_v = (out(["skopeo", "--version"]) or "skopeo ?").replace("skopeo version ", "skopeo ")
    reg_v = out([str(REGISTRY_BIN), "--version"]) if REGISTRY_BIN.is_file() else None

    print("## registry: pushing the sample image and a large one to a local registry")
    print(f"image: {SAMPLE}, `ocibuild fabric package --label {REG_LABEL}` + `ocibuild build "
          f"--builder host PKG --output oci-archive:IMG.tar:{REG_TAG}`; LARGE: {LARGE_LAYERS} random layers of "
          f"{LARGE_LAYER_MIB} MiB; registry: "
          f"{(reg_v or 'docker-registry ?').strip()} on 127.0.0.1, plain HTTP, filesystem storage; "
          f"{skopeo_v}; {args.runs} measured rounds after {args.warmup} warm-up round(s), interleaved")
    print(flush=True)

    small = Case("IMG.tar", _tools(missing, skopeo_missing, "oci-archive:IMG.tar:v1"))
    large = Case("LARGE", _tools(missing, skopeo_missing, "oci:LARGE:v1", "-large"))
    cases = [small, large]
    checks: list[str] = []
    if missing:
        return report(cases, checks, [])

    load0 = loadavg()
    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-registry-", dir=args.tmpdir))
    registries: list[BenchRegistry] = []
    try:
        small.src, small.layers = _sample_image(args, work)
        large.src, large.layers = _large_image(work)
        for case in cases:
            ocibuild_push, skopeo_push = _pushes(case.src, work, wrap)
            oci_cold, sk_cold, oci_warm, sk_warm = case.tools
            case.pairs = [(oci_cold, oci_warm, ocibuild_push), (sk_cold, sk_warm, skopeo_push)]
        total = args.warmup + args.runs
        for rnd in range(total):
            measured = rnd >= args.warmup
            for case in cases:
                regs = _round(work, rnd, measured, case, registries)
                if rnd == total - 1:
                    _check_layers(case, regs, checks)
                for reg in regs.values():
                    reg.stop()
                    remove_tree(reg.root)
            print(f"  round {rnd + 1}/{total}{'' if measured else ' (warm-up)'} done",
                  file=sys.stderr, flush=True)
    except (ToolFailed, subprocess.TimeoutExpired, OSError, KeyError, ValueError, tarfile.TarError) as e:
        print(f"bench: registry: making the images failed: {e}", file=sys.stderr)
        for case in cases:
            for t in case.tools:
                t.failed = t.failed or f"making the images failed: {e}"
    finally:
        for reg in registries:
            reg.stop()
        remove_tree(work)
    print(f"load average at start {load0}, at end {loadavg()} (other work on this machine skews timings)")
    notes = ["ocibuild has no copy command: it pushes IMG.tar (and LARGE) by re-assembling it (`--base "
             "oci-archive:IMG.tar:v1`, nothing added, `--sbom none`): the same layers, a new small config and "
             "manifest. skopeo pushes the image's own manifest as is.",
             "COLD: a fresh docker-registry with empty storage before each cold push (not timed), "
             "ocibuild with an empty OCIBUILD_CACHE_DIR (no mount sources known), skopeo with an empty "
             "blob-info cache. WARM: the same push again to the same registry and repository, "
             "with the caches the cold push left.",
             "ocibuild's runs read Python's bytecode cache, written before the first section, as an "
             "installed ocibuild has its .pyc files.",
             wrap_note]
    return report(cases, checks, notes)


def report(cases: list[Case], checks: list[str], notes: list[str]) -> int:
    """One table per image: the sample's as before (tests/test_bench.py reads
    it), the large one's with each tool's peak RSS and median CPU time."""
    for case, (first, more) in zip(cases, (("push", False), ("large image push", True)), strict=True):
        print(f"| {first} | median s | min s | ratio to ocibuild, same temperature (median/median; < 1 = faster) "
              f"| blobs uploaded (last run){'; peak RSS; median CPU s (user + sys)' if more else ''} |")
        print("|---|---:|---:|---:|---:|")
        for group in (case.tools[:2], case.tools[2:]):
            base = median_or_none(group[0])
            for t in group:
                n, size = case.blobs.get(t.key, (0, 0))
                extra = ""
                if more and t.key in case.peak:
                    extra = f"; {case.peak[t.key] / 2**20:.0f} MiB; {statistics.median(case.cpu[t.key]):.2f}"
                print(tool_row(t, base, f"{n} ({size} bytes){extra}"))
        print()
    for line in checks + notes:
        if line:
            print(line)
    tools = [t for case in cases for t in case.tools]
    missing = any(t.missing for t in tools)
    failed = any(t.failed for t in tools)
    return exit_status(missing, failed, "registry: a tool or the registry was not available",
                       "registry: a push failed")
