"""Kill / interrupt trials at random moments (issue 9, "Done when"): for every
output kind (docker:// against Debian's docker-registry on loopback), ocibuild is
sent SIGINT, SIGTERM or SIGKILL after a seeded random delay. Afterwards the
destination holds exactly the old state or the complete new image, nothing
ocibuild started is still running, and after SIGINT/SIGTERM nothing is left
in TMPDIR or beside/inside the destination; after SIGKILL leftovers may
remain, but the next normal run removes them and succeeds."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    OCIBUILD,
    Engine,
    blob_path,
    printed_digest,
    processes_mentioning,
    read_layout,
    run_ocibuild,
    sha256_file,
    unique_name,
    wait_for,
)
from registry_harness import Registry

pytestmark = pytest.mark.slow

# Fixed, so a failure can be replayed (every failure message names the seed,
# kind, trial, signal and delay); OCIBUILD_KILL_SEED=N explores other seeds.
SEED = int(os.environ.get("OCIBUILD_KILL_SEED", "20250909"))
TRIALS = 6               # per output kind
BIG_SIZE = 30_000_000
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


@dataclass(frozen=True)
class Kind:
    name: str
    engine: str | None = None


KINDS = [
    pytest.param(Kind("oci-other-tag"), id="oci-other-tag"),
    pytest.param(Kind("oci-same-tag"), id="oci-same-tag"),
    pytest.param(Kind("oci-archive"), id="oci-archive"),
    pytest.param(Kind("docker-archive"), id="docker-archive"),
    pytest.param(Kind("docker-daemon", "docker"), id="docker-daemon", marks=pytest.mark.engine),
    pytest.param(Kind("containers-storage", "podman"), id="containers-storage", marks=pytest.mark.engine),
    pytest.param(Kind("docker"), id="docker-registry", marks=pytest.mark.registry),
]



@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """~30 MB of (seeded, so reproducible) random bytes."""
    p = tmp_path_factory.mktemp("kill-big") / "big"
    p.write_bytes(random.Random(SEED).randbytes(BIG_SIZE))
    return p


def _inspect(ref: str, tmp: Path) -> dict:
    """`ocibuild inspect --json REF`, with its own TMPDIR (never a trial's: a
    run may sweep what a killed one left there)."""
    tmp.mkdir(exist_ok=True)
    r = run_ocibuild("inspect", "--json", ref, env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, f"ocibuild inspect {ref} failed: {r.stderr}"
    return json.loads(r.stdout)


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every live descendant of `root`: pid -> (start time, command line)."""
    parent, info = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(pid)] = int(fields[1])
        info[int(pid)] = (fields[19], cmd[:200])
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in out:
                out[child] = info[child]
                todo.append(child)
    return out


def _still_alive(procs: dict[int, tuple[str, str]]) -> list[str]:
    alive = []
    for pid, (start, cmd) in procs.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[19] == start and fields[0] != "Z":
            alive.append(f"{pid}: {cmd}")
    return alive


def _staging_entries(where: Path) -> list[str]:
    """Names that look like ocibuild staging (`.partial`, `.ocibuild-*`)
    anywhere under `where` (a directory)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(where):
        for name in dirnames + filenames:
            if ".partial" in name or name.startswith(".ocibuild-"):
                found.append(str(Path(dirpath) / name))
    return found


class Destination:
    """One output kind's destination: an old state to start from and the
    means to tell 'exactly old' from 'complete new'."""

    def __init__(self, kind: Kind, root: Path, big: Path, old_file: Path, engine: Engine | None,
                 engine_cleanup, registry: Registry | None = None):
        self.kind, self.root, self.big, self.old_file = kind, root, big, old_file
        self.engine, self.cleanup = engine, engine_cleanup
        self.out = root / "out"         # holds only the destination (files, layouts)
        self.out.mkdir()
        self.scratch = root / "scratch"
        self.scratch.mkdir()
        k = kind.name
        if k == "oci-other-tag":
            self.path = self.out / "layout"
            self.old_ref, self.ref = f"oci:{self.path}:old", f"oci:{self.path}:new"
        elif k == "oci-same-tag":
            self.path = self.out / "layout"
            self.old_ref = self.ref = f"oci:{self.path}:t"
        elif k == "oci-archive":
            self.path = self.out / "image.tar"
            self.old_ref = self.ref = f"oci-archive:{self.path}"
        elif k == "docker-archive":
            self.path = self.out / "image.tar"
            self.old_ref = self.ref = f"docker-archive:{self.path}:acme/kill:1"
        elif k == "docker":
            self.registry = registry
            self.repo = f"kill/{os.getpid()}-{time.monotonic_ns()}"
            self.old_ref = self.ref = registry.ref(f"{self.repo}:t")
            self.measure_ref = registry.ref(f"{self.repo}:measure")
        else:
            self.name = unique_name(f"kill-{k}") + ":trial"
            self.measure_name = unique_name(f"kill-{k}-measure") + ":t"
            scheme = "docker-daemon" if k == "docker-daemon" else "containers-storage"
            self.old_ref = self.ref = f"{scheme}:{self.name}"
            self.measure_ref = f"{scheme}:{self.measure_name}"
            engine_cleanup.image(engine, self.name)
            engine_cleanup.image(engine, self.measure_name)

    @property
    def mention(self) -> str:
        """What a process working on this destination has in its command line."""
        if self.kind.name == "docker":
            return self.repo
        return self.name if self.kind.engine else str(self.path)

    def argv(self, ref: str, add: Path) -> list[str]:
        argv = [str(OCIBUILD), "-q", "assemble", "--add", f"{add}:/opt/big", "--output", ref]
        if self.kind.name == "docker":
            argv += ["--insecure-registry", self.registry.hostport]
        return argv

    # -- set-up ----------------------------------------------------------------
    def measure(self) -> float:
        """One uninterrupted run of the new image to a scratch destination of
        this kind: its duration, and the reference (digest, bytes, ids)."""
        k = self.kind.name
        if self.kind.engine or k == "docker":
            ref = self.measure_ref
        elif k.startswith("oci-") and k != "oci-archive":
            ref = f"oci:{self.scratch / 'layout'}:{self.ref.rsplit(':', 1)[1]}"
        else:
            ref = self.ref.replace(str(self.path), str(self.scratch / "image.tar"))
        tmp = self.root / "tmp-measure"
        tmp.mkdir()
        start = time.monotonic()
        r = run_ocibuild(*self.argv(ref, self.big)[1:], env={"TMPDIR": str(tmp)})
        took = time.monotonic() - start
        self.new_digest = printed_digest(r)
        if k == "docker":
            assert self._tagged("measure") == self.new_digest
            shutil.rmtree(tmp)
            return took
        info = _inspect(ref, self.root / "tmp-inspect")
        self.new_config = info["manifest"]["config"]["digest"]
        if self.kind.engine:
            self.new_id = self.engine.image_id(self.measure_name)
            assert self.new_id == self.new_config
        elif k in ("oci-archive", "docker-archive"):
            assert info["digest"] == self.new_digest
            self.new_bytes = sha256_file(self.scratch / "image.tar")
        else:
            assert info["digest"] == self.new_digest
        shutil.rmtree(tmp)
        return took

    def make_old(self) -> None:
        tmp = self.root / "tmp-old"
        tmp.mkdir()
        r = run_ocibuild(*self.argv(self.old_ref, self.old_file)[1:], env={"TMPDIR": str(tmp)})
        self.old_digest = printed_digest(r)
        shutil.rmtree(tmp)
        if self.kind.name == "docker":
            assert self._tagged("t") == self.old_digest != self.new_digest
        elif self.kind.engine:
            self.old_id = self.engine.image_id(self.name)
            assert self.old_id != self.new_id
        elif self.kind.name.startswith("oci-") and self.kind.name != "oci-archive":
            self.old_tags = self.tags()
            self.saved = self.root / "saved-layout"
            shutil.copytree(self.path, self.saved, symlinks=True)
        else:
            self.old_bytes = sha256_file(self.path)
            self.saved = self.root / "saved.tar"
            shutil.copy2(self.path, self.saved)

    def restore_old(self) -> None:
        """Put the old state back before the next trial."""
        if self.kind.name == "docker":
            if self._tagged("t") != self.old_digest:
                tmp = self.root / "tmp-old"
                tmp.mkdir(exist_ok=True)
                printed_digest(run_ocibuild(*self.argv(self.old_ref, self.old_file)[1:],
                                            env={"TMPDIR": str(tmp)}))
                shutil.rmtree(tmp)
            assert self._tagged("t") == self.old_digest
        elif self.kind.engine:
            if self.engine.image_id(self.name) != self.old_id:
                self.engine("tag", self.old_id, self.name, check=True)
            assert self.engine.image_id(self.name) == self.old_id
        elif isinstance(self.saved, Path) and self.saved.is_dir():
            shutil.rmtree(self.path)
            shutil.copytree(self.saved, self.path, symlinks=True)
        else:
            shutil.copy2(self.saved, self.path)

    # -- reading the state back ------------------------------------------------
    def tags(self) -> list[tuple[str, str]]:
        index = json.loads((self.path / "index.json").read_bytes())
        return sorted(((d.get("annotations") or {}).get("org.opencontainers.image.ref.name", ""), d["digest"])
                      for d in index["manifests"] if "artifactType" not in d)    # not the SBOMs

    def _sbom_listed(self, digest: str) -> bool:
        """index.json lists a referrer of `digest` whose blobs are all there."""
        for d in json.loads((self.path / "index.json").read_bytes())["manifests"]:
            p = blob_path(self.path, d["digest"])
            if "artifactType" in d and p.is_file():
                doc = json.loads(p.read_bytes())
                if doc["subject"]["digest"] == digest and all(
                        blob_path(self.path, b["digest"]).is_file() for b in [doc["config"], *doc["layers"]]):
                    return True
        return False

    def _layout_image_ok(self, tag: str, digest: str) -> bool:
        img = read_layout(self.path, tag)
        if img.digest != digest:
            return False
        for d in [img.config_digest, *img.layer_digests]:
            p = blob_path(self.path, d)
            if not p.is_file() or sha256_file(p) != d:
                return False
        return True

    def state(self) -> str:
        """'old', 'new', or a description of what is there instead."""
        if self.kind.name == "docker":
            return self._registry_state()
        if self.kind.engine:
            return self._engine_state()
        if self.kind.name in ("oci-archive", "docker-archive"):
            return self._archive_state()
        return self._layout_state()

    def _engine_state(self) -> str:
        r = self.engine("image", "inspect", "--format", "{{.Id}}", self.name)
        if r.returncode != 0:
            return f"{self.name} is gone: {r.stderr.strip()}"
        got = r.stdout.strip()
        got = got if got.startswith("sha256:") else "sha256:" + got
        if got == self.old_id:
            return "old"
        if got == self.new_id:
            info = _inspect(self.ref, self.root / "tmp-inspect")
            if info["manifest"]["config"]["digest"] != self.new_config:
                return f"{self.ref} has the new id but reads back as {info}"
            return "new"
        return f"{self.name} is image {got}, neither old {self.old_id} nor new {self.new_id}"

    def _get(self, what: str, method: str = "GET") -> tuple[int, dict, bytes]:
        req = urllib.request.Request(f"http://{self.registry.hostport}/v2/{self.repo}/{what}", method=method,
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                        "application/vnd.oci.image.index.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), b""

    def _tagged(self, tag: str) -> str | None:
        """The digest the registry gives for `tag` (None: no such tag)."""
        status, headers, _ = self._get(f"manifests/{tag}")
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def _registry_state(self) -> str:
        got = self._tagged("t")
        if got == self.old_digest:
            return "old"
        if got != self.new_digest:
            return f"tag t is {got}, neither old {self.old_digest} nor new {self.new_digest}"
        # The new manifest is tagged: everything it names must be there.
        _, _, body = self._get(f"manifests/{got}")
        manifest = json.loads(body)
        for d in [manifest["config"], *manifest["layers"]]:
            if self._get(f"blobs/{d['digest']}", "HEAD")[0] != 200:
                return f"new manifest tagged, but blob {d['digest']} is missing"
        return "new"

    def _archive_state(self) -> str:
        if not self.path.is_file():
            return f"{self.path} is missing"
        got = sha256_file(self.path)
        if got == self.old_bytes:
            return "old"
        if got == self.new_bytes:
            info = _inspect(self.ref, self.root / "tmp-inspect")
            if info["digest"] != self.new_digest:
                return f"{self.ref} reads back as {info['digest']}, not {self.new_digest}"
            return "new"
        return f"{self.path} ({self.path.stat().st_size} bytes) is neither old nor new: torn?"

    def _layout_state(self) -> str:
        try:
            tags = self.tags()
        except (OSError, ValueError, KeyError) as e:
            return f"{self.path}/index.json unreadable: {e!r}"
        old_tag = self.old_ref.rsplit(":", 1)[1]
        new_tag = self.ref.rsplit(":", 1)[1]
        if tags == self.old_tags:
            return "old" if self._layout_image_ok(old_tag, self.old_digest) else "old index, broken image"
        expected = sorted({**dict(self.old_tags), new_tag: self.new_digest}.items())
        if tags == expected:
            if not self._layout_image_ok(new_tag, self.new_digest):
                return "new index, incomplete blobs"
            if not self._sbom_listed(self.new_digest):
                return "new index, but the new image's SBOM is not listed (or incomplete)"
            if old_tag != new_tag and not self._layout_image_ok(old_tag, self.old_digest):
                return "new index, but the old image under the other tag is broken"
            if _inspect(self.ref, self.root / "tmp-inspect")["digest"] != self.new_digest:
                return f"{self.ref} does not read back as {self.new_digest}"
            return "new"
        return f"index.json tags {tags}: neither old {self.old_tags} nor new {expected}"

    def leftovers(self, tmp: Path) -> list[str]:
        """What is in TMPDIR, and staging entries beside or inside the destination."""
        left = [str(tmp / n) for n in sorted(os.listdir(tmp))]
        if not self.kind.engine and self.kind.name != "docker":
            left += [str(self.out / n) for n in sorted(os.listdir(self.out)) if n != self.path.name]
            if self.path.is_dir():
                left += _staging_entries(self.path)
        return left


def _engine_for(kind: Kind, require_engine) -> Engine | None:
    return require_engine(kind.engine) if kind.engine else None


@pytest.mark.parametrize("kind", KINDS)
def test_kill_trials(kind, tmp_path, big, require_engine, engine_cleanup, request):
    engine = _engine_for(kind, require_engine)
    registry = request.getfixturevalue("plain_registry") if kind.name == "docker" else None
    old_file = tmp_path / "old"
    old_file.write_bytes(f"the old image of {kind.name}\n".encode())
    dest = Destination(kind, tmp_path, big, old_file, engine, engine_cleanup, registry)
    took = dest.measure()
    dest.make_old()
    assert dest.state() == "old"

    rng = random.Random(f"{SEED}/{kind.name}")
    signals = list(SIGNALS) + [rng.choice(SIGNALS) for _ in range(TRIALS - len(SIGNALS))]
    rng.shuffle(signals)
    for trial, sig in enumerate(signals):
        delay = rng.uniform(0, took)
        where = (f"seed {SEED}, kind {kind.name}, trial {trial}, {signal.Signals(sig).name} "
                 f"after {delay:.3f}s (uninterrupted run: {took:.3f}s)")
        tmp = tmp_path / f"tmp{trial}"
        tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        env["TMPDIR"] = str(tmp)
        proc = subprocess.Popen(dest.argv(dest.ref, big), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        children: dict = {}
        try:
            time.sleep(delay)
            if proc.poll() is None:
                children = _descendants(proc.pid)
                proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        rc = proc.returncode
        what = f"{where}: exit {rc}, stderr {stderr!r}"

        # Nothing ocibuild started outlives it.
        wait_for(lambda children=children, tmp=tmp: not (
                     _still_alive(children) or processes_mentioning(str(tmp))
                     or processes_mentioning(dest.mention)),
                 f"ocibuild's processes to end ({what}): {_still_alive(children)} "
                 f"{processes_mentioning(str(tmp))} {processes_mentioning(dest.mention)}", timeout=30)
        # No traceback from ocibuild. Exempt: a signal while the interpreter
        # itself starts (`Fatal Python error: init_...`), or while the
        # generated console script still runs its one import line, before
        # ocibuild's main (and its handlers) exist.
        frames = [line for line in stderr.splitlines() if line.lstrip().startswith('File "')]
        startup = stderr.startswith("Fatal Python error: init_") or (
            bool(frames) and all(f'File "{OCIBUILD}"' in f for f in frames))
        if not startup:
            assert "Traceback" not in stderr, what

        left = dest.leftovers(tmp)     # before anything else runs ocibuild
        state = dest.state()
        assert state in ("old", "new"), f"{what}: destination is {state}"
        if rc == 0:
            assert state == "new" and stdout.strip() == dest.new_digest, f"{what}: exit 0 but {state}"
        elif state == "new":
            assert "nothing was written" not in stderr, f"{what}: the new image is there, yet: {stderr!r}"

        if sig != signal.SIGKILL or rc == 0:
            assert not left, f"{what}: left behind {left}"
        else:
            # A following normal run sweeps what the killed one left and succeeds.
            r = run_ocibuild(*dest.argv(dest.ref, big)[1:], env={"TMPDIR": str(tmp)})
            assert r.returncode == 0, f"{what}; the next run failed: {r.stderr}"
            assert r.stdout.strip() == dest.new_digest, f"{what}; the next run printed {r.stdout!r}"
            assert dest.state() == "new", f"{what}; after the next run: {dest.state()}"
            left = dest.leftovers(tmp)
            assert not left, f"{what}; the next run did not remove {left}"
        shutil.rmtree(tmp)
        dest.restore_old()
