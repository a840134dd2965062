"""The SBOM core: `ocibuild.oci.buildinfo` reads a Go binary's build
information from the ELF file, checked against what `go version -m` prints
for real binaries from both host toolchains (Debian's go1.19, go1.24.4),
module mode with go.sum hashes and replacements, vendor mode, amd64 and
cross-compiled arm64; `ocibuild.sbom.describe` writes an SPDX 2.3 document
that spdx-tools parses and validates, listing exactly those modules and
the built-in base's Debian packages, byte for byte the same for the same
inputs; and hostile binaries (mutated headers, section tables, build
information, modinfo texts) give a problem, never an exception or an
unbounded read."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES
from goproxy import chaincode_module, debian_module, example_modules, go_env, go_sum_lines, proxy_url, write_proxy
from goproxy import module as goproxy_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from ocibuild.oci import buildinfo
from ocibuild.oci.bases import builtin_definition
from ocibuild.oci.buildinfo import INFO_END, INFO_START, MAX_MODINFO, BuildInfo, Module, read_buildinfo
from ocibuild.oci.elf import go_version, read_elf
from ocibuild.oci.model import Platform
from ocibuild.sbom import SPDX_JSON, AddedFile, BaseInfo, describe

GO119 = "/usr/lib/go-1.19/bin/go" if os.path.exists("/usr/lib/go-1.19/bin/go") else (shutil.which("go") or "go")
GO124 = "/var/cache/ocibuild/toolchains/go1.24.4/bin/go"
DIGEST = "sha256:" + "ab" * 32
AMD64 = Platform("linux", "amd64")
GREET, LOUD = example_modules()
# A fork published under its own path whose go.mod keeps the original's: what a replace points at.
FORK = goproxy_module("example.com/greetfork", "v1.2.1", {
    "go.mod": "module example.com/greet\n\ngo 1.17\n",
    "greet.go": 'package greet\n\n// Hello greets name.\nfunc Hello(name string) string { return "hi, " + name }\n',
})


# --- the binaries, built once -----------------------------------------------------------

@dataclass(frozen=True)
class Binary:
    name: str
    path: Path
    go: str          # the toolchain that built it


def _build(go: str, src: Path, out: Path, env: dict, *flags: str) -> None:
    p = subprocess.run([go, "build", "-trimpath", *flags, "-o", str(out), "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sbom")


@pytest.fixture(scope="module")
def binaries(work) -> dict[str, Binary]:
    """Module mode against a directory proxy (go.sum hashes; a replace by
    another module and one by a directory), with both toolchains; the
    vendored fixture (-mod=vendor: no hashes) for arm64 with both."""
    proxy = write_proxy(work / "proxy", [GREET, LOUD, FORK, debian_module()])
    src = chaincode_module(work / "modules", [LOUD, debian_module()], pool=[GREET])
    (src / "local").mkdir()
    (src / "local" / "go.mod").write_text("module example.com/local\n\ngo 1.17\n")
    (src / "local" / "local.go").write_text('// Package local is a directory replacement.\npackage local\n\n'
                                            '// Name names it.\nconst Name = "local"\n')
    with (src / "go.mod").open("a") as f:
        f.write("\nrequire example.com/local v0.0.0\n\n"
                "replace example.com/greet v1.2.0 => example.com/greetfork v1.2.1\n\n"
                "replace example.com/local => ./local\n")
    with (src / "go.sum").open("a") as f:
        f.write("".join(line + "\n" for line in go_sum_lines([FORK])))
    main = (src / "main.go").read_text()
    main = main.replace('import (\n', 'import (\n\t"example.com/local"\n', 1)
    (src / "main.go").write_text(main.replace("func main() {\n", "func main() {\n\tfmt.Println(local.Name)\n", 1))
    env = go_env(os.environ, work / "go", proxy_url(proxy))
    env["GOCACHE"] = str(work / "gocache")
    vendored = work / "vendored"
    shutil.copytree(FIXTURES / "vendored", vendored)
    venv = {**env, "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOARCH": "arm64"}
    out = {}
    for go, tag in ((GO119, "go1.19"), (GO124, "go1.24")):
        b = Binary(f"modules-{tag}", work / f"modules-{tag}", go)
        # -gcflags with a space: a build setting go quotes
        _build(go, src, b.path, env, "-gcflags=-N -l", "-ldflags=-s -w -buildid=")
        out[b.name] = b
        b = Binary(f"vendored-arm64-{tag}", work / f"vendored-arm64-{tag}", go)
        _build(go, vendored, b.path, venv, "-tags=foo,bar", "-ldflags=-buildid=")
        out[b.name] = b
    return out


def go_version_m(b: Binary) -> BuildInfo:
    """What `go version -m` prints, parsed here (the test's own reading of
    Go's text format, quoted setting values JSON-decoded)."""
    p = subprocess.run([b.go, "version", "-m", str(b.path)], capture_output=True, text=True, check=True)
    lines = p.stdout.splitlines()
    head, version = lines[0].rsplit(": ", 1)
    assert head == str(b.path)
    path, main, deps, settings_ = "", None, [], []
    for line in lines[1:]:
        if not line.strip():
            continue
        word, _, rest = line.lstrip("\t").partition("\t")
        cols = rest.split("\t")
        if word == "path":
            path = rest
        elif word in ("mod", "dep"):
            m = Module(cols[0], cols[1], cols[2] if len(cols) > 2 else "")
            if word == "mod":
                main = m
            else:
                deps.append(m)
        elif word == "=>":
            r = Module(cols[0], cols[1], cols[2])
            old = deps.pop()
            deps.append(Module(old.path, old.version, old.sum, r))
        elif word == "build":
            key, _, value = rest.partition("=")
            settings_.append((key, json.loads(value) if value.startswith('"') else value))
    return BuildInfo(version, path, main, tuple(deps), tuple(settings_))


BUILT = ["modules-go1.19", "modules-go1.24", "vendored-arm64-go1.19", "vendored-arm64-go1.24"]


@pytest.mark.parametrize("name", BUILT)
def test_the_build_information_is_what_go_version_m_prints(binaries, name):
    b = binaries[name]
    got = read_buildinfo(str(b.path))
    assert got == go_version_m(b)
    assert got is not None and not got.problem
    assert got.go_version == ("go1.19.8" if name.endswith("go1.19") else "go1.24.4")
    assert go_version(str(b.path)) == got.go_version          # elf.go_version: the same reader
    settings_ = dict(got.settings)
    assert settings_["GOARCH"] == ("arm64" if "arm64" in name else "amd64")
    if name.startswith("modules"):
        assert got.path == "example.com/chaincode" and got.main == Module("example.com/chaincode", "(devel)")
        assert settings_["-gcflags"] == "-N -l"
        deps = {d.path: d for d in got.deps}
        assert deps["example.com/greet"] == Module("example.com/greet", "v1.2.0", "", Module(
            "example.com/greetfork", "v1.2.1", go_sum_lines([FORK])[0].split()[2]))
        assert deps["example.com/local"].replace == Module("./local", "(devel)", "")
        assert deps["example.com/loud"].sum == go_sum_lines([LOUD])[0].split()[2]
        assert set(deps) == {"example.com/greet", "example.com/local", "example.com/loud", "github.com/google/go-cmp"}
    else:
        assert got.path == "example.org/chaincode/vendored"
        assert got.deps == (Module("example.com/greet", "v1.0.0", ""),)     # vendor mode: no hash
        assert settings_["-tags"] == "foo,bar"
        elf = read_elf(str(b.path))
        assert elf is not None and elf.platform == Platform("linux", "arm64")


def test_anything_but_an_elf_file_is_none(tmp_path):
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "elf-magic-only").write_bytes(b"\x7fELF")
    for p in ("script", "empty", "missing"):
        assert read_buildinfo(str(tmp_path / p)) is None
    assert read_buildinfo(str(tmp_path)) is None                         # a directory
    assert read_buildinfo(str(tmp_path / "elf-magic-only")) == BuildInfo(   # an ELF, unreadable
        problem="a truncated ELF header")
    assert read_buildinfo("/bin/sh") == BuildInfo(problem="no .go.buildinfo section")


# --- the SPDX document ----------------------------------------------------------------------

def validated(data: bytes, where: Path) -> dict:
    """The document, after spdx-tools parsed it from a file and found nothing to say."""
    where.write_bytes(data)
    doc = parse_file(str(where))
    messages = validate_full_spdx_document(doc)
    assert messages == [], [m.validation_message for m in messages]
    return json.loads(data)


def go_packages(doc: dict) -> set[tuple[str, str]]:
    return {(p["name"], p.get("versionInfo", "")) for p in doc["packages"]
            if any(r["referenceLocator"].startswith("pkg:golang/") for r in p.get("externalRefs", []))}


def expected_go_packages(info: BuildInfo) -> set[tuple[str, str]]:
    """What was built: the replacement (for a directory, the module's path
    with the directory's version), the main module, the standard library."""
    out = {("stdlib", info.go_version)}
    assert info.main is not None
    out.add((info.main.path, info.main.version))
    for d in info.deps:
        r = d.replace
        if r is None:
            out.add((d.path, d.version))
        elif r.path.startswith("./"):
            out.add((d.path, r.version))
        else:
            out.add((r.path, r.version))
    return out


def by_id(doc: dict) -> dict[str, dict]:
    return {e["SPDXID"]: e for e in doc["packages"] + doc["files"]}


@pytest.mark.parametrize("name", BUILT)
def test_the_document_validates_and_lists_the_modules_and_the_base(binaries, name, tmp_path):
    b = binaries[name]
    platform = Platform("linux", "arm64") if "arm64" in name else AMD64
    data, problems = describe(DIGEST, platform, [AddedFile("/usr/local/bin/chaincode", str(b.path))],
                              BaseInfo("static"), 0, "0.1.0")
    assert problems == []
    doc = validated(data, tmp_path / "sbom.spdx.json")
    printed = go_version_m(b)
    assert go_packages(doc) == expected_go_packages(printed)
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["creationInfo"] == {"created": "1970-01-01T00:00:00Z", "creators": ["Tool: ocibuild-0.1.0"]}
    elements = by_id(doc)
    rels = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]) for r in doc["relationships"]}

    image = next(p for p in doc["packages"] if p.get("primaryPackagePurpose") == "CONTAINER")
    assert image["versionInfo"] == DIGEST
    assert image["externalRefs"][0]["referenceLocator"] == \
        f"pkg:oci/chaincode@sha256%3A{'ab' * 32}?arch={platform.architecture}"
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", image["SPDXID"]) in rels

    binary = next(f for f in doc["files"] if f["fileName"] == "./usr/local/bin/chaincode")
    content = b.path.read_bytes()
    assert {c["algorithm"]: c["checksumValue"] for c in binary["checksums"]} == {
        "SHA1": hashlib.sha1(content).hexdigest(), "SHA256": hashlib.sha256(content).hexdigest()}
    assert (image["SPDXID"], "CONTAINS", binary["SPDXID"]) in rels
    main = [elements[t] for s, k, t in rels if s == binary["SPDXID"] and k == "GENERATED_FROM"]
    assert printed.main is not None and [m["name"] for m in main] == [printed.main.path]
    for key, value in printed.settings:                    # the settings, as go version -m prints them
        shown = json.dumps(value) if " " in value else value
        assert f"\n{key}={shown}" in main[0]["comment"]
    depends = {(elements[t]["name"], elements[t].get("versionInfo", ""))
               for s, k, t in rels if s == main[0]["SPDXID"] and k == "DEPENDS_ON"}
    assert depends == expected_go_packages(printed) - {(printed.main.path, printed.main.version)}
    for d in printed.deps:                                 # each h1: hash, as a SHA256 checksum and verbatim
        built = d.replace or d
        if not built.sum:
            continue
        p = next(p for p in doc["packages"] if p["name"] == built.path)
        assert p["checksums"] == [{"algorithm": "SHA256",
                                   "checksumValue": base64.b64decode(built.sum[3:]).hex()}]
        assert built.sum in p["comment"]
        if d.replace:
            assert f"in place of {d.path} {d.version}" in p["comment"]
    stdlib = next(p for p in doc["packages"] if p["name"] == "stdlib")
    assert stdlib["externalRefs"][0]["referenceLocator"] == "pkg:golang/stdlib@" + printed.go_version[2:]

    # The static base: its Debian packages, at the versions its definition records, and its inline files.
    debs = {p["name"]: p for p in doc["packages"]
            if p.get("externalRefs", [{}])[0].get("referenceLocator", "").startswith("pkg:deb/")}
    recorded = {a["debian"]["package"]: a["debian"] for a in builtin_definition("static")["archives"]}
    assert set(debs) == {"ca-certificates", "tzdata"} == set(recorded)
    for name_, deb in recorded.items():
        p = debs[name_]
        assert p["versionInfo"] == deb["version"]
        assert p["checksums"] == [{"algorithm": "SHA256", "checksumValue": deb["deb_sha256"]}]
        assert p["externalRefs"][0]["referenceLocator"] == \
            f"pkg:deb/debian/{name_}@{deb['version'].replace('+', '%2B')}?arch=all&distro=debian-12"
        assert p["downloadLocation"] == "https://deb.debian.org/debian/" + deb["pool"]
        assert (image["SPDXID"], "CONTAINS", p["SPDXID"]) in rels
    inline = {f["fileName"] for f in doc["files"]} - {"./usr/local/bin/chaincode"}
    assert inline == {"./etc/group", "./etc/nsswitch.conf", "./etc/passwd"}
    assert all((image["SPDXID"], "CONTAINS", f["SPDXID"]) in rels for f in doc["files"])


def test_an_image_base_is_one_package_and_an_added_file_shadows_a_base_file(binaries, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/sbin/nologin\n")
    added = [AddedFile("/usr/local/bin/chaincode", str(binaries["modules-go1.24"].path)),
             AddedFile("/etc/passwd", str(passwd))]
    base_digest = "sha256:" + "cd" * 32
    data, problems = describe(DIGEST, AMD64, added, BaseInfo("docker://registry.example:5000/acme/base:1",
                                                             base_digest, builtin=False), 0, "0.1.0")
    doc = validated(data, tmp_path / "sbom.json")
    assert problems == []
    base = [p for p in doc["packages"] if p.get("versionInfo") == base_digest]
    assert len(base) == 1 and base[0]["name"] == "docker://registry.example:5000/acme/base:1"
    assert "not itemised" in base[0]["comment"]
    assert not [p for p in doc["packages"] if "pkg:deb/" in json.dumps(p)]
    assert {f["fileName"] for f in doc["files"]} == {"./usr/local/bin/chaincode", "./etc/passwd"}

    data, _ = describe(DIGEST, AMD64, added, BaseInfo("static"), 0, "0.1.0")   # the added /etc/passwd wins
    doc = validated(data, tmp_path / "sbom.json")
    files = [f for f in doc["files"] if f["fileName"] == "./etc/passwd"]
    assert len(files) == 1 and files[0]["checksums"][1]["checksumValue"] == hashlib.sha256(
        passwd.read_bytes()).hexdigest()
    data, _ = describe(DIGEST, AMD64, added, BaseInfo("scratch"), 0, "0.1.0")  # nothing from scratch
    assert {f["fileName"] for f in validated(data, tmp_path / "sbom.json")["files"]} == {
        "./usr/local/bin/chaincode", "./etc/passwd"}


def test_the_same_inputs_give_the_same_bytes_and_the_epoch_changes_only_the_time(binaries, tmp_path):
    added = [AddedFile("/usr/local/bin/chaincode", str(binaries["modules-go1.19"].path)),
             AddedFile("/usr/local/bin/helper", str(binaries["vendored-arm64-go1.24"].path))]
    one, _ = describe(DIGEST, AMD64, added, BaseInfo("static"), 0, "0.1.0")
    again, _ = describe(DIGEST, AMD64, list(reversed(added)), BaseInfo("static"), 0, "0.1.0")
    assert one == again
    later, _ = describe(DIGEST, AMD64, added, BaseInfo("static"), 1700000000, "0.1.0")
    a, b = json.loads(one), json.loads(later)
    assert b["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    a["creationInfo"].pop("created"), b["creationInfo"].pop("created")
    assert a == b
    other, _ = describe("sha256:" + "ef" * 32, AMD64, added, BaseInfo("static"), 0, "0.1.0")
    assert json.loads(other)["documentNamespace"] != a["documentNamespace"]
    newer, _ = describe(DIGEST, AMD64, added, BaseInfo("static"), 0, "0.2.0")
    assert json.loads(newer)["documentNamespace"] != a["documentNamespace"]
    assert SPDX_JSON == "application/spdx+json"
    validated(one, tmp_path / "one.json")


# --- hostile binaries ---------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where things are in a little-endian ELF64 file (the test's own reading)."""
    shoff: int
    shentsize: int
    shnum: int
    shstrndx: int
    bi_header: int        # file offset of .go.buildinfo's section header
    bi_offset: int        # and of its contents
    bi_size: int
    bi_name: int          # file offset of its name in the section name table

    @classmethod
    def of(cls, data: bytes) -> Layout:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names_at = headers[shstrndx][4]
        for i, h in enumerate(headers):
            if data[names_at + h[0]:names_at + h[0] + 14] == b".go.buildinfo\0":
                return cls(shoff, shentsize, shnum, shstrndx, shoff + i * shentsize, h[4], h[5], names_at + h[0])
        raise AssertionError("no .go.buildinfo")


@pytest.fixture(scope="module")
def sample(binaries) -> bytes:
    return binaries["modules-go1.24"].path.read_bytes()


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_buildinfo(data: bytes, blob: bytes) -> bytes:
    """`data` with its .go.buildinfo contents replaced by `blob`, appended at
    the end of the file (16-aligned) and pointed at by the section header."""
    lay = Layout.of(data)
    out = bytearray(data) + bytes(-len(data) % 16)
    at = len(out)
    out += blob
    struct.pack_into("<QQ", out, lay.bi_header + 24, at, len(blob))
    return bytes(out)


def blob(modinfo: bytes, version: bytes = b"go1.24.4", framed: bool = True) -> bytes:
    """A Go 1.18+ build information blob: header, version, modinfo."""
    mod = INFO_START + modinfo + INFO_END if framed else modinfo
    return (b"\xff Go buildinf:\x08\x02" + bytes(16) + uvarint(len(version)) + version
            + uvarint(len(mod)) + mod)


class CountingFile(io.FileIO):
    """A file that counts what is read through it."""
    total = 0

    def read(self, size=-1):
        got = super().read(size)
        CountingFile.total += len(got)
        return got


@pytest.fixture
def counted(monkeypatch):
    """read_buildinfo's reads, counted (it opens files with the builtin open)."""
    monkeypatch.setattr(buildinfo, "open", lambda path, mode: CountingFile(path, "r"), raising=False)
    CountingFile.total = 0
    return CountingFile


READ_CAP = 4 << 20      # section table + section names + build information: each capped near 1 MiB


def check_hostile(path: Path, counted) -> BuildInfo | None:
    counted.total = 0
    start = time.monotonic()
    info = read_buildinfo(str(path))
    assert time.monotonic() - start < 2
    assert counted.total <= READ_CAP
    read_elf(str(path))                                  # never raises either
    go_version(str(path))
    if info is not None:
        assert isinstance(info.problem, str) and isinstance(info.go_version, str)
        assert info.problem or info.go_version
    return info


def mutants(data: bytes, count: int, seed: int):
    """Seeded mutations of a Go binary where its build information is read:
    flipped bytes in the ELF header, the section header table, the
    .go.buildinfo section header, its name and contents; extreme values in
    the header fields and the section's offset and size; bogus varints;
    cleared flags; truncations."""
    rng = random.Random(seed)
    lay = Layout.of(data)
    regions = [(0, 64), (lay.shoff, lay.shoff + lay.shnum * lay.shentsize), (lay.bi_header, lay.bi_header + 64),
               (lay.bi_name, lay.bi_name + 14), (lay.bi_offset, lay.bi_offset + min(lay.bi_size, 600))]
    extremes = [0, 1, 15, 16, 33, len(data) - 1, len(data), len(data) + 4096, 2**31, 2**32 - 1, 2**63, 2**64 - 1]
    fields = [(0x28, "Q"), (0x3A, "H"), (0x3C, "H"), (0x3E, "H"), (lay.bi_header + 24, "Q"),
              (lay.bi_header + 32, "Q"), (lay.bi_header, "I"), (lay.bi_header + 4, "I")]
    names_header = lay.shoff + lay.shstrndx * lay.shentsize
    fields += [(names_header + 24, "Q"), (names_header + 32, "Q")]
    varint_at = lay.bi_offset + 32
    for _ in range(count):
        out = bytearray(data)
        kind = rng.randrange(6)
        if kind == 0:                                    # flip bytes in one region
            lo, hi = rng.choice(regions)
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        elif kind == 1:                                  # random bytes over one region
            lo, hi = rng.choice(regions)
            at = rng.randrange(lo, hi)
            n = rng.randint(1, 32)
            out[at:at + n] = rng.randbytes(n)
        elif kind == 2:                                  # an extreme header or section field
            at, fmt = rng.choice(fields)
            value = rng.choice(extremes) % (1 << (8 * struct.calcsize(fmt)))
            struct.pack_into("<" + fmt, out, at, value)
        elif kind == 3:                                  # bogus varints for the two lengths
            bogus = rng.choice([b"\xff" * 10 + b"\x01", b"\x80" * 12, uvarint(2**62), uvarint(MAX_MODINFO + 1),
                                uvarint(lay.bi_size), b"\x00", uvarint(2**64 - 1)])
            at = varint_at if rng.random() < 0.5 else varint_at + 1 + 8    # the version's, or the modinfo's
            out[at:at + len(bogus)] = bogus
        elif kind == 4:                                  # flags: pre-1.18 pointers, or other bits
            out[lay.bi_offset + 15] = rng.choice([0, 1, 3, 0xFF])
            out[lay.bi_offset + 14] = rng.choice([0, 4, 8, 255])
        else:                                            # truncated somewhere that matters
            lo, hi = rng.choice(regions)
            out = out[:rng.randrange(lo, hi)]
        yield bytes(out)


def test_mutated_binaries_never_raise_nor_read_unboundedly(sample, tmp_path, counted):
    start = time.monotonic()
    path = tmp_path / "mutant"
    problems: dict[str, int] = {}
    for data in mutants(sample, 400, seed=12):
        path.write_bytes(data)
        info = check_hostile(path, counted)
        if info is not None and info.problem:
            problems[info.problem.split(" (")[0]] = problems.get(info.problem.split(" (")[0], 0) + 1
    assert time.monotonic() - start < 60
    # The mutations reached the reader's refusals, not only the happy path.
    assert len(problems) >= 8, problems


def test_mutated_binaries_still_give_a_valid_document(sample, tmp_path, counted):
    path = tmp_path / "chaincode"
    seen = 0
    for i, data in enumerate(mutants(sample, 60, seed=7)):
        path.write_bytes(data)
        info = read_buildinfo(str(path))
        data_, problems = describe(DIGEST, AMD64, [AddedFile("/usr/local/bin/chaincode", str(path))],
                                   BaseInfo("static"), 0, "0.1.0")
        doc = validated(data_, tmp_path / f"m{i}.json")
        if info is not None and (info.problem or info.main is None):
            seen += 1
            assert len(problems) == 1 and problems[0].startswith("/usr/local/bin/chaincode: ")
            binary = next(f for f in doc["files"] if f["fileName"] == "./usr/local/bin/chaincode")
            assert problems[0].split(": ", 1)[1] in binary["comment"]
        else:
            assert problems == []
    assert seen >= 10


def test_the_old_format_and_a_hidden_section_are_problems_not_crashes(sample, tmp_path, counted):
    lay = Layout.of(sample)
    old = bytearray(sample)
    old[lay.bi_offset + 15] &= ~2 & 0xFF                 # flag 2 off: the pre-1.18 pointer format
    hidden = bytearray(sample)
    hidden[lay.bi_name:lay.bi_name + 13] = bytes(13)      # the section's name zeroed
    for data, problem in ((old, "build information in the pre-Go 1.18 format"),
                          (hidden, "no .go.buildinfo section")):
        path = tmp_path / "chaincode"
        path.write_bytes(bytes(data))
        assert check_hostile(path, counted) == BuildInfo(problem=problem)
        assert go_version(str(path)) is None
        doc, problems = describe(DIGEST, AMD64, [AddedFile("/usr/local/bin/chaincode", str(path))],
                                 BaseInfo("static"), 0, "0.1.0")
        assert problems == [f"/usr/local/bin/chaincode: {problem}; its modules are not listed"]
        parsed = validated(doc, tmp_path / "doc.json")
        assert go_packages(parsed) == set()
        assert problem in next(f for f in parsed["files"] if f["fileName"] == "./usr/local/bin/chaincode")["comment"]


HOSTILE_MODINFO = [
    b"path\tex ample.com/a b\nmod\tex ample.com/a b\t(devel)\t\ndep\ta@b?c#d%e\tv1\th1:not base64!\n",
    b"path\t\xff\xfe\nmod\t\xc3\t\xe9\t\ndep\t\x01\x02/\x7f\tv1.0.0\th1:" + base64.b64encode(bytes(31)) + b"\n",
    b"mod\t\t\t\ndep\t/\t\t\ndep\t//\tv0\th1:" + base64.b64encode(bytes(32)) + b"\n",
    b"=>\tx\ty\tz\n",                                     # a replacement of nothing
    b"mod\ta\tb\t\n=>\tc\td\te\n=>\tf\tg\th\n",           # two in a row
    b"dep\tonly-one-column\n",
    b"build\t\"we ird\"=\"a\\tb\\x01\\u00e9\\U0001F600\\377\"\nbuild\tk=\nbuild\t`raw\r`=`v`\n",
    b"build\tk=\"unterminated\nbuild\t=v\nbuild\tnoequals\n",
    b"build\tk=\"\\q\"\n", b"build\tk=\"\\ud800\"\n", b"build\tk=\"\\U00110000\"\n", b"build\tk=a b\n",
    b"dep\tx\tv1\n" * 40000,                              # many modules, under the cap
    b"path\tp\nmod\tp\t(devel)\t\n" + b"dep\tgolang.org/x/" + b"y" * 5000 + b"\tv1.0.0\t\n",
    b"\n\n\nno newline at the end",
]


def test_hostile_modinfo_gives_a_problem_or_data_and_a_valid_document(sample, tmp_path, counted):
    path = tmp_path / "chaincode"
    for i, text in enumerate(HOSTILE_MODINFO):
        path.write_bytes(with_buildinfo(sample, blob(text)))
        info = check_hostile(path, counted)
        assert info is not None and info.go_version == "go1.24.4"
        data, problems = describe(DIGEST, AMD64, [AddedFile("/usr/local/bin/chaincode", str(path))],
                                  BaseInfo("static"), 0, "0.1.0")
        validated(data, tmp_path / f"doc{i}.json")
        assert len(problems) == (1 if info.problem or info.main is None else 0)
    # Go's quoting, undone as runtime/debug.ParseBuildInfo does.
    path.write_bytes(with_buildinfo(sample, blob(HOSTILE_MODINFO[6])))
    assert read_buildinfo(str(path)) == BuildInfo("go1.24.4", settings=(
        ("we ird", "a\tb\x01é\U0001F600\ufffd"), ("k", ""), ("raw", "v")), problem="modinfo that is not UTF-8")
    path.write_bytes(with_buildinfo(sample, blob(b"dep\tx\tv1\n" * 40000)))
    assert read_buildinfo(str(path)) == BuildInfo("go1.24.4", deps=(Module("x", "v1"),) * 40000)


@pytest.mark.parametrize("case, problem", [
    ("over the cap", f"a modinfo longer than {MAX_MODINFO} bytes ({MAX_MODINFO + 1})"),
    ("huge length", f"a modinfo longer than {MAX_MODINFO} bytes ({2**62})"),
    ("truncated", "a truncated modinfo"),
    ("unframed", "modinfo without its start and end markers"),
    ("empty version", "an empty Go version"),
    ("long version", "a Go version longer than 256 bytes (300)"),
    ("no modinfo", "no modinfo"),
    ("malformed line", "a malformed modinfo line (2)"),
])
def test_each_refusal_says_what_could_not_be_read(sample, tmp_path, counted, case, problem):
    good = INFO_START + b"path\tp\n" + INFO_END
    head = b"\xff Go buildinf:\x08\x02" + bytes(16) + uvarint(8) + b"go1.24.4"
    blobs = {
        "over the cap": head + uvarint(MAX_MODINFO + 1) + bytes(MAX_MODINFO + 1),
        "huge length": head + uvarint(2**62) + good,
        "truncated": head + uvarint(len(good) + 1) + good,
        "unframed": blob(b"path\tp\n", framed=False),
        "empty version": blob(b"path\tp\n", version=b""),
        "long version": blob(b"path\tp\n", version=b"go" * 150),
        "no modinfo": head,
        "malformed line": blob(b"path\tp\nmod\tonly\n"),
    }
    path = tmp_path / "chaincode"
    path.write_bytes(with_buildinfo(sample, blobs[case]))
    info = check_hostile(path, counted)
    assert info is not None and info.problem == problem
    if case not in ("empty version", "long version"):
        assert info.go_version == "go1.24.4"           # what came before the trouble is kept
    if case == "malformed line":
        assert info.path == "p"


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_build_information_bytes_are_read_without_raising(sample, tmp_path, counted, raw):
    path = tmp_path / "chaincode"
    path.write_bytes(with_buildinfo(sample, b"\xff Go buildinf:\x08\x02" + bytes(16) + raw))
    check_hostile(path, counted)
    path.write_bytes(with_buildinfo(sample, blob(raw)))
    info = check_hostile(path, counted)
    assert info is not None and info.go_version == "go1.24.4"


_PATHS = st.text(st.characters(codec="utf-8", exclude_characters="\t\n\r"), min_size=1, max_size=20)
_SETTING = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(_PATHS, _PATHS, st.booleans()), max_size=5),
       st.lists(st.tuples(_SETTING.filter(bool), _SETTING), max_size=5))
def test_modinfo_written_as_go_writes_it_reads_back(sample, tmp_path, counted, deps, settings_):
    """Modules and settings (any text; keys and values quoted where Go
    quotes them) read back as they were written."""
    def quoted(text: str, key: bool) -> str:
        needs = any(c in text for c in " \t\r\n\"`") or (key and "=" in text)
        return json.dumps(text, ensure_ascii=False) if needs else text
    lines = ["path\tmain/pkg", "mod\tmain/pkg\t(devel)\t"]
    want = []
    for path_, version, replaced in deps:
        if replaced:
            lines += [f"dep\t{path_}\t{version}", f"=>\t{path_}.fork\t{version}\th1:x", ""]
            want.append(Module(path_, version, "", Module(path_ + ".fork", version, "h1:x")))
        else:
            lines.append(f"dep\t{path_}\t{version}\th1:y")
            want.append(Module(path_, version, "h1:y"))
    lines += [f"build\t{quoted(k, True)}={quoted(v, False)}" for k, v in settings_]
    file = tmp_path / "chaincode"
    file.write_bytes(with_buildinfo(sample, blob(("\n".join(lines) + "\n").encode())))
    info = check_hostile(file, counted)
    assert info == BuildInfo("go1.24.4", "main/pkg", Module("main/pkg", "(devel)"), tuple(want), tuple(settings_))


def test_a_huge_section_table_or_section_is_not_read_whole(sample, tmp_path, counted):
    lay = Layout.of(sample)
    path = tmp_path / "chaincode"
    big = bytearray(sample) + bytes(8 << 20)             # room for what a lying header claims
    struct.pack_into("<H", big, 0x3C, 0xFFFF)            # 65535 sections (over the 4096 looked at)
    path.write_bytes(bytes(big))
    assert check_hostile(path, counted) == BuildInfo(problem="too many sections (65535)")
    big = bytearray(sample) + bytes(8 << 20)
    struct.pack_into("<Q", big, lay.bi_header + 32, len(big) - lay.bi_offset)   # a .go.buildinfo of ~11 MiB
    path.write_bytes(bytes(big))
    info = check_hostile(path, counted)
    assert info is not None and not info.problem and info.go_version == "go1.24.4"   # the start is what counts
    assert counted.total < 1 << 16                       # what the lengths say, not the 11 MiB
