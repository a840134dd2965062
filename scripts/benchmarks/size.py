"""Section "size" (issue 4): the image of the sample chaincode
(tests/fixtures/chaincode), written as a lifecycle package by `ocibuild
fabric package` and built from it, against the same chaincode packed the
ways ocibuild replaces. No timing: bytes only.

  ocibuild         ocibuild build --builder host PKG (GOCACHE in the temp dir,
                   or --gocache)
                   --output docker-archive:OUT:NAME   (its default base, static)
  (a) Debian slim  the same binary (taken out of ocibuild's image) on a
                   Debian-slim-like base: ocibuild -q assemble --base
                   docker-archive:SLIM --add BIN:/usr/local/bin/chaincode, with
                   ocibuild's chaincode config (env, labels, user 500:500)
  (b) single-stage docker buildx build --builder default --load: FROM the
                   builder image, COPY the source in, RUN go build there (same
                   flags; Go's build cache removed in the same RUN), the same
                   chaincode config: compiler, sources and binary in one
                   image, as Fabric built chaincode images before 2017

SLIM is /var/cache/ocibuild/debian-slim-bookworm-ID.tar, kept between runs
(ID: a hash of the recipe below). When absent it is made, as root:
`debootstrap --variant=minbase bookworm DIR MIRROR` (MIRROR: $OCIBUILD_DEBIAN_MIRROR,
else the Debian archive apt uses, as scripts/setup picks it), then slimmed as
debuerreotype makes the official debian:*-slim images (its slimify lists,
applied with find in a chroot: docs but copyright files, man pages, info,
groff, lintian overrides, locales; the dpkg path-exclude config that keeps
them out; apt lists and caches, bootstrap logs), device nodes removed (a
container gets /dev from its runtime), and written with `ocibuild assemble
--base scratch --add DIR:/ --user 0:0 --cmd bash --output docker-archive:...`.
--slim-base REF puts (a) on another base instead (any ocibuild --base, e.g.
`scratch` for a quick smoke run: no debootstrap, SLIM neither made nor read).

Uncompressed: `docker image inspect --format {{.Size}}` (sum of the layers'
diff sizes) after `docker load` of the archive (ocibuild, a) or after the
build (b). Compressed: the sum of the gzip layer sizes in the manifest of
the archive ocibuild wrote (ocibuild, a); for (b) `docker save` (plain tar
layers) re-read layer by layer and every layer recompressed in-process with
ocibuild's gzip (ISA-L level 2, what ocibuild itself writes). docker's
.Size counts directories too (4096 bytes each here), so it exceeds the
files' content (the slim base: ~80.6 MB in docker for ~74.8 MB of files);
(b)'s layers carry build-time mtimes, so its compressed size moves by a few
bytes between runs. Ratios: the other image / ocibuild's, so > 1 = bigger.
All three images are started as a peer starts them, `docker run ... NAME
chaincode -peer.address=127.0.0.1:7052` with CORE_CHAINCODE_ID_NAME=x:1,
CORE_PEER_TLS_ENABLED=false and CORE_CHAINCODE_ONCE=true, and must print
their start line as uid 500 and exit 0. The binary's sha256 is read from
every image: all three must hold the same bytes. Everything made (temp dir,
images, containers, BuildKit cache records) is removed; the slim archive is
kept.

Acceptance: every image measured, started and holding the same binary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ocibuild.oci.compression import compression, decompressed, sniff

from .common import (
    ARCHIVE_TRANSPORTS,
    CHAINCODE_CONFIG,
    CHUNK,
    DEST,
    OCIBUILD,
    SAMPLE,
    TAG,
    ToolFailed,
    build_cache_ids,
    builder_image,
    docker_cleanup_image,
    exit_status,
    host_env,
    out,
    prune_new_cache,
    remove_tree,
    run,
)

SIZE_LABEL = "sizebench_1.0"
SLIM_SUITE = "bookworm"
SLIM_CACHE = Path("/var/cache/ocibuild")
SLIM_IMAGE = "localhost/ocibuild/debian-slim:bookworm"
# debuerreotype's .slimify-excludes and .slimify-includes: what the official
# debian:*-slim images leave out (find -path patterns: `*` matches `/` too).
SLIM_EXCLUDES = ("/usr/share/doc/*", "/usr/share/groff/*", "/usr/share/info/*", "/usr/share/linda/*",
                 "/usr/share/lintian/overrides/*", "/usr/share/locale/*", "/usr/share/man/*")
SLIM_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/doc/kde/HTML/C/*", "/usr/share/gnome/help/*/C/*",
                 "/usr/share/locale/all_languages", "/usr/share/locale/currency/*",
                 "/usr/share/locale/l10n/*", "/usr/share/locale/languages",
                 "/usr/share/locale/locale.alias", "/usr/share/omf/*/*-C.emf")
# What debuerreotype's tar step leaves out and its fixup step deletes.
SLIM_DROP = ("/var/cache/apt/*", "/var/lib/apt/lists/*", "/proc/*", "/sys/*",
             "/etc/apt/apt.conf.d/01autoremove-kernels", "/var/log/apt/history.log",
             "/var/log/apt/term.log", "/var/log/dpkg.log", "/var/log/bootstrap.log",
             "/var/log/alternatives.log", "/var/cache/ldconfig/aux-cache", "/run/mount/utab")
SLIM_ID = hashlib.sha256(repr(("debootstrap --variant=minbase", SLIM_SUITE, SLIM_EXCLUDES, SLIM_INCLUDES,
                               SLIM_DROP, "no device nodes", "user 0:0, cmd bash")).encode()).hexdigest()[:12]
SLIM_ARCHIVE = SLIM_CACHE / f"debian-slim-{SLIM_SUITE}-{SLIM_ID}.tar"
SLIM_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The peer's start command and environment (the sample's -once mode).
PEER_START = ["chaincode", "-peer.address=127.0.0.1:7052"]
PEER_ENV = ["CORE_CHAINCODE_ID_NAME=x:1", "CORE_PEER_TLS_ENABLED=false", "CORE_CHAINCODE_ONCE=true"]
START_LINE = re.compile(r"^chaincode x:1 starting, peer 127\.0\.0\.1:7052, tls false, uid (\d+)$", re.M)


@dataclass
class SizeRow:
    key: str
    label: str
    missing: str = ""               # why it cannot be made
    failed: str = ""
    layers: int | None = None
    size: int | None = None         # docker image inspect .Size
    gzip: int | None = None         # sum of the gzip layer sizes
    recompressed: bool = False      # gzip sizes from ocibuild's compressor, not the archive
    binary: str | None = None       # sha256 of the chaincode in the image
    started: str = ""               # the start line, when `docker run` worked


# --- the Debian-slim-like base ----------------------------------------------------------

def debian_mirror() -> str:
    """The Debian archive apt uses (as scripts/setup picks it), or $OCIBUILD_DEBIAN_MIRROR."""
    m = os.environ.get("OCIBUILD_DEBIAN_MIRROR", "")
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if not m and deb822.is_file():
        m = next((line.split()[1] for line in deb822.read_text().splitlines()
                  if line.startswith("URIs:") and len(line.split()) > 1 and "security" not in line.split()[1]),
                 "")
    classic = Path("/etc/apt/sources.list")
    if not m and classic.is_file():
        m = next((w for line in classic.read_text().splitlines()
                  if line.startswith("deb ") and "security" not in line
                  for w in line.split()[1:] if "://" in w), "")
    return m or "http://deb.debian.org/debian"


def slimify(root: Path) -> None:
    """What debuerreotype-slimify does to a rootfs, with find in a chroot as it
    does: for each excluded directory, delete every file but the included
    ones, then empty directories and dangling symlinks until none are left;
    write the dpkg config that keeps them out of later installs."""
    chroot = ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    keep = ["("]
    for pat in SLIM_INCLUDES:
        keep += (["-o"] if len(keep) > 1 else []) + ["-path", pat]
    keep.append(")")
    for pat in SLIM_EXCLUDES:
        top = os.path.dirname(pat)
        if not (root / top.lstrip("/")).is_dir():
            continue
        run([*chroot, "find", top, "-depth", "-mindepth", "1", "-not", *keep,
             "-not", "(", "-type", "d", "-o", "-type", "l", ")", "-delete"])
        for _ in range(100):
            if not run([*chroot, "find", top, "-depth", "-mindepth", "1", "(", "-empty", "-o", "-xtype", "l",
                        ")", "-delete", "-printf", "."]).stdout:
                break
    cfg = root / "etc/dpkg/dpkg.cfg.d/docker"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("# This is the \"slim\" variant of the Debian base image (made by ocibuild's scripts/bench\n"
                   "# as debuerreotype makes it): files normally unneeded in containers are excluded.\n\n"
                   + "".join(f"path-exclude {p}\n" for p in SLIM_EXCLUDES) + "\n"
                   + "".join(f"path-include {p}\n" for p in SLIM_INCLUDES))
    cfg.chmod(0o644)


def make_slim_base(work: Path) -> str:
    """Write SLIM_ARCHIVE (a Debian-slim-like base made from Debian packages);
    returns how it was made."""
    root = work / "slim-rootfs"
    mirror = debian_mirror()
    t0 = time.perf_counter()
    try:
        run(["debootstrap", "--variant=minbase", SLIM_SUITE, str(root), mirror])
        slimify(root)
        for pat in SLIM_DROP:
            for p in root.glob(pat.lstrip("/")):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        # Containers get /dev from their runtime, and ocibuild refuses device files.
        for dirpath, _dirnames, filenames in os.walk(root):
            for n in filenames:
                f = os.path.join(dirpath, n)
                if stat.S_ISCHR(os.lstat(f).st_mode) or stat.S_ISBLK(os.lstat(f).st_mode):
                    os.unlink(f)
        arch = out(["dpkg", "--print-architecture"]) or "amd64"
        SLIM_CACHE.mkdir(parents=True, exist_ok=True)
        new = SLIM_ARCHIVE.with_name(f"{SLIM_ARCHIVE.name}.new-{os.getpid()}")
        try:
            run([str(OCIBUILD), "-q", "assemble", "--base", "scratch", "--add", f"{root}:/",
                 "--platform", f"linux/{arch}", "--user", "0:0", "--env", SLIM_PATH, "--cmd", '["bash"]',
                 "--output", f"docker-archive:{new}:{SLIM_IMAGE}"])
            os.replace(new, SLIM_ARCHIVE)         # only a complete archive is ever reused
        finally:
            new.unlink(missing_ok=True)
    finally:
        remove_tree(root)
    for old in SLIM_CACHE.glob(f"debian-slim-{SLIM_SUITE}-*.tar"):
        if old != SLIM_ARCHIVE:                  # an older recipe's
            old.unlink()
    return f"made now in {time.perf_counter() - t0:.0f} s (debootstrap from {mirror}), kept for later runs"


# --- measuring an image -----------------------------------------------------------------

class _CountingSink:
    def __init__(self):
        self.size = 0

    def write(self, b) -> int:
        self.size += len(b)
        return len(b)


class _Tee:
    """A read stream that also feeds what it reads to `w` (or nothing)."""

    def __init__(self, raw, w):
        self.raw, self.w = raw, w

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        if b and self.w is not None:
            self.w.write(b)
        return b


def image_stats(archive: Path) -> tuple[int, int, bool, bytes | None]:
    """(layer count, sum of gzip layer sizes, recompressed?, the chaincode
    binary or None) of a docker-archive holding one image: the layers its
    manifest.json lists, in order. gzip layers count as stored; others are
    recompressed with ocibuild's gzip as they are read (one pass per layer,
    which also finds the binary)."""
    gz = compression("gzip")
    want = DEST.lstrip("/")
    total, recompressed, binary = 0, False, None
    with tarfile.open(archive) as outer:
        entries = json.load(outer.extractfile("manifest.json"))
        if not isinstance(entries, list) or len(entries) != 1:
            raise ValueError(f"manifest.json of {archive} does not list exactly one image")
        paths = entries[0]["Layers"]
        for path in paths:
            member = outer.getmember(path)
            with outer.extractfile(member) as blob:
                kind = sniff(blob.read(4))
                blob.seek(0)
                sink, w = _CountingSink(), None
                if kind == "gzip":
                    total += member.size
                else:
                    w, recompressed = gz.writer(sink), True
                tee = _Tee(decompressed(blob, kind), w)
                with tarfile.open(fileobj=tee, mode="r|") as tf:
                    for m in tf:
                        if m.isfile() and m.name.lstrip("./") == want:
                            binary = tf.extractfile(m).read()
                while tee.read(CHUNK):          # the tar's end padding, for the compressor
                    pass
            if w is not None:
                w.close()
                total += sink.size
    return len(paths), total, recompressed, binary


def docker_size(name: str) -> int:
    text = run(["docker", "image", "inspect", "--format", "{{.Size}}", name]).stdout.decode().strip()
    return int(text)


def peer_start(name: str, ctrs: list[str]) -> str:
    """Start `name` as the peer starts a chaincode image; its start line."""
    ctr = f"{TAG}-size-run-{len(ctrs)}"
    ctrs.append(ctr)
    env = [a for e in PEER_ENV for a in ("-e", e)]
    p = run(["docker", "run", "--rm", "--name", ctr, "--network", "none", *env, name, *PEER_START],
            timeout=120, check=False)
    text = (p.stdout + p.stderr).decode(errors="replace").strip()
    m = START_LINE.search(text)
    if p.returncode != 0 or not m or m.group(1) != "500":
        tail = " | ".join(text.splitlines()[-3:]) or "no output"
        raise ToolFailed(f"docker run {name} {' '.join(PEER_START)} exited {p.returncode}"
                         f"{'' if m is None else f' as uid {m.group(1)} (want 500)'}: {tail}")
    return m.group(0)


def measure_archive(row: SizeRow, archive: Path, name: str, ctrs: list[str]) -> bytes | None:
    """Load an ocibuild-written docker-archive into docker and measure it."""
    row.layers, row.gzip, row.recompressed, binary = image_stats(archive)
    run(["docker", "load", "-i", str(archive)])
    row.size = docker_size(name)
    row.binary = "sha256:" + hashlib.sha256(binary).hexdigest() if binary else None
    row.started = peer_start(name, ctrs)
    return binary


def single_stage_dockerfile(image: str) -> str:
    """The pre-2017 way: one image, FROM the Go toolchain, the source copied
    in and compiled there (ocibuild's Go flags; the build cache removed in
    the same step, so only compiler, sources and binary stay)."""
    vendored = (SAMPLE / "vendor").is_dir()
    return (f"FROM {image}\n"
            f"ENV CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod={'vendor' if vendored else 'readonly'}\n"
            "WORKDIR /chaincode/input/src\n"
            "COPY . .\n"
            "RUN GOCACHE=/tmp/go-build go build -trimpath -buildvcs=false -ldflags=-buildid= "
            f"-o {DEST} . && rm -rf /tmp/go-build\n"
            f"{CHAINCODE_CONFIG}")


# --- the section ------------------------------------------------------------------------

def _availability(by: dict[str, SizeRow], image: str, slim_base: str | None, docker_missing: str) -> str:
    """Mark the rows that cannot be made (their `missing`); returns how the
    slim base is had ("" if it is still to be made)."""
    docker_up = shutil.which("docker") and out(["docker", "info", "--format", "{{.ServerVersion}}"]) is not None
    if not docker_up:
        for r in by.values():
            r.missing = "dockerd not reachable (`docker info` fails; run scripts/setup)"
    if not shutil.which("go"):
        by["ocibuild"].missing = by["slim"].missing = "no go on PATH for --builder host"
    if not by["single"].missing:
        if docker_missing:
            by["single"].missing = docker_missing
        elif image.partition(":")[0] in ARCHIVE_TRANSPORTS:
            by["single"].missing = "the bench needs the builder image by name, not an archive"
        elif out(["docker", "image", "inspect", "--format", "{{.Id}}", image]) is None:
            by["single"].missing = f"builder image {image} not in docker (run scripts/setup)"
    slim_how = "given with --slim-base" if slim_base else "cached" if SLIM_ARCHIVE.is_file() else ""
    if not slim_how and not by["slim"].missing:
        if os.geteuid() != 0:
            by["slim"].missing = f"{SLIM_ARCHIVE} absent, and making it needs root (debootstrap, chroot)"
        elif not shutil.which("debootstrap"):
            by["slim"].missing = f"{SLIM_ARCHIVE} absent, and debootstrap is not installed"
    return slim_how


class _Images:
    """Makes and measures the three images, in `work`; remembers what it made
    in docker (images, containers) for the clean-up."""

    def __init__(self, work: Path):
        self.work = work
        self.names: list[str] = []
        self.ctrs: list[str] = []
        self.binary: bytes | None = None        # the chaincode in ocibuild's image

    def step(self, row: SizeRow, fn: Callable[[], str | None]) -> str | None:
        """fn() unless the row is missing or failed; a failure is the row's."""
        if row.missing or row.failed:
            return None
        try:
            return fn()
        except (ToolFailed, subprocess.TimeoutExpired, OSError, EOFError, KeyError, ValueError,
                tarfile.TarError) as e:
            row.failed = str(e) or type(e).__name__
            print(f"bench: {row.label} failed: {row.failed}", file=sys.stderr)
            return None
        finally:
            print(f"  {row.key} done", file=sys.stderr, flush=True)

    def ocibuild(self, row: SizeRow, env: dict[str, str]) -> None:
        pkg, archive, name = self.work / "sample.tar.gz", self.work / "ocibuild.tar", f"{TAG}-size-ocibuild:latest"
        run([str(OCIBUILD), "-q", "fabric", "package", str(SAMPLE), "--label", SIZE_LABEL,
             "--output", str(pkg)])
        self.names.append(name)
        run([str(OCIBUILD), "-q", "build", "--builder", "host", str(pkg),
             "--output", f"docker-archive:{archive}:{name}"], env=env)
        self.binary = measure_archive(row, archive, name, self.ctrs)
        if self.binary is None:
            raise ToolFailed(f"no {DEST} in ocibuild's image")

    def slim(self, row: SizeRow, slim_base: str | None) -> str | None:
        """Returns how the slim base was made, if it was made now."""
        if self.binary is None:
            raise ToolFailed("no binary: ocibuild's own build failed")
        how = make_slim_base(self.work) if not slim_base and not SLIM_ARCHIVE.is_file() else None
        binary = self.work / "bin" / "chaincode"
        binary.parent.mkdir()
        binary.write_bytes(self.binary)
        binary.chmod(0o755)
        archive, name = self.work / "slim.tar", f"{TAG}-size-slim:latest"
        self.names.append(name)
        run([str(OCIBUILD), "-q", "assemble", "--base", slim_base or f"docker-archive:{SLIM_ARCHIVE}",
             "--add", f"{binary}:{DEST}", "--user", "500:500",
             "--env", "CORE_CHAINCODE_BUILDLEVEL=2.5",
             "--label", "org.hyperledger.fabric.chaincode.type=GOLANG",
             "--label", "org.hyperledger.fabric.version=2.5",
             "--output", f"docker-archive:{archive}:{name}"])
        measure_archive(row, archive, name, self.ctrs)
        return how

    def single(self, row: SizeRow, image: str) -> None:
        ctx, dockerfile = self.work / "single" / "src", self.work / "single" / "Dockerfile"
        shutil.copytree(SAMPLE, ctx, symlinks=True)
        dockerfile.write_text(single_stage_dockerfile(image))
        name, saved = f"{TAG}-size-single:latest", self.work / "single.tar"
        self.names.append(name)
        run(["docker", "buildx", "build", "--builder", "default", "--progress", "quiet",
             "-f", str(dockerfile), "-t", name, "--load", str(ctx)])
        row.size = docker_size(name)
        run(["docker", "save", name, "-o", str(saved)])
        row.layers, row.gzip, row.recompressed, binary = image_stats(saved)
        saved.unlink()
        row.binary = "sha256:" + hashlib.sha256(binary).hexdigest() if binary else None
        row.started = peer_start(name, self.ctrs)

    def remove(self) -> None:
        for c in self.ctrs:
            out(["docker", "rm", "-f", c])
        for name in self.names:
            docker_cleanup_image(name)


def section(args, docker_missing: str) -> int:
    image = builder_image()
    slim_base = args.slim_base          # None: the Debian-slim-like base
    rows = [SizeRow("ocibuild", "ocibuild build --builder host (its base: static)"),
            SizeRow("slim", f"(a) the same binary on --slim-base {slim_base} (ocibuild assemble)" if slim_base
                    else "(a) the same binary on a Debian-slim-like base (ocibuild assemble)"),
            SizeRow("single", "(b) single-stage docker build FROM the Go builder image (pre-2017 Fabric)")]
    by = {r.key: r for r in rows}
    slim_how = _availability(by, image, slim_base, docker_missing)

    print("## size: the sample chaincode's image, by ocibuild and the ways it replaces")
    print(f"source: {SAMPLE}, packaged with `ocibuild fabric package --label {SIZE_LABEL}`; "
          f"builder image {image}; host {(out(['go', 'version']) or 'go ?').replace('go version ', '')}")
    print(flush=True)

    work = Path(tempfile.mkdtemp(prefix="ocibuild-bench-size-",
                                 dir=args.tmpdir or os.environ.get("TMPDIR") or "/var/tmp"))
    cache_before = build_cache_ids() if not by["single"].missing else None
    made = _Images(work)
    try:
        made.step(by["ocibuild"], lambda: made.ocibuild(by["ocibuild"], host_env(args, work, "gocache")))
        slim_how = made.step(by["slim"], lambda: made.slim(by["slim"], slim_base)) or slim_how
        made.step(by["single"], lambda: made.single(by["single"], image))
    finally:
        made.remove()
        if cache_before is not None:
            prune_new_cache(cache_before)
        remove_tree(work)

    if by["slim"].missing:
        notes = []
    elif slim_base:
        notes = [f"(a) base: {slim_base} (--slim-base), not the Debian-slim-like base"]
    else:
        notes = [f"(a) base: {SLIM_ARCHIVE} ({SLIM_IMAGE}), {slim_how or 'not made'}"]
    return report(rows, notes)


def report(rows: list[SizeRow], notes: list[str]) -> int:
    base = rows[0]

    def ratio(a: int | None, b: int | None) -> str:
        return f"{a / b:.2f}" if a and b else "—"

    def mb(n: int) -> str:
        return f"{n / 1e6:.2f} MB"

    print("| image | layers | uncompressed bytes (docker .Size) | uncompressed MB | ratio to ocibuild "
          "| compressed bytes (gzip layers) | compressed MB | ratio to ocibuild | docker run as the peer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r.missing:
            print(f"| {r.label} | SKIPPED | — | — | — | — | — | — | {r.missing} |")
        elif r.failed and r.size is None:
            print(f"| {r.label} | FAILED | — | — | — | — | — | — | {r.failed.splitlines()[0]} |")
        else:
            gz = "—" if r.gzip is None else f"{r.gzip}{' (recompressed)' if r.recompressed else ''}"
            started = "ok, uid 500" if r.started else f"FAILED: {r.failed.splitlines()[0]}"
            print(f"| {r.label} | {r.layers if r.layers is not None else '—'} | {r.size} | {mb(r.size)} | "
                  f"{ratio(r.size, base.size)} | {gz} | {'—' if r.gzip is None else mb(r.gzip)} | "
                  f"{ratio(r.gzip, base.gzip)} | {started} |")
    print()
    print("MB = 10^6 bytes; ratios: the image / ocibuild's (> 1 = bigger). Compressed: as stored by "
          "ocibuild (ocibuild, a), recompressed with ocibuild's gzip where marked (b: docker save's "
          "layers are plain tar).")
    for line in notes:
        print(line)
    measured = [r for r in rows if r.binary]
    if measured:
        same = len({r.binary for r in measured}) == 1
        print(f"chaincode binary {DEST}: " + (f"{measured[0].binary} in {len(measured)} image(s), same bytes"
              if same else "DIFFERENT — " + ", ".join(f"{r.key} {r.binary}" for r in measured)))
    for r in rows:
        if r.started:
            print(f"docker run {r.key}: {r.started}")

    missing = any(r.missing for r in rows)
    failed = any(r.failed for r in rows) or any(not r.missing and not r.binary for r in rows) or \
        len({r.binary for r in measured}) > 1
    return exit_status(missing, failed, "size: not every image could be made",
                       "size: an image failed, did not start, or holds another binary")
