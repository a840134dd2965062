"""Opening a chaincode package as untrusted input, and finding its Go
source the way a Fabric peer does.

    pkg = open_package("asset.tar.gz", work_dir)     # kind from content, not name
    src = go_source(pkg)                             # the peer's build rules, in order

A lifecycle package (2.x) is a gzip tar holding metadata.json and
code.tar.gz; a legacy package (1.x) is a protobuf ChaincodeDeploymentSpec
(or the signed Envelope around one); a directory is Go source as before.
Everything is checked and extracted here, into a new directory inside
`work_dir`, before any container exists."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from ..diagnoses import LANGUAGE_OF_TYPE, describe_content, other_language, refuse_other_languages
from ..errors import InputError, PackageError
from ..gosource import GOPATH, READONLY, VENDOR, GoSource, detect, module_path
from ..oci.compression import GZIP_MAGIC
from ..oci.digest import is_digest
from ..oci.entries import kind_name
from ..progress import human_size
from . import cds
from .common import LABEL_RULE, Limits, show, valid_label
from .extract import (
    DIR,
    FILE,
    HARDLINK,
    SYMLINK,
    Extractor,
    FileWindow,
    Inflater,
    TarMember,
    TarReader,
    clean_name,
    extract,
    inside,
    regular_file,
)

LIFECYCLE, LEGACY, DIRECTORY = "lifecycle", "cds", "directory"
CHAINCODE_TYPES = ("golang", "node", "java", "ccaas", "k8s", "external")
METADATA, CODE = "metadata.json", "code.tar.gz"
INDEXES = "META-INF/statedb/couchdb/indexes"

_IMPORT_PATH = re.compile(r"[A-Za-z0-9._~+\-]+(?:/[A-Za-z0-9._~+\-]+)*", re.ASCII)
_CC_NAME = re.compile(r"[a-zA-Z0-9]+(?:[-_][a-zA-Z0-9]+)*", re.ASCII)      # Fabric 1.x lscc rules
_CC_VERSION = re.compile(r"[A-Za-z0-9_.+\-]+", re.ASCII)

# What a package is, for the messages refusing a file that is none.
LIFECYCLE_IS = "a gzip-compressed tar holding metadata.json and code.tar.gz (`peer lifecycle chaincode package`)"


@dataclass(frozen=True)
class ChaincodePackage:
    """An opened package. `code_dir` holds what the peer would unpack from
    the code package (src/..., META-INF/...), or is the directory given."""
    kind: str                 # LIFECYCLE, LEGACY or DIRECTORY
    source: str               # the path given
    type: str                 # "golang", "ccaas", "k8s", "node", "java", "external" (lower case)
    code_dir: str
    path: str = ""            # Go import path (metadata.json path / chaincode_id.path)
    label: str = ""           # lifecycle
    package_id: str = ""      # lifecycle: <label>:<sha256 of the package file>
    name: str = ""            # legacy
    version: str = ""         # legacy
    signed: bool = False      # legacy, wrapped in a signed Envelope
    connection: Mapping | None = None   # ccaas: connection.json, checked
    image: Mapping | None = None        # k8s: image.json, checked

    @property
    def ccid(self) -> str:
        """The chaincode id a 2.x peer uses (image name, CORE_CHAINCODE_ID_NAME):
        the package ID, or name:version for a legacy package."""
        if self.package_id:
            return self.package_id
        if self.name:
            return f"{self.name}:{self.version}"
        return ""

    @property
    def couchdb_indexes(self) -> str | None:
        """META-INF/statedb/couchdb/indexes, for the image, when present."""
        p = os.path.join(self.code_dir, *INDEXES.split("/"))
        if os.path.isdir(p) and inside(self.code_dir, p):
            return p
        return None


# -- opening ----------------------------------------------------------------

def open_package(path: str, work_dir: str, limits: Limits = Limits()) -> ChaincodePackage:
    """Open a lifecycle package, a legacy CDS or a directory, detected from
    content. Packages are checked and extracted into a new directory inside
    `work_dir` (removed again if the package is refused; otherwise the
    caller's to clean). Raises PackageError (an InputError) on any package
    it refuses."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"cannot read {path!r}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return ChaincodePackage(DIRECTORY, path, "golang", os.path.abspath(path))
    if not stat.S_ISREG(st.st_mode):
        raise PackageError(f"{path!r} is not a regular file or a directory; expected a chaincode package "
                           "(not a regular file)", rule="not a regular file")
    if not os.path.isdir(work_dir):
        raise InputError(f"work directory {work_dir!r} does not exist")
    work = tempfile.mkdtemp(prefix="package-", dir=work_dir)
    try:
        os.chmod(work, 0o755)
        code_dir = os.path.join(work, "code")
        os.mkdir(code_dir)
        os.chmod(code_dir, 0o755)
        fd = _open_regular(path)
        try:
            length = os.fstat(fd).st_size
            head = os.pread(fd, 512, 0)
            if not head:
                raise PackageError(f"{path!r} is empty; expected a chaincode package (empty file)",
                                   rule="empty file")
            if head.startswith(GZIP_MAGIC):
                return _open_lifecycle(fd, length, path, code_dir, limits)
            if len(head) == 512 and head[257:262] == b"ustar":
                raise PackageError(f"{path!r} is an uncompressed tar; a lifecycle package is gzip-compressed, "
                                   "as `peer lifecycle chaincode package` writes it (not gzip)", rule="not gzip")
            return _open_legacy(fd, length, path, head, code_dir, limits)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _open_regular(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise InputError(f"cannot read {path!r}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PackageError(f"{path!r} is not a regular file (not a regular file)", rule="not a regular file")
    return fd


def _it_is(head: bytes) -> str:
    """" (it is a zip archive)", or "" when the content says nothing known."""
    what = describe_content(head)
    if what.endswith("-compressed"):
        return f" (it is {what}; a package is gzip-compressed)"
    return f" (it is {what})" if what else ""


def _not_a_package(path: str, head: bytes) -> PackageError:
    return PackageError(f"{path!r} is not a chaincode package{_it_is(head)}: expected a lifecycle package, "
                        f"{LIFECYCLE_IS}, or a Fabric 1.x ChaincodeDeploymentSpec (`peer chaincode package`) "
                        "(not a package)", rule="not a package")


def _outer_members(tar: TarReader, path: str) -> Iterator[TarMember]:
    """The members of a lifecycle package; a gzip file whose first header
    is no tar header is refused as what it is, gzip but not a tar."""
    members = iter(tar)
    try:
        first = next(members, None)
    except PackageError as e:
        if e.rule in ("bad header checksum", "truncated"):
            raise PackageError(f"{path!r} is not a chaincode package: it is gzip-compressed, but not a tar "
                               f"archive; expected {LIFECYCLE_IS} ({e.rule})", rule=e.rule) from None
        raise
    if first is not None:
        yield first
        yield from members


def _read_outer(fd: int, length: int, path: str, limits: Limits,
                on_code: Callable[[TarReader], None]) -> tuple[dict, str]:
    """Walk a lifecycle package: metadata.json is read, code.tar.gz handed to
    `on_code` as a stream, other regular files skipped (the peer warns and
    ignores them). Returns (checked metadata, sha256 hex of the whole file)."""
    hasher = hashlib.sha256()
    raw = FileWindow(fd, 0, length, hasher)
    stream = Inflater(raw.read, limits.max_bytes, "package", limits.max_entries)
    tar = TarReader(stream, limits, "package", lambda: stream.remaining)
    meta_bytes = None
    has_code = False
    seen: set[str] = set()
    for m in _outer_members(tar, path):
        clean = clean_name(m.name, limits, "package")
        if clean in seen:
            raise PackageError(f"package entry {show(m.name)} appears more than once (duplicate entry)",
                               entry=m.name, rule="duplicate entry")
        seen.add(clean)
        if m.kind != FILE:
            raise PackageError(f"package entry {show(m.name)} is a {kind_name(m.kind)}; a lifecycle package holds only "
                               "regular files (not a regular file)", entry=m.name, rule="not a regular file")
        if clean in (METADATA, CODE) and m.name != clean:
            raise PackageError(f"package entry {show(m.name)} must be named exactly '{clean}', as the peer "
                               "looks it up (entry name)", entry=m.name, rule="entry name")
        if m.name == METADATA:
            if m.size > limits.max_header:
                raise PackageError(f"package entry 'metadata.json' is {human_size(m.size)}, more than "
                                   f"{human_size(limits.max_header)} (header limit)", entry=m.name, rule="header limit")
            meta_bytes = tar.read(m.size)
        elif m.name == CODE:
            on_code(tar)
            has_code = True
    stream.drain()
    raw.finish()
    if meta_bytes is None:
        raise PackageError(f"{path!r} has no metadata.json, so it is not a chaincode package: expected "
                           f"{LIFECYCLE_IS} (missing metadata)", entry=METADATA, rule="missing metadata")
    if not has_code:
        raise PackageError("package has no code.tar.gz (missing code package)", entry=CODE,
                           rule="missing code package")
    return _metadata(meta_bytes), hasher.hexdigest()


def _no_constant(name: str) -> None:
    # NaN, Infinity: Python's json takes them, Go's encoding/json (the peer) does not.
    raise ValueError(f"{name} is not JSON")


def _metadata(data: bytes) -> dict:
    """metadata.json checked as the peer reads it: a JSON object whose keys
    match type/path/label case-insensitively (Go's encoding/json), string
    values, a known type, a label by Fabric's rule, a path for golang."""
    def fail(problem: str, rule: str):
        raise PackageError(f"metadata.json {problem} ({rule})", entry=METADATA, rule=rule)

    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        fail("is not UTF-8 text", "bad metadata")
    except (ValueError, RecursionError) as e:
        fail(f"is not valid JSON: {str(e).splitlines()[0][:100]}", "bad metadata")
    if not isinstance(obj, dict):
        fail(f"is a JSON {type(obj).__name__ if obj is not None else 'null'}, not an object", "bad metadata")
    found: dict[str, str] = {}
    for key, value in obj.items():
        k = key.lower()
        if k in ("type", "path", "label") and value is not None:
            if not isinstance(value, str):
                fail(f"field {key!r} must be a string", "bad metadata")
            found[k] = value
    kind = found.get("type", "")
    if not kind:
        fail("has no type", "bad metadata")
    if kind.lower() not in CHAINCODE_TYPES:
        fail(f"type {show(kind)} is not a chaincode type Fabric knows ({', '.join(CHAINCODE_TYPES)})",
             "unknown type")
    label = found.get("label", "")
    if not valid_label(label):
        fail(f"label {show(label)} is invalid: a label starts with a letter or digit and holds only "
             f"letters, digits and '_.+-'", f"Fabric's label rule {LABEL_RULE}")
    path = found.get("path", "")
    if kind.lower() == "golang":
        _check_import_path(path, "metadata.json path", METADATA)
    return {"type": kind.lower(), "path": path, "label": label}


def read_metadata_file(path: str, limits: Limits = Limits()) -> dict:
    """An extracted package's metadata.json (an external builder's
    METADATA_DIR), checked as inside a package."""
    data = regular_file(path, limits.max_header, "metadata.json")
    if data is None:
        raise PackageError(f"{path} does not exist; METADATA_DIR must hold the package's metadata.json "
                           "(missing metadata)", entry=METADATA, rule="missing metadata")
    return _metadata(data)


def _check_import_path(path: str, what: str, entry: str = "") -> None:
    if not path:
        raise PackageError(f"{what} is empty; Go chaincode needs its import path (bad import path)",
                           entry=entry, rule="bad import path")
    if (len(path) > 4096 or not _IMPORT_PATH.fullmatch(path)
            or any(p in (".", "..") for p in path.split("/"))):
        raise PackageError(f"{what} {show(path)} is not a Go import path (bad import path)",
                           entry=entry, rule="bad import path")


def _open_lifecycle(fd: int, length: int, path: str, code_dir: str, limits: Limits) -> ChaincodePackage:
    seen: list[TarMember] = []

    def on_code(outer: TarReader) -> None:
        seen.extend(_extract_code(outer.read, code_dir, limits, CODE))

    # Two passes: the first writes nothing, so a package refused for its
    # code (100 001 entries, a duplicate, a link out) costs a read, not
    # 100 000 files made and removed. The second still checks everything:
    # the file may have changed in between.
    planned: list[TarMember] = []
    meta, _ = _read_outer(fd, length, path, limits,
                          lambda outer: planned.extend(_extract_code(outer.read, None, limits, CODE)))
    if meta["type"].lower() == "golang":
        _peer_golang_rules(planned)
    meta, digest = _read_outer(fd, length, path, limits, on_code)
    if meta["type"].lower() == "golang":
        _peer_golang_rules(seen)
    pkg = ChaincodePackage(LIFECYCLE, path, meta["type"], code_dir, path=meta["path"], label=meta["label"],
                           package_id=f"{meta['label']}:{digest}")
    _check_indexes(code_dir, limits)
    if pkg.type == "ccaas":
        pkg = _with_connection(pkg, limits)
    elif pkg.type == "k8s":
        pkg = _with_image(pkg, limits)
    return pkg


def _extract_code(read, code_dir: str | None, limits: Limits, where: str) -> list[TarMember]:
    """Check and extract a code tar.gz into `code_dir`; with None, only check."""
    stream = Inflater(read, limits.max_bytes, where, limits.max_entries)
    tar = TarReader(stream, limits, where, lambda: stream.remaining)
    with Extractor(code_dir, limits, where) as ex:
        extract(tar, ex)
    stream.drain()
    return ex.seen


# The golang platform's ValidateCodePackage (Fabric 2.x), which the peer runs
# at install: every name under src/ or META-INF/ as written, and only
# regular files and directories, with no setuid, setgid or sticky bit.
_PEER_NAME = re.compile(r"(src|META-INF)/")
_SPECIAL_BITS = 0o7000
_TYPE_BITS_ALLOWED = {FILE: (0, 0o100000), DIR: (0, 0o040000), HARDLINK: (0, 0o100000)}


def _peer_golang_rules(members: list[TarMember]) -> None:
    for m in members:
        def fail(problem: str, rule: str, m: TarMember = m) -> None:
            raise PackageError(f"{CODE} entry {show(m.name)} {problem}; the peer refuses it ({rule})",
                               entry=m.name, rule=rule)

        if not _PEER_NAME.match(m.name):
            fail("is outside src/ and META-INF/", "outside src and META-INF")
        if m.kind == SYMLINK:
            fail("is a symbolic link", "link in package")
        if m.raw_mode & _SPECIAL_BITS:
            fail(f"has mode {m.raw_mode & 0o7777:04o} (setuid, setgid or sticky)", "illegal mode")
        if m.raw_mode & ~0o7777 not in _TYPE_BITS_ALLOWED.get(m.kind, (0,)):
            fail(f"has a mode field {m.raw_mode:o} that names another file type", "illegal mode")


def read_lifecycle_metadata(path: str, limits: Limits = Limits()) -> tuple[dict, str]:
    """(checked metadata.json, sha256 hex of the file) of a lifecycle
    package, without extracting its code."""
    fd = _open_regular(path)
    try:
        length = os.fstat(fd).st_size
        head = os.pread(fd, 512, 0)
        if not head:
            raise PackageError(f"{path!r} is empty; expected a lifecycle package (empty file)", rule="empty file")
        if not head.startswith(GZIP_MAGIC):
            raise _not_lifecycle(fd, length, path, head, limits)
        return _read_outer(fd, length, path, limits, lambda outer: None)
    finally:
        os.close(fd)


def _not_lifecycle(fd: int, length: int, path: str, head: bytes, limits: Limits) -> PackageError:
    """Why a file that is no gzip has no package ID: a 1.x package (named
    name:version by its peers), or no package at all."""
    try:
        dep, _ = cds.parse(fd, length, limits.max_header)
    except cds.ProtoError:
        return PackageError(f"{path!r} is not a chaincode package{_it_is(head)}: a package ID is that of a "
                            f"lifecycle package, {LIFECYCLE_IS} (not a lifecycle package)",
                            rule="not a lifecycle package")
    return PackageError(f"{path!r} is a Fabric 1.x package (a ChaincodeDeploymentSpec of {show(dep.name)}), "
                        f"which has no package ID: 1.x peers call it {show(f'{dep.name}:{dep.version}')}; "
                        "a package ID is that of a lifecycle package (not a lifecycle package)",
                        rule="not a lifecycle package")


def _open_legacy(fd: int, length: int, path: str, head: bytes, code_dir: str, limits: Limits) -> ChaincodePackage:
    try:
        dep, signed = cds.parse(fd, length, limits.max_header)
    except cds.ProtoError as e:
        if e.chaincode:
            raise PackageError(f"{path!r} is not a chaincode package ocibuild can read: it starts as a Fabric 1.x "
                               f"ChaincodeDeploymentSpec (of {show(e.chaincode)}), but is damaged or cut short: {e} "
                               "(damaged package)", rule="damaged package") from None
        raise _not_a_package(path, head) from None
    what = "ChaincodeDeploymentSpec"
    if not dep.type:
        raise PackageError(f"{what} has chaincode type {dep.type_code}, not one of "
                           "GOLANG, NODE, CAR, JAVA (unknown type)", rule="unknown type")
    if not _CC_NAME.fullmatch(dep.name):
        raise PackageError(f"{what} chaincode name {show(dep.name)} is invalid: letters and digits, "
                           "separated by single '-' or '_' (Fabric's chaincode name rule)",
                           rule="Fabric's chaincode name rule")
    if not _CC_VERSION.fullmatch(dep.version):
        raise PackageError(f"{what} chaincode version {show(dep.version)} is invalid: letters, digits and "
                           "'_.+-' (Fabric's chaincode version rule)", rule="Fabric's chaincode version rule")
    if dep.type == "golang":
        _check_import_path(dep.path, f"{what} chaincode path")
    _extract_code(FileWindow(fd, *dep.code).read, None, limits, "code package")   # first, write nothing
    _extract_code(FileWindow(fd, *dep.code).read, code_dir, limits, "code package")
    _check_indexes(code_dir, limits)
    return ChaincodePackage(LEGACY, path, dep.type, code_dir, path=dep.path, name=dep.name,
                            version=dep.version, signed=signed)


def _check_indexes(code_dir: str, limits: Limits) -> None:
    """CouchDB index definitions (META-INF/statedb/couchdb/**.json) must be
    JSON objects in regular files, as the peer requires at install."""
    top = os.path.join(code_dir, "META-INF", "statedb", "couchdb")
    if not os.path.isdir(top) or not inside(code_dir, top) or os.path.islink(top):
        return
    for dirpath, dirnames, filenames in os.walk(top):     # never descends through symlinks
        dirnames.sort()
        for fname in sorted(filenames):
            if fname.startswith(".") or not fname.endswith(".json"):
                continue
            full = os.path.join(dirpath, fname)
            rel = os.path.relpath(full, code_dir)
            data = regular_file(full, limits.max_header, f"index {rel}")
            try:
                ok = isinstance(json.loads((data or b"").decode("utf-8")), dict)
            except (UnicodeDecodeError, ValueError, RecursionError):
                ok = False
            if not ok:
                raise PackageError(f"code package entry {show(rel)} is not a JSON object; CouchDB index "
                                   "definitions must be (bad index)", entry=rel, rule="bad index")


def _json_object(code_dir: str, name: str, kind: str, limits: Limits) -> dict:
    data = regular_file(os.path.join(code_dir, name), limits.max_header, f"{kind} package {name}")
    if data is None:
        raise PackageError(f"{kind} package has no {name} in code.tar.gz (missing {name})", entry=name,
                           rule=f"missing {name}")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        raise PackageError(f"{kind} package {name} is not a JSON object (bad {name})", entry=name,
                           rule=f"bad {name}")
    return obj


def _with_connection(pkg: ChaincodePackage, limits: Limits) -> ChaincodePackage:
    conn = _json_object(pkg.code_dir, "connection.json", "ccaas", limits)
    if not isinstance(conn.get("address"), str) or not conn["address"]:
        raise PackageError("ccaas package connection.json has no address (bad connection.json)",
                           entry="connection.json", rule="bad connection.json")
    return replace(pkg, connection=conn)


def _with_image(pkg: ChaincodePackage, limits: Limits) -> ChaincodePackage:
    image = _json_object(pkg.code_dir, "image.json", "k8s", limits)
    if not isinstance(image.get("name"), str) or not image["name"]:
        raise PackageError("k8s package image.json has no image name (bad image.json)", entry="image.json",
                           rule="bad image.json")
    if not is_digest(image.get("digest")):
        raise PackageError("k8s package image.json digest must be sha256:<64 hex digits> (bad image.json)",
                           entry="image.json", rule="bad image.json")
    return replace(pkg, image=image)


# -- Go source ----------------------------------------------------------------

def go_source(pkg: ChaincodePackage, import_path: str | None = None) -> GoSource:
    """The Go source of a package by the peer's build rules, in order:
    src/go.mod + src/vendor/ → vendor mode in src; src/go.mod → readonly
    mode in src; the same two under src/<path>/; otherwise GOPATH mode
    with the package at src/<path>. A directory is read as before
    (`gosource.detect`, with `import_path`)."""
    if pkg.kind == DIRECTORY:
        refuse_other_languages(pkg.code_dir)
        return detect(pkg.code_dir, import_path or pkg.path or None)
    if pkg.type != "golang":
        raise PackageError(f"the package is {_not_golang(pkg.type)} (unsupported type)", rule="unsupported type")
    code = pkg.code_dir
    src = os.path.join(code, "src")
    if not os.path.isdir(src) or not inside(code, src):
        raise PackageError("the code package has no src/ directory; Go chaincode is packaged under src/ "
                           "(missing src)", entry="src", rule="missing src")
    path = pkg.path

    def module_at(root: str) -> str | None:
        if os.path.isfile(os.path.join(root, "go.mod")) and inside(code, os.path.join(root, "go.mod")):
            return VENDOR if os.path.isdir(os.path.join(root, "vendor")) else READONLY
        return None

    mode = module_at(src)
    if mode:
        return GoSource(src, mode, path, target=_module_target(src, path, code))
    pkg_dir = os.path.join(src, *path.split("/"))
    in_tree = os.path.isdir(pkg_dir) and inside(code, pkg_dir)
    mode = module_at(pkg_dir) if in_tree else None
    if mode:
        return GoSource(pkg_dir, mode, path)
    if not in_tree or not any(n.endswith(".go") for n in os.listdir(pkg_dir)):
        raise PackageError(f"no Go package at src/{path} in the code package: without src/go.mod or "
                           f"src/{path}/go.mod the peer builds in GOPATH mode, from src/{path} "
                           "(missing Go package)", entry=f"src/{path}", rule="missing Go package")
    return GoSource(pkg_dir, GOPATH, path, gopath_root=code)


def _not_golang(kind: str) -> str:
    """`the package is …`: what a package of another type is, and what to do."""
    if kind in LANGUAGE_OF_TYPE:
        return other_language(LANGUAGE_OF_TYPE[kind])
    if kind == "ccaas":
        return ("a ccaas package: its chaincode runs as a server (connection.json says where), "
                "so there is nothing to compile")
    if kind == "k8s":
        return "a k8s package: it names an image (image.json) to run, so there is nothing to compile"
    return f"{kind} chaincode; ocibuild compiles only golang chaincode"


def _module_target(src: str, path: str, code: str) -> str:
    """What to build in a module rooted at src/: the peer runs `go build
    <path>` there, so <path> must be the module or one of its packages."""
    data = regular_file(os.path.join(src, "go.mod"), 1 << 20, "src/go.mod") or b""
    module = module_path(data.decode("utf-8", "replace"))
    if not module:
        raise PackageError("src/go.mod has no module directive (bad go.mod)", entry="src/go.mod",
                           rule="bad go.mod")
    if path == module:
        return "."
    if path.startswith(module + "/"):
        rel = path[len(module) + 1:]
        sub = os.path.join(src, *rel.split("/"))
        if not os.path.isdir(sub) or not inside(code, sub):
            raise PackageError(f"metadata path {show(path)} names package {show(rel)} of module "
                               f"{show(module)}, but src/{rel} does not exist (missing Go package)",
                               entry=f"src/{rel}", rule="missing Go package")
        return "./" + rel
    raise PackageError(f"metadata path {show(path)} is not module {show(module)} (src/go.mod) nor one of its "
                       f"packages; the peer's `go build {path}` in src/ would fail (path outside module)",
                       entry="src/go.mod", rule="path outside module")

