"""An SPDX 2.3 JSON document (a software bill of materials) for an image
ocibuild assembled: what it added, what its base holds, and for each Go
binary the modules it was built from, read from the binary itself
(`oci.buildinfo`), not from the source.

Pure and deterministic: no clock, no random identifiers, no `go`; the same
inputs give the same bytes. SPDX identifiers are derived from what they
name (a file's image path, a module's path, version and hash), elements and
relationships are sorted, the creation time is `created`
(SOURCE_DATE_EPOCH), and the document namespace is derived from the image
digest and the document's own content (so it is unique per document, and
the creation time does not change it).

What is in it:
- the image: a CONTAINER package whose version is its manifest digest;
- each added file, with its SHA1 (mandatory in SPDX 2.3) and SHA256, and
  for a built-in base its inline files (/etc/passwd, ...), unless an added
  file replaces one;
- a built-in base's Debian packages (name, version, suite, pool path, the
  .deb's sha256; a purl pkg:deb/debian/...), or an image base as one
  package (its reference and digest; its contents are not itemised);
- for each Go binary: its main module (GENERATED_FROM), the build
  settings (in that package's comment, one KEY=VALUE a line), every
  dependency module (DEPENDS_ON; for a replaced module, the replacement,
  which is what was built, and the comment says what it replaced; the h1:
  hash as a SHA256 checksum, as syft writes it, and verbatim in the
  comment) and the Go standard library of its toolchain (`stdlib`).
A binary whose build information cannot be (fully) read is still listed;
its comment says what could not be read, and the problem is returned for
the caller to report once."""

from __future__ import annotations

import base64
import binascii
import hashlib
import posixpath
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .oci.bases import builtin_definition, builtin_entries
from .oci.buildinfo import BuildInfo, Module, read_buildinfo
from .oci.digest import check_digest, hex_of, is_digest
from .oci.entries import FILE
from .oci.model import Platform, canonical_json, rfc3339

SPDX_JSON = "application/spdx+json"
NOASSERTION = "NOASSERTION"
_CHUNK = 1 << 20
_DISTROS = {"buster": "debian-10", "bullseye": "debian-11", "bookworm": "debian-12",
            "trixie": "debian-13", "forky": "debian-14"}


@dataclass(frozen=True)
class AddedFile:
    image_path: str     # absolute path in the image, e.g. /usr/local/bin/chaincode
    host_path: str      # where to read it now


@dataclass(frozen=True)
class BaseInfo:
    name: str           # a built-in base's name ("static") or the base image reference as the user gave it
    digest: str = ""    # an image base's manifest digest ("" for a built-in base)
    builtin: bool = True


def describe(image_digest: str, platform: Platform, added: Sequence[AddedFile], base: BaseInfo,
             created: int, tool_version: str) -> tuple[bytes, list[str]]:
    """The SPDX 2.3 JSON document for the image, and the problems to report
    once on stderr (e.g. '/usr/local/bin/chaincode: no .go.buildinfo
    section; its modules are not listed'). InputError if an added file
    cannot be read or the built-in base is unknown."""
    check_digest(image_digest)
    doc = _Document()
    files = sorted(added, key=lambda a: a.image_path)
    hashed = [(a, *_hash_file(a.host_path)) for a in files]
    infos = [read_buildinfo(a.host_path) if elf else None for a, _, _, elf in hashed]
    go_binaries = [a.image_path for a, info in zip(files, infos, strict=True) if info and info.go_version]
    name = _image_name(go_binaries + [a.image_path for a, _, _, elf in hashed if elf] + [a.image_path for a in files])
    image = doc.package("Image", name, image_digest, {
        "name": name,
        "versionInfo": image_digest,
        "primaryPackagePurpose": "CONTAINER",
        "filesAnalyzed": True,           # it CONTAINS files (SPDX: only a package whose files were analysed may)
        "checksums": [_checksum("SHA256", hex_of(image_digest))],
        "externalRefs": [_purl("pkg:oci/" + _pct(name) + "@" + _pct(image_digest)
                               + "?arch=" + _pct(platform.architecture))],
        "comment": (f"The OCI image (manifest {image_digest}) for {platform}, assembled by ocibuild "
                    f"{tool_version} from {_base_words(base)} and {len(files)} added file(s). Files listed: "
                    "the added files" + (" and the base's inline files; the base's Debian packages are "
                                         "listed as packages, their files not itemised" if base.builtin else
                                         "; the base image's contents are not itemised")
                    + ". The package is named after the first added Go binary (or ELF file, or file); "
                      "the image's own references are not recorded here."),
    })
    doc.relate("SPDXRef-DOCUMENT", "DESCRIBES", image)
    problems: list[str] = []
    shadowed = {a.image_path for a in files}
    if base.builtin:
        _builtin_base(doc, image, base.name, shadowed)
    else:
        _image_base(doc, image, base)
    for (a, sha1, sha256, elf), info in zip(hashed, infos, strict=True):
        problem = _added(doc, image, a, sha1, sha256, elf, info)
        if problem:
            problems.append(f"{a.image_path}: {problem}")
    out: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"ocibuild image {image_digest}",
        "creationInfo": {"created": rfc3339(created), "creators": [f"Tool: ocibuild-{tool_version}"]},
        "packages": [doc.packages[k] for k in sorted(doc.packages)],
        "files": [doc.files[k] for k in sorted(doc.files)],
        "relationships": [{"spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b}
                          for a, t, b in sorted(doc.relationships)],
    }
    # Unique per document, the same for the same document whatever its creation time.
    content = hashlib.sha256(canonical_json({**out, "creationInfo": {**out["creationInfo"], "created": ""}}))
    out["documentNamespace"] = (f"https://ocibuild.invalid/spdx/images/sha256-{hex_of(image_digest)}/"
                                f"{content.hexdigest()[:32]}")
    return canonical_json(out), problems


class _Document:
    def __init__(self) -> None:
        self.packages: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self.relationships: set[tuple[str, str, str]] = set()

    def package(self, kind: str, label: str, identity: str, fields: dict) -> str:
        """Add a package (once: the same identity is the same package); its SPDXID."""
        spdx_id = _spdx_id(kind, label, identity)
        if spdx_id not in self.packages:
            self.packages[spdx_id] = {"SPDXID": spdx_id, "downloadLocation": NOASSERTION,
                                      "filesAnalyzed": False, "licenseConcluded": NOASSERTION,
                                      "licenseDeclared": NOASSERTION, "copyrightText": NOASSERTION,
                                      **{k: v for k, v in fields.items() if v not in ("", [], None)}}
        return spdx_id

    def file(self, image_path: str, sha1: str, sha256: str, fields: dict) -> str:
        spdx_id = _spdx_id("File", image_path, image_path)
        self.files[spdx_id] = {"SPDXID": spdx_id, "fileName": "./" + image_path.lstrip("/"),
                               "checksums": [_checksum("SHA1", sha1), _checksum("SHA256", sha256)],
                               "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION,
                               **{k: v for k, v in fields.items() if v not in ("", [], None)}}
        return spdx_id

    def relate(self, a: str, kind: str, b: str) -> None:
        self.relationships.add((a, kind, b))


# --- the base ----------------------------------------------------------------------

def _base_words(base: BaseInfo) -> str:
    if base.builtin:
        return f"the built-in base {base.name!r}"
    return f"the base image {base.name}" + (f" ({base.digest})" if base.digest else "")


def _builtin_base(doc: _Document, image: str, name: str, shadowed: set[str]) -> None:
    defn = builtin_definition(name)
    for entry in builtin_entries({"entries": defn.get("entries", [])}):
        path = "/" + entry.path.lstrip("/")
        if entry.kind != FILE or path in shadowed:
            continue
        data = entry.data or b""
        f = doc.file(path, hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest(), {
            "fileTypes": ["TEXT"],
            "comment": f"From the built-in base {name!r} (written by ocibuild from its definition).",
        })
        doc.relate(image, "CONTAINS", f)
    for spec in defn.get("archives", []):
        deb = spec.get("debian")
        if not isinstance(deb, dict):
            continue
        package, version, suite = str(deb["package"]), str(deb["version"]), str(deb.get("suite", ""))
        pool, deb_sha256 = str(deb.get("pool", "")), str(deb.get("deb_sha256", ""))
        arch = m.group(1) if (m := re.search(r"_([a-z0-9-]+)\.deb$", pool)) else ""
        qualifiers = "&".join(q for q in (f"arch={_pct(arch)}" if arch else "",
                                          f"distro={_pct(_DISTROS.get(suite, suite))}" if suite else "") if q)
        p = doc.package("Package-deb", f"{package}-{version}", f"deb\0{package}\0{version}\0{deb_sha256}", {
            "name": package,
            "versionInfo": version,
            "downloadLocation": f"https://deb.debian.org/debian/{pool}" if pool else NOASSERTION,
            "checksums": [_checksum("SHA256", deb_sha256)] if re.fullmatch(r"[0-9a-f]{64}", deb_sha256) else [],
            "externalRefs": [_purl(f"pkg:deb/debian/{_pct(package)}@{_pct(version)}"
                                   + (f"?{qualifiers}" if qualifiers else ""))],
            "comment": (f"Debian {suite} package {pool.rsplit('/', 1)[-1]} (sha256 {deb_sha256}). The image holds "
                        f"the files of ocibuild's built-in base data {spec.get('file', '')} "
                        f"(sha256 {spec.get('sha256', '')}), made from this package by scripts/update-bases; "
                        "they are not itemised here."),
        })
        doc.relate(image, "CONTAINS", p)


def _image_base(doc: _Document, image: str, base: BaseInfo) -> None:
    ref = base.name
    last = re.sub(r"[^a-z0-9._-]+", "-", posixpath.basename(ref.split("@", 1)[0].rstrip("/")).lower())
    last = last.split(":", 1)[0].strip("-.") or "base"
    p = doc.package("Package-base", ref, f"base\0{ref}\0{base.digest}", {
        "name": ref,
        "versionInfo": base.digest,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [_checksum("SHA256", hex_of(base.digest))] if is_digest(base.digest) else [],
        "externalRefs": [_purl(f"pkg:oci/{_pct(last)}@{_pct(base.digest)}")] if is_digest(base.digest) else [],
        "comment": "The base image the image was assembled on (its layers come first); its contents are not "
                   "itemised in this document.",
    })
    doc.relate(image, "CONTAINS", p)


# --- added files and Go binaries ---------------------------------------------------

def _added(doc: _Document, image: str, a: AddedFile, sha1: str, sha256: str, elf: bool,
           info: BuildInfo | None) -> str:
    """List one added file (and, for a Go binary, its modules); the problem to report, or ""."""
    problem, comment = "", ""
    if info is not None:
        problem = _problem(info)
        comment = _binary_words(info, problem)
    f = doc.file(a.image_path, sha1, sha256, {
        "fileTypes": ["BINARY"] if elf else [],
        "comment": comment,
    })
    doc.relate(image, "CONTAINS", f)
    if info is not None:
        _go_packages(doc, f, a.image_path, info)
    return problem


def _hash_file(path: str) -> tuple[str, str, bool]:
    """SHA1 and SHA256 hex of a file, and whether it starts as an ELF file does."""
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    try:
        with open(path, "rb") as f:
            first = f.read(_CHUNK)
            chunk = first
            while chunk:
                sha1.update(chunk)
                sha256.update(chunk)
                chunk = f.read(_CHUNK)
    except OSError as e:
        raise InputError(f"cannot read {path} for the SBOM: {e.strerror or e}") from None
    return sha1.hexdigest(), sha256.hexdigest(), first.startswith(b"\x7fELF")


def _problem(info: BuildInfo) -> str:
    if info.problem:
        listed = info.main is not None or info.deps
        return f"{info.problem}; its module list may be incomplete" if listed else \
            f"{info.problem}; its modules are not listed"
    if info.main is None:
        return "no Go module information (built in GOPATH mode?); its packages are not listed"
    return ""


def _binary_words(info: BuildInfo, problem: str) -> str:
    words = []
    if info.go_version:
        words.append(f"A Go binary built with {info.go_version}"
                     + (f" from the main package {info.path}" if info.path else "") + ".")
    if problem:
        words.append(f"Its Go build information could not be fully read: {problem}.")
    return " ".join(words)


def _go_packages(doc: _Document, f: str, image_path: str, info: BuildInfo) -> None:
    owner, how = f, "CONTAINS"
    if info.main is not None:
        path, version, go_sum, note = _built(info.main)
        settings = "".join(f"\n{_go_quote(k, key=True)}={_go_quote(v)}" for k, v in info.settings)
        owner = doc.package("Package-go-main", f"{path}-{image_path}", f"main\0{image_path}", {
            "name": path or "unnamed",
            "versionInfo": version,
            "primaryPackagePurpose": "APPLICATION",
            "checksums": _h1_checksums(go_sum),
            "externalRefs": _go_purl(path, version),
            "comment": (f"The main module of {image_path} (main package {info.path or 'unknown'}), built with "
                        f"{info.go_version or 'an unknown Go version'}"
                        + (f"; go.sum hash {go_sum}" if go_sum else "") + (f"; {note}" if note else "")
                        + (". Build settings (as go version -m prints them):" + settings if settings
                           else ". No build settings recorded.")),
        })
        doc.relate(f, "GENERATED_FROM", owner)
        how = "DEPENDS_ON"
    for dep in info.deps:
        path, version, go_sum, note = _built(dep)
        r = dep.replace
        identity = ("dep", path, version, go_sum) + ((dep.path, dep.version, dep.sum, r.path) if r else ())
        p = doc.package("Package-go", f"{path}-{version}", "\0".join(identity), {
            "name": path or "unnamed",
            "versionInfo": version,
            "primaryPackagePurpose": "LIBRARY",
            "checksums": _h1_checksums(go_sum),
            "externalRefs": _go_purl(path, version),
            "comment": ("A Go module compiled into the binary" + (f"; go.sum hash {go_sum}" if go_sum else "")
                        + (f"; {note}" if note else "") + "."),
        })
        doc.relate(owner, how, p)
    if info.go_version:
        p = doc.package("Package-go-stdlib", info.go_version, f"stdlib\0{info.go_version}", {
            "name": "stdlib",
            "versionInfo": info.go_version,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": _go_purl("stdlib", info.go_version.split(" ", 1)[0].removeprefix("go")),
            "comment": f"The Go standard library of {info.go_version}, compiled into the binaries built with it.",
        })
        doc.relate(owner, how, p)


def _built(m: Module) -> tuple[str, str, str, str]:
    """(path, version, go.sum hash) of what was built for module `m`, and a
    note on a replacement: the replacement module; for a directory
    replacement, `m`'s path (the directory's go.mod declares it) with the
    directory's version ("(devel)" or none) and no hash."""
    r = m.replace
    if r is None:
        return m.path, m.version, m.sum, ""
    was = " ".join(x for x in (m.path, m.version) if x) + (f" ({m.sum})" if m.sum else "")
    if _is_directory(r.path):
        return (m.path, r.version, "",
                f"a go.mod replace put the directory {r.path} in place of {was}: that directory's code is "
                "what was built, and it has no version or hash of its own")
    return r.path, r.version, r.sum, f"a go.mod replace put it in place of {was}: it is what was built"


def _is_directory(path: str) -> bool:
    """A replacement that is a file path, not a module path (x/mod's modfile.IsDirectoryPath)."""
    return (path in (".", "..") or path.startswith(("./", "../", "/", ".\\", "..\\"))
            or re.match(r"[A-Za-z]:[\\/]", path) is not None)


def _go_quote(text: str, key: bool = False) -> str:
    """A build setting's key or value as `go version -m` prints it: quoted
    (a Go string literal) when it holds spaces, tabs, quotes or newlines."""
    if not any(c in text for c in " \t\r\n\"`") and not (key and (not text or "=" in text)):
        return text
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif c in "\a\b\f\n\r\t\v":
            out.append({"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}[c])
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _h1_checksums(go_sum: str) -> list[dict]:
    """go.sum's h1: hash as a SHA256 checksum (the hex of its base64, as
    syft writes it); none for anything else."""
    if not go_sum.startswith("h1:"):
        return []
    try:
        raw = base64.b64decode(go_sum[3:], validate=True)
    except (binascii.Error, ValueError):
        return []
    return [_checksum("SHA256", raw.hex())] if len(raw) == 32 else []


def _go_purl(path: str, version: str) -> list[dict]:
    segments = [s for s in path.split("/") if s]
    if not segments:
        return []
    at = f"@{_pct(version)}" if version and version != "(devel)" else ""      # (devel): no version
    return [_purl("pkg:golang/" + "/".join(_pct(s) for s in segments) + at)]


# --- small things --------------------------------------------------------------------

def _image_name(paths: Sequence[str]) -> str:
    for path in paths:
        name = re.sub(r"[^a-z0-9._-]+", "-", posixpath.basename(path).lower()).strip("-.")
        if name:
            return name
    return "image"


def _spdx_id(kind: str, label: str, identity: str) -> str:
    """SPDXRef-KIND-LABEL-HASH: readable, and unique by the hash of what it names."""
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-.")[:64].strip("-.")
    digest = hashlib.sha256(f"{kind}\0{identity}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"SPDXRef-{kind}-" + (f"{readable}-" if readable else "") + digest


def _checksum(algorithm: str, value: str) -> dict:
    return {"algorithm": algorithm, "checksumValue": value}


def _purl(locator: str) -> dict:
    return {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator}


def _pct(text: str) -> str:
    """Percent-encoded for a purl component (":" too, as in sha256%3A...)."""
    return urllib.parse.quote(text, safe="", encoding="utf-8", errors="strict")

