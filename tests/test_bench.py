"""scripts/bench, smoke-run so it cannot rot: every section once with tiny
inputs (one measured round, no warm-up, no cold rows but in build-cold and
modules — cold rows have caches of their own, so they empty nothing
shared, but cost a toolchain's stdlib compile per tool —, a 35 kB binary,
the stdlib sample chaincode and a vendored module of a few files, scratch
for the size section's Debian-slim row, one GOCACHE shared by the
sections' host builds). Not a benchmark: timings and acceptance ratios mean
nothing here (--ignore-ratios), but every table must be there with a row
per tool, numbers where numbers belong, the checks the section prints must
say the work was the same, and nothing may be left behind (temp dirs,
registries, images, containers, volumes, warm builder containers, buildah
cache dirs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench"
SAMPLE = ROOT / "tests" / "fixtures" / "chaincode"
TINY = ["--runs", "1", "--warmup", "0", "--cold-runs", "0", "--ignore-ratios"]
EXTRA = {
    "assemble": ["--binary", "/bin/true"],          # small, and dynamic: the ELF loader check too
    "build": ["--sources", "chaincode,vendored", "--vendor-files", "8"],
    "build-cold": ["--sources", "vendored", "--vendor-files", "3", "--cold-runs", "1"],
    "size": ["--slim-base", "scratch"],
    "registry": [],
    "modules": ["--cold-runs", "1"],
    "platforms": [],
}
TIMEOUT = 600
NUMBER = re.compile(r"^\d+(\.\d+)?$")
SHA = r"sha256:[0-9a-f]{64}"

pytestmark = [pytest.mark.slow, pytest.mark.engine]


@pytest.fixture(scope="module")
def gocache(tmp_path_factory) -> Path:
    """One GOCACHE for every section's `ocibuild build --builder host`: the
    stdlib is compiled once, not once per section."""
    return tmp_path_factory.mktemp("bench-gocache")


def run_bench(case: str, tmpdir: Path, gocache: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run `scripts/bench --only SECTION` (the case's, build-cold: build)
    with the tiny inputs; (its result, its pid)."""
    env = {k: v for k, v in os.environ.items() if k != "OCIBUILD_BENCH_REEXEC"}
    section = case.split("-")[0]
    argv = [str(BENCH), "--only", section, *TINY, *EXTRA[case], "--gocache", str(gocache),
            "--tmpdir", str(tmpdir)]
    # From elsewhere than the checkout: the script finds its package and the venv itself.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmpdir.parent)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)           # the bench cleans up on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"scripts/bench --only {section} took over {TIMEOUT} s\n{stdout}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), proc.pid


def table(stdout: str, header: str) -> list[list[str]]:
    """The rows (cells, stripped) of the Markdown table whose header line starts with `header`."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, f"no table starting {header!r} in:\n{stdout}"
    assert lines[start + 1].startswith("|---"), lines[start + 1]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def by_label(rows: list[list[str]], labels: list[str]) -> dict[str, list[str]]:
    """The rows keyed by their first cell, which must be exactly `labels`, in order."""
    assert [r[0] for r in rows] == labels, rows
    return {r[0]: r for r in rows}


def assert_timed(row: list[str]) -> None:
    """| label | median s | min s | ratio | ... |: measured, every number a number."""
    assert len(row) == 5, row
    for cell in row[1:4]:
        assert NUMBER.match(cell), f"not a number: {cell!r} in {row}"
    assert float(row[2]) <= float(row[1]), row


def check_assemble(stdout: str) -> None:
    assert re.search(r"^binary: /bin/true — \d+ bytes", stdout, re.M), stdout
    assert "note: the binary is dynamically linked (/lib" in stdout, stdout
    labels = ["ocibuild --compression gzip", "ocibuild --compression none", "ocibuild --compression zstd",
              "docker buildx build --load + docker save (uncompressed)",
              "buildah from+copy+commit oci-archive+rm (uncompressed)",
              "floor: in-process sha256+isal gzip+sha256"]
    rows = by_label(table(stdout, "| tool | median s |"), labels)
    size = Path("/bin/true").stat().st_size
    for row in rows.values():
        assert_timed(row)
        assert row[4].isdigit() and int(row[4]) > 0, row
    assert rows[labels[0]][3] == "1.00"
    for uncompressed in (labels[1], labels[3], labels[4]):      # a tar holding the whole file
        assert int(rows[uncompressed][4]) > size, rows[uncompressed]
    for text in (r"ocibuild gzip / \(docker buildx build \+ docker save\)", r"ocibuild none / buildah"):
        assert re.search(rf"^  {text} = \d+\.\d{{3}} \(must be <= [\d.]+\): (PASS|FAIL)", stdout, re.M), stdout


BUILD_TOOLS = ["docker buildx build --load + docker save", "podman build + podman save",
               "ocibuild build --builder docker", "ocibuild build --builder podman",
               "ocibuild build --builder podman, rootless (user ocibuild)", "ocibuild build --builder host"]
WARM_ONLY = ["ocibuild build --builder auto", "floor: its go build alone, docker exec'd in ocibuild's warm builder"]


def source_block(stdout: str, key: str) -> str:
    """The build section's output for source `key`: from its ### heading to the next."""
    start = stdout.index(f"\n### source {key}\n")
    end = stdout.find("\n### ", start + 1)
    return stdout[start:end]


def check_build(stdout: str, sources=("chaincode", "vendored"), cold: bool = False) -> None:
    assert f"source chaincode: {SAMPLE} (module, not vendored)" in stdout or "chaincode" not in sources, stdout
    assert re.search(r"^source vendored: \S+ \(module, vendored; \d+ \.go files, [\d.]+ MB in vendor/ "
                     r"\(\d+ modules, \d+ packages\), generated\); the change: main\.go:\d+ `const banner = "
                     r'"vendored chaincode"`', stdout, re.M), stdout
    assert "--builder auto picks docker" in stdout, stdout
    assert "nothing shared pruned" in stdout, stdout
    assert "prune -af" not in stdout, stdout
    labels = [f"{t}, COLD" for t in BUILD_TOOLS] + [f"{t}, WARM" for t in BUILD_TOOLS + WARM_ONLY]
    for key in sources:
        block = source_block(stdout, key)
        rows = by_label(table(block, "| tool | median s |"), labels)
        for label, row in rows.items():
            if label.endswith("COLD") and not cold:
                assert row[1:] == ["NOT RUN", "—", "—", "--cold-runs 0"], row
                continue
            assert_timed(row)
            assert row[4].isdigit() and int(row[4]) > 0, row
        assert rows[labels[6]][3] == "1.00" and (rows[labels[0]][3] == "1.00" or not cold)   # to buildx + save
        assert re.search(rf"^  warm {key}: .*; the floor \(docker exec go build alone\) / buildx \d+\.\d{{3}}, "
                         r"ocibuild docker takes -?\d+\.\d{3} s more$", stdout, re.M), stdout
        m = re.search(rf"^chaincode binary, last round: {SHA} \([\d,]+ bytes\) from buildx, podman build, "
                      r"ocibuild docker, ocibuild podman, ocibuild rootless, ocibuild host: same bytes$", block, re.M)
        assert m, block
        assert "image digest from ocibuild --builder docker/podman/rootless/host: identical in 1 of 1 measured " \
               "round(s)" in block, block
        if key == "vendored":
            assert re.search(r"^vendored modules in the binary's build information: (\d+) of \1$", block, re.M), block
    summary = table(stdout, "| tool | " + " | ".join(f"{k} s | ratio" for k in sources) + " |")
    assert [r[0] for r in summary] == [f"COLD {t}" for t in BUILD_TOOLS] + \
        [f"WARM {t}" for t in BUILD_TOOLS + WARM_ONLY]
    for key in sources:
        for builder in ("docker", "podman", "rootless"):
            assert re.search(rf"^  {key}: ocibuild --builder {builder} / \(docker buildx build \+ docker save\) = "
                             r"\d+\.\d{3} \(must be <= 0\.6\)", stdout, re.M), stdout
        assert re.search(rf"^  {key}: ocibuild --builder auto / ocibuild --builder docker \(its pick\) = "
                         r"\d+\.\d{3} \(must be <= 1\.05", stdout, re.M), stdout


def check_build_cold(stdout: str) -> None:
    check_build(stdout, sources=("vendored",), cold=True)


def check_modules(stdout: str) -> None:
    assert "prune -af" not in stdout, stdout
    labels = ["ocibuild build --builder docker --go-proxy URL, COLD",
              "docker buildx build --load + docker save, COLD (uncompressed)",
              "ocibuild build --builder docker --go-proxy URL, WARM (one-line change)",
              "docker buildx build --load + docker save, WARM (uncompressed)"]
    rows = by_label(table(stdout, "| tool | median s |"), labels)
    for row in rows.values():
        assert_timed(row)
    for key in ("ocibuild", "buildx"):
        assert re.search(rf"^{key}: every module's \.zip fetched from the proxy in 1 of 1 cold round\(s\)", stdout,
                         re.M), stdout
        assert f"{key}: 0 proxy request(s) in 1 measured warm round(s)" in stdout, stdout
    m = re.search(rf"^chaincode binary, last round: ocibuild ({SHA}), buildx ({SHA}): same bytes$", stdout, re.M)
    assert m and m.group(1) == m.group(2), stdout


def check_size(stdout: str) -> None:
    labels = ["ocibuild build --builder host (its base: static)",
              "(a) the same binary on --slim-base scratch (ocibuild assemble)",
              "(b) single-stage docker build FROM the Go builder image (pre-2017 Fabric)"]
    rows = by_label(table(stdout, "| image | layers |"), labels)
    for row in rows.values():
        assert len(row) == 9, row
        layers, size, _, ratio, gz, _, gz_ratio, started = row[1:]
        assert layers.isdigit() and size.isdigit() and NUMBER.match(ratio) and NUMBER.match(gz_ratio), row
        assert re.fullmatch(r"\d+( \(recompressed\))?", gz), row
        assert started == "ok, uid 500", row
    assert rows[labels[0]][4] == rows[labels[0]][7] == "1.00"
    assert rows[labels[2]][5].endswith("(recompressed)")        # docker save's layers are plain tar
    assert float(rows[labels[2]][4]) > 10, "the Go toolchain image is not much bigger than ocibuild's?"
    assert "(a) base: scratch (--slim-base), not the Debian-slim-like base" in stdout, stdout
    assert re.search(rf"^chaincode binary /usr/local/bin/chaincode: {SHA} in 3 image\(s\), same bytes$",
                     stdout, re.M), stdout
    for key in ("ocibuild", "slim", "single"):
        assert f"docker run {key}: chaincode x:1 starting, peer 127.0.0.1:7052, tls false, uid 500" in stdout


def check_registry(stdout: str) -> None:
    m = re.search(r"^IMG\.tar: \d+ bytes; (\d+) layer\(s\), config \+ layers (\d+) bytes; manifest " + SHA,
                  stdout, re.M)
    assert m, stdout
    layers = int(m.group(1))
    labels = ["COLD ocibuild -q assemble --base oci-archive:IMG.tar:v1 --output docker://…",
              "COLD skopeo copy oci-archive:IMG.tar:v1 docker://…",
              "WARM ocibuild (all blobs present)",
              "WARM skopeo copy (all blobs present)"]
    rows = by_label(table(stdout, "| push | median s |"), labels)
    for label, row in rows.items():
        assert_timed(row)
        blobs = re.fullmatch(r"(\d+) \((\d+) bytes\)", row[4])
        assert blobs, row
        n, size = int(blobs.group(1)), int(blobs.group(2))
        if label.startswith("COLD"):            # config and layers, into an empty registry
            assert n == layers + 1 and size > 0, row
        else:                                   # all there already
            assert (n, size) == (0, 0), row
    assert rows[labels[0]][3] == rows[labels[2]][3] == "1.00"
    for key in ("oci", "sk"):
        assert f"{key}: layers in the registry = IMG.tar's layers (same digests)" in stdout, stdout


def check_platforms(stdout: str) -> None:
    for way, error in (("--output type=oci,dest=F", "OCI exporter is not supported for the docker driver"),
                       ("--output type=docker,dest=F", "docker exporter does not support exporting manifest lists"),
                       ("--load", "docker exporter does not currently support exporting manifest lists")):
        assert f"buildx, both platforms in one build, {way}: refused: ERROR: {error}" in stdout, stdout
    assert "podman build without --build-arg BUILDPLATFORM: Error: " in stdout, stdout
    tools = ["ocibuild build --builder docker --platform linux/amd64,linux/arm64 → oci-archive",
             "docker buildx build --load, once per platform, + docker save (2 images, no index)",
             "docker buildx bake (2 targets, parallel) --load + docker save (2 images, no index)",
             "docker buildx build --platform linux/amd64,linux/arm64 --output type=oci (one build)",
             "ocibuild build --builder podman --platform linux/amd64,linux/arm64 → oci-archive",
             "podman build --platform linux/amd64,linux/arm64 --manifest + manifest push --all oci-archive",
             "ocibuild build --builder host --platform linux/amd64,linux/arm64 (context)"]
    one = tools[3]
    labels = [f"{t}, COLD" for t in tools if t != one] + [f"{t}, WARM" for t in tools]
    rows = by_label(table(stdout, "| tool | median s |"), labels)
    for label in labels[:6]:                    # --cold-runs 0
        assert rows[label][1:] == ["NOT RUN", "—", "—", "--cold-runs 0"], rows[label]
    for label in labels[6:]:
        if label.startswith(one):
            assert rows[label][1:4] == ["REFUSED", "—", "—"], rows[label]
            assert rows[label][4].startswith("refused here: ERROR: OCI exporter is not supported"), rows[label]
            continue
        assert_timed(rows[label])
        assert rows[label][4].isdigit() and int(rows[label][4]) > 0, rows[label]
    assert rows[labels[6]][3] == "1.00"
    assert ("images per output, last round: ocibuild docker amd64+arm64, buildx each amd64+arm64, buildx bake "
            "amd64+arm64, ocibuild podman amd64+arm64, podman build amd64+arm64, ocibuild host amd64+arm64") \
        in stdout, stdout
    for arch, machine in (("amd64", "x86-64"), ("arm64", "AArch64")):
        assert re.search(rf"^linux/{arch} chaincode binary, last round: {SHA} from all 6 tools, same bytes; "
                         rf"ELF machine {machine}$", stdout, re.M), stdout
    assert "index digest from ocibuild --builder docker/podman/host: identical in 1 of 1 measured round(s)" \
        in stdout, stdout
    for builder in ("docker", "podman", "host"):
        assert re.search(rf"^ocibuild --builder {builder}, WARM, its phases \(median s\): compile linux/amd64 "
                         r"[\d.]+, compile linux/arm64 [\d.]+, ", stdout, re.M), stdout
    for text in (r"ocibuild --builder docker / \(buildx once per platform \+ docker save\)",
                 r"ocibuild --builder docker / \(buildx bake \+ docker save\)",
                 r"ocibuild --builder podman / \(podman build --manifest \+ manifest push\)"):
        assert re.search(rf"^  warm: {text} = \d+\.\d{{3}}$", stdout, re.M), stdout
    assert "  warm: ocibuild --builder docker / buildx one two-platform build: not measured — refused here" \
        in stdout, stdout


CHECKS = {"assemble": check_assemble, "build": check_build, "build-cold": check_build_cold, "size": check_size,
          "registry": check_registry, "modules": check_modules, "platforms": check_platforms}


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def rootless(*args: str) -> list[str]:
    """The rootless user's podman (as tests/test_build_cli.py runs it), or
    () without that user."""
    import pwd
    try:
        pw = pwd.getpwnam("ocibuild")
    except KeyError:
        return []
    env = [f"HOME={pw.pw_dir}", f"XDG_RUNTIME_DIR=/run/user/{pw.pw_uid}", f"PATH={os.environ.get('PATH', '')}"]
    return ["runuser", "-u", "ocibuild", "--", "env", "-i", *env, "podman", *args]


def podman_leftovers(tag: str) -> list[str]:
    """podman images, manifest lists and volumes named or labelled after the
    bench's TAG, rootful and rootless."""
    queries = [["podman", "images", "--format", "{{.Repository}}"],
               ["podman", "images", "-q", "--filter", f"label=org.ocibuild.bench={tag}"],
               ["podman", "volume", "ls", "--format", "{{.Name}}"]]
    if rootless():
        queries += [rootless("images", "--format", "{{.Repository}}"),
                    rootless("volume", "ls", "--format", "{{.Name}}")]
    left = []
    for q in queries:
        p = subprocess.run(q, capture_output=True, text=True, timeout=60, cwd="/")
        assert p.returncode == 0, f"{' '.join(q)}: {p.stderr}"
        names = p.stdout.split()
        left += [f"{q[0]}: {n}" for n in (names if "-q" in q else
                                          [n for n in names if n.removeprefix("localhost/").startswith(tag)])]
    return left


def warm_builders_on(tag: str) -> list[str]:
    """ocibuild's warm builder containers (docker, podman, rootless podman)
    whose cache volume is one of the bench's own (named after its TAG)."""
    left = []
    for cli in (["docker"], ["podman"], rootless()):
        if not cli:
            continue
        p = subprocess.run([*cli, "ps", "-aq", "--filter", "label=org.ocibuild.warm-builder"],
                           capture_output=True, text=True, timeout=60, cwd="/")
        assert p.returncode == 0, p.stderr
        if not p.stdout.split():
            continue
        fmt = '{{.Name}} {{index .Config.Labels "org.ocibuild.warm-builder"}}'
        p = subprocess.run([*cli, "inspect", "--format", fmt, *p.stdout.split()], capture_output=True, text=True,
                           timeout=60, cwd="/")
        # (one may have gone by itself meanwhile: inspect then fails for it, but prints the others)
        left += [f"{cli[0]}: {line}" for line in p.stdout.splitlines() if f'"cache": "{tag}' in line]
    return left


def buildah_cache() -> set[str]:
    """podman build's cache-mount directories (build and platforms remove the ones they made)."""
    root = Path(os.environ.get("TMPDIR") or "/var/tmp") / "buildah-cache"
    return {str(p) for p in root.glob("**/*")} | ({str(root)} if root.exists() else set())


def rootless_areas() -> set[str]:
    """The build section's directories for the rootless user (in /tmp)."""
    return {str(p) for p in Path("/tmp").glob("ocibuild-bench-e2e-rootless-*")}


def leftovers(tag: str) -> list[str]:
    """Docker images, containers and volumes, buildah containers named after the bench's TAG."""
    queries = (["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
               ["docker", "ps", "-a", "--format", "{{.Names}}"],
               ["docker", "volume", "ls", "--format", "{{.Name}}"],
               ["buildah", "containers", "--format", "{{.ContainerName}}"])
    left = []
    for q in queries:
        p = subprocess.run(q, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{' '.join(q)}: {p.stderr}"
        left += [f"{q[0]}: {n}" for n in p.stdout.split() if n.startswith(tag)]
    return left


@pytest.mark.parametrize("case", ["assemble", "build", "build-cold", "size",
                                  pytest.param("registry", marks=pytest.mark.registry), "modules", "platforms"])
def test_bench_section(case, tmp_path, gocache):
    work = tmp_path / "work"
    work.mkdir()
    cache_dirs = buildah_cache()
    areas = rootless_areas()
    result, pid = run_bench(case, work, gocache)
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, output
    assert result.stdout.startswith("machine: nproc "), output
    assert f"\n## {case.split('-')[0]}: " in result.stdout, output
    CHECKS[case](result.stdout)
    # Everything the bench made is gone: its temp dirs, registries, images,
    # containers, volumes, warm builders on its own volumes, buildah cache dirs.
    assert list(work.iterdir()) == [], output
    assert processes_mentioning(str(work)) == []
    tag = f"ocibuild-bench-{pid}"
    assert leftovers(tag) == []
    assert podman_leftovers(tag) == []
    assert warm_builders_on(tag) == []
    assert buildah_cache() <= cache_dirs
    assert rootless_areas() <= areas


def test_cold_launcher_sets_fresh_caches():
    """Cold rows (build, modules, platforms) run ocibuild's CLI with fresh
    caches for its docker and podman builders, warm builder containers
    included (it has no option for them): the patch still takes."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from benchmarks.caches import LAUNCH, VENV_PY
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    tail = "from ocibuild.__main__ import main\nmain()\n"
    assert LAUNCH.endswith(tail)
    probe = LAUNCH.removesuffix(tail) + ("print(docker.DockerBuilder('', {}).cache_id, docker.WARM_CACHE_VOLUME, "
                                         "podman.PodmanBuilder('').cache_volume)\n")
    p = subprocess.run([str(VENV_PY), "-c", probe, "fresh-id", "fresh-volume"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["fresh-id", "fresh-volume", "fresh-volume"]


def test_no_cold_row_prunes_shared_caches():
    """Cold rows get caches of their own: nothing in scripts/ empties a
    machine-wide cache (a BuildKit prune of all, a podman reset, a volume
    prune); the bench prunes BuildKit records only by the ids it made."""
    scripts = [ROOT / "scripts" / "bench", *sorted((ROOT / "scripts" / "benchmarks").glob("*.py"))]
    for f in scripts:
        text = f.read_text()
        for bad in ('"builder", "prune", "-af"', '"system", "reset"', '"system", "prune"', '"volume", "prune"',
                    '"image", "prune"', "prune -af"):
            assert bad not in text, f"{f}: {bad}"
