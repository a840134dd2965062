"""A lifecycle package means the same to ocibuild as to the peer (issue 9,
item 1): a differential test of ocibuild's tar reader against Go's
archive/tar, which the peer (and Docker, which unpacks the code for the
peer's build) reads code.tar.gz with.

tests/tar_lister is a small Go program that lists what archive/tar sees in
a code.tar.gz; it is built once per session with the host's Go. Every case
of the corpus (tests/tar_corpus.py: hand-written edge cases and seeded
mutations of valid archives) is wrapped in a lifecycle package and opened
with ocibuild's `open_package`; the rule is that ocibuild either refuses the
package, or extracts exactly what Go sees: the same names (Go's names placed
the way an extraction places them: '.' and empty components dropped, so
'./src/a' and 'src//a' are 'src/a'; parent directories may be implied), the
same types, for regular files the same content and executable bit, for
symlinks the same target, for hard links the same file. An archive Go
reports an error for must be refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fabric_corpus import GO_MOD, MAIN_GO, gz, package
from tar_corpus import PLAIN_BASES, Case, corpus, file, module

from ocibuild.errors import PackageError
from ocibuild.fabric.common import Limits
from ocibuild.fabric.package import open_package

LISTER = Path(__file__).resolve().parent / "tar_lister"
META = {"type": "golang", "path": "example.com/cc", "label": "cc_1"}
SHOWN = 20              # mismatches shown in full in a failure message
MIN_CASES = 300

# Go's typeflags (archive/tar turns '\0' into '0' or '5' itself).
REG, LINK, SYM, DIR, GLOBAL = ord("0"), ord("1"), ord("2"), ord("5"), ord("g")
KINDS = {REG: "file", LINK: "hardlink", SYM: "symlink", DIR: "dir"}


# -- what Go sees ------------------------------------------------------------------

@pytest.fixture(scope="session")
def tar_lister(tmp_path_factory) -> Path:
    """tests/tar_lister built with the host's Go (stdlib only, no network)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the host Go toolchain (`go`) is not installed, and the differential tar test needs it "
                    "to build tests/tar_lister; run scripts/setup", pytrace=False)
    out = tmp_path_factory.mktemp("tar-lister") / "tar_lister"
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GO111MODULE": "on",
           "GOWORK": "off"}
    r = subprocess.run([go, "build", "-trimpath", "-o", str(out), "."], cwd=LISTER, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"go build of {LISTER} failed:\n{r.stderr}"
    return out


@dataclass
class GoView:
    entries: list[dict] = field(default_factory=list)
    error: str | None = None


def _decoded(hex_text: str) -> str:
    return bytes.fromhex(hex_text).decode("utf-8", "surrogateescape")


def go_views(lister: Path, paths: list[Path]) -> dict[str, GoView]:
    """What archive/tar sees in each file: its entries, and its error if any."""
    views: dict[str, GoView] = {}
    for start in range(0, len(paths), 200):
        chunk = [str(p) for p in paths[start:start + 200]]
        r = subprocess.run([str(lister), *chunk], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"tar_lister failed ({r.returncode}): {r.stderr}"
        current = None
        for line in r.stdout.splitlines():
            obj = json.loads(line)
            if "file" in obj:
                current = views.setdefault(obj["file"], GoView())
            elif "error" in obj:
                current.error = obj["error"]
            elif "name_hex" in obj:
                obj["name"], obj["linkname"] = _decoded(obj["name_hex"]), _decoded(obj["linkname_hex"])
                current.entries.append(obj)
        assert set(chunk) <= set(views), f"tar_lister listed only some files: {r.stdout[-500:]}"
    return views


def placed(name: str) -> str:
    """Where an extraction puts an entry named `name`: '.' and empty
    components dropped (ocibuild refuses '..' and absolute names itself)."""
    lead = "/" if name.startswith("/") else ""
    return lead + "/".join(p for p in name.split("/") if p not in ("", "."))


def flag_name(flag: int) -> str:
    return KINDS.get(flag) or f"typeflag {chr(flag)!r}"


# -- what ocibuild extracted -----------------------------------------------------------

@dataclass(frozen=True)
class Node:
    kind: str                 # file, dir, symlink, other
    sha256: str = ""
    exec: bool = False
    target: str = ""
    inode: tuple = ()

    def show(self) -> str:
        if self.kind == "file":
            return f"file {self.sha256[:12]}{' exec' if self.exec else ''}"
        if self.kind == "symlink":
            return f"symlink -> {self.target!r}"
        return self.kind


def tree(root: str) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = Node("symlink", target=os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = Node("dir")
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                out[rel] = Node("file", digest, bool(st.st_mode & 0o111), inode=(st.st_dev, st.st_ino))
            else:
                out[rel] = Node("other")
    return out


@dataclass
class Outcome:
    refused: str | None = None          # the rule, when ocibuild refused
    crash: str | None = None            # anything but a PackageError
    tree: dict[str, Node] | None = None


def ocibuild_open(pkg: Path, work_root: Path) -> Outcome:
    work = Path(tempfile.mkdtemp(dir=work_root))
    try:
        try:
            opened = open_package(str(pkg), str(work), Limits())
        except PackageError as e:
            return Outcome(refused=e.rule or str(e))
        except Exception as e:          # reported as a finding: ocibuild must never give a traceback
            return Outcome(crash=f"{type(e).__name__}: {e}")
        return Outcome(tree=tree(opened.code_dir))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the comparison ------------------------------------------------------------------

@dataclass
class Mismatch:
    case: Case
    kind: str
    detail: str
    go: GoView
    outcome: Outcome

    def show(self) -> str:
        lines = [f"{self.case.name} [{self.case.cls}]: {self.kind}: {self.detail}",
                 f"    Go sees:   {show_go(self.go)}",
                 f"    ocibuild:  {show_outcome(self.outcome)}"]
        return "\n".join(lines)


def show_go(view: GoView, limit: int = 8) -> str:
    parts = []
    for e in view.entries[:limit]:
        text = f"{e['name']!r} {flag_name(e['typeflag'])} mode={e['mode'] & 0o7777:o} size={e['size']}"
        if e["typeflag"] in (LINK, SYM):
            text += f" -> {e['linkname']!r}"
        if e.get("sha256") and e["typeflag"] == REG:
            text += f" {e['sha256'][:12]}"
        parts.append(text)
    if len(view.entries) > limit:
        parts.append(f"... {len(view.entries) - limit} more")
    parts.append(f"error {view.error!r}" if view.error else "ok")
    return "; ".join(parts)


def show_outcome(outcome: Outcome, limit: int = 8) -> str:
    if outcome.crash:
        return f"crashed: {outcome.crash}"
    if outcome.refused:
        return f"refused ({outcome.refused})"
    assert outcome.tree is not None
    items = [f"{k!r} {v.show()}" for k, v in sorted(outcome.tree.items())]
    more = [f"... {len(items) - limit} more"] if len(items) > limit else []
    return "extracted " + "; ".join(items[:limit] + more)


def expected_tree(view: GoView) -> tuple[dict[str, tuple[str, dict]], list[tuple[str, str]]]:
    """Go's entries by placed name ({name: (kind, entry)}, the last one
    winning, as an extraction leaves them), and (kind, detail) of what means
    ocibuild should have refused: names Go sees twice, types a chaincode
    tree cannot hold."""
    want: dict[str, tuple[str, dict]] = {}
    problems = []
    for e in view.entries:
        flag = e["typeflag"]
        if flag == GLOBAL:
            continue                    # a pax global header: Docker's extraction ignores it, so does ocibuild
        name = placed(e["name"])
        if flag not in KINDS:
            problems.append(("Go sees a type ocibuild cannot extract",
                             f"Go sees {e['name']!r} as {flag_name(flag)}; ocibuild accepted the archive"))
            continue
        if name == "" and flag == DIR:
            continue                    # "./": the root itself
        if name in want:
            problems.append(("Go sees a name twice", f"Go sees {name!r} more than once; ocibuild saw one"))
        want[name] = (KINDS[flag], e)
    return want, problems


def _compare_one(name: str, kind: str, e: dict, got: Node | None, want, have: dict[str, Node]) -> str | None:
    if got is None:
        return f"Go sees {kind} {e['name']!r}, ocibuild extracted nothing at {name!r}"
    if kind == "hardlink":
        target = placed(e["linkname"])
        t = have.get(target)
        if got.kind != "file" or t is None or t.inode != got.inode:
            return f"Go sees {name!r} as a hard link to {e['linkname']!r}, ocibuild extracted {got.show()}"
        src = want.get(target)
        if src and src[0] == "file" and src[1].get("sha256") != got.sha256:
            return f"Go sees hard link {name!r} to content {src[1].get('sha256', '')[:12]}, ocibuild {got.sha256[:12]}"
        return None
    if got.kind != kind:
        return f"Go sees {name!r} as a {kind}, ocibuild extracted a {got.kind}"
    if kind == "file":
        if e.get("sha256") != got.sha256:
            return (f"{name!r}: Go reads content {e.get('sha256', '')[:12]} ({e['read']} bytes), "
                    f"ocibuild extracted {got.sha256[:12]}")
        if bool(e["mode"] & 0o111) != got.exec:
            return f"{name!r}: Go sees mode {e['mode'] & 0o7777:o}, ocibuild extracted exec={got.exec}"
    if kind == "symlink" and e["linkname"] != got.target:
        return f"{name!r}: Go sees a symlink to {e['linkname']!r}, ocibuild made one to {got.target!r}"
    return None


def compare(case: Case, view: GoView, outcome: Outcome) -> Mismatch | None:
    def mismatch(kind: str, detail: str) -> Mismatch:
        return Mismatch(case, kind, detail, view, outcome)

    if outcome.crash:
        return mismatch("ocibuild crashed", outcome.crash)
    if outcome.refused:
        return None
    have = outcome.tree or {}
    if view.error:
        return mismatch("Go fails, ocibuild accepts", f"archive/tar says {view.error!r}")
    want, problems = expected_tree(view)
    if problems:
        return mismatch(*problems[0])
    for name, (kind, e) in want.items():
        why = _compare_one(name, kind, e, have.get(name), want, have)
        if why:
            return mismatch("different " + ("names" if have.get(name) is None else kind), why)
    implied = {name[:i] for name in want for i in range(len(name)) if name[i] == "/"}
    extra = sorted(set(have) - set(want) - implied)
    if extra:
        return mismatch("different names", f"ocibuild extracted {extra[:5]!r}, which Go does not see")
    return None


def run_corpus(cases, lister: Path, tmp: Path) -> tuple[list[Mismatch], Counter, set[str]]:
    """Mismatches, a count of outcomes (refused / extracted / Go error), and
    the names of the cases ocibuild extracted."""
    codes, pkgs = tmp / "code", tmp / "pkg"
    codes.mkdir()
    pkgs.mkdir()
    work = tmp / "work"
    work.mkdir()
    paths = []
    for i, case in enumerate(cases):
        code = codes / f"{i:04d}.tar.gz"
        code.write_bytes(case.code)
        (pkgs / f"{i:04d}.tar.gz").write_bytes(package(meta=META, code=case.code))
        paths.append(code)
    views = go_views(lister, paths)
    mismatches, stats, extracted = [], Counter(), set()
    for i, case in enumerate(cases):
        view = views[str(paths[i])]
        outcome = ocibuild_open(pkgs / f"{i:04d}.tar.gz", work)
        stats["Go error" if view.error else "Go ok"] += 1
        stats["ocibuild refused" if outcome.refused else "ocibuild extracted" if outcome.tree is not None
              else "ocibuild crashed"] += 1
        if outcome.tree is not None:
            extracted.add(case.name)
        m = compare(case, view, outcome)
        if m:
            mismatches.append(m)
    assert os.listdir(work) == [], "work directories were left behind"
    return mismatches, stats, extracted


def report(mismatches: list[Mismatch], total: int, stats: Counter) -> str:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
    lines = [f"{len(mismatches)} of {total} cases: ocibuild extracted something other than what Go's archive/tar "
             f"sees, or accepted what Go fails on ({outcomes}). The first {min(SHOWN, len(mismatches))}:"]
    lines += [m.show() for m in mismatches[:SHOWN]]
    lines.append("Counts per class (what differs / what the case probes):")
    counts = Counter((m.kind, m.case.cls) for m in mismatches)
    lines += [f"  {n:4d}  {kind} / {cls}" for (kind, cls), n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]
    return "\n".join(lines)


# -- the tests ------------------------------------------------------------------------

def test_the_corpus_is_large_and_deterministic():
    cases = corpus()
    assert len(cases) >= MIN_CASES, f"only {len(cases)} cases"
    corpus.cache_clear()
    again = corpus()
    assert [(c.name, c.code) for c in cases] == [(c.name, c.code) for c in again], "the corpus is not deterministic"
    assert sum(1 for c in cases if c.cls.startswith("mutation")) >= 200
    assert sum(1 for c in cases if not c.cls.startswith("mutation")) >= 100


def test_go_and_ocibuild_agree_on_a_plain_package(tar_lister, tmp_path):
    # Both sides of the comparison work: a plain module is listed by Go and
    # extracted by ocibuild alike.
    raw = module(file("src/pkg/util.go", b"package pkg\n"), file("META-INF/statedb/couchdb/indexes/i.json", b"{}"))
    case = Case("plain", "plain", gz(raw))
    mismatches, stats, _ = run_corpus([case], tar_lister, tmp_path)
    assert not mismatches, report(mismatches, 1, stats)
    assert stats["ocibuild extracted"] == 1 and stats["Go ok"] == 1, stats
    view = go_views(tar_lister, [tmp_path / "code" / "0000.tar.gz"])[str(tmp_path / "code" / "0000.tar.gz")]
    assert [(e["name"], chr(e["typeflag"])) for e in view.entries] == [
        ("src/go.mod", "0"), ("src/main.go", "0"), ("src/pkg/util.go", "0"),
        ("META-INF/statedb/couchdb/indexes/i.json", "0")]
    assert view.entries[0]["sha256"] == hashlib.sha256(GO_MOD).hexdigest()
    assert view.entries[1]["sha256"] == hashlib.sha256(MAIN_GO).hexdigest()


def test_ocibuild_extracts_what_go_sees_or_refuses(tar_lister, tmp_path):
    cases = corpus()
    mismatches, stats, extracted = run_corpus(cases, tar_lister, tmp_path)
    # Not vacuous: the bases every mutation starts from are extracted.
    refused = [name for name in PLAIN_BASES if f"base/{name}" not in extracted]
    assert not refused, f"ocibuild refuses the valid bases {refused} of the corpus; mutations of them prove nothing"
    if mismatches:
        pytest.fail(report(mismatches, len(cases), stats), pytrace=False)
