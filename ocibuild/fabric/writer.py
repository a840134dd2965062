"""Writing lifecycle packages: golang (as `peer lifecycle chaincode package`
lays them out), ccaas (a connection.json) and k8s (an image.json).

Deterministic: entries sorted, fixed modes and owners (files 0644, dirs
0755, uid/gid 500 inside code.tar.gz, as the peer CLI writes them), one
mtime for all (0, or SOURCE_DATE_EPOCH as given), gzip from the pinned
compressor with no time or name in its header. The same inputs give the
same bytes, so the same package ID. Written to a temporary file beside
the output and renamed into place."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile

from ..errors import InputError, OutputError, PackageError
from ..fsutil import publish, staging_prefix, sweep_stale, unlink_quietly, walk
from ..gosource import module_path
from ..oci.compression import compression
from ..oci.digest import HashingWriter, hex_of, is_digest
from ..oci.entries import DIR, FILE, SYMLINK, Entry
from ..oci.tarwriter import end_archive, write_member, write_tar
from .common import LABEL_RULE, Limits, valid_label
from .package import _IMPORT_PATH, CODE, METADATA

FABRIC_UID = 500          # the peer CLI's owner for code.tar.gz entries
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h)"
                       r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))*")
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+):[0-9]{1,5}", re.ASCII)


# -- public -------------------------------------------------------------------

def write_golang(out: str, source: str, label: str, path: str | None = None,
                 layout: str = "auto", mtime: int = 0) -> str:
    """A golang lifecycle package of the Go source in `source`; returns its
    package ID.

    layout "module" (the default when `source` has go.mod, and what the peer
    CLI writes): src/ is the module root; `path` is the package's import
    path, the module path by default, or one of its packages; META-INF is
    taken from that package's directory. layout "path": src/<path>/ holds
    `source` (a module there, or a GOPATH-mode package, with any vendor/ it
    has: dependencies outside it are not collected). In both, hidden
    directories are left out and META-INF goes to the top of code.tar.gz."""
    _check_label(label)
    _check_mtime(mtime)
    if not os.path.isdir(source):
        raise InputError(f"{source!r} is not a directory; give the Go chaincode's directory")
    source = os.path.abspath(source)
    gomod = os.path.join(source, "go.mod")
    if layout == "auto":
        layout = "module" if os.path.isfile(gomod) else "path"
    if layout == "module":
        if not os.path.isfile(gomod):
            raise InputError(f"{source!r} has no go.mod; use the 'path' layout (GOPATH mode) and give --path")
        module = module_path(_read_text(gomod))
        if not module:
            raise InputError(f"{gomod!r} has no module directive")
        path = path or module
        _check_import_path(path)
        if path != module and not path.startswith(module + "/"):
            raise InputError(f"path {path!r} is not module {module!r} nor one of its packages")
        rel = path[len(module) + 1:] if path != module else ""
        if rel and not os.path.isdir(os.path.join(source, *rel.split("/"))):
            raise InputError(f"package {path!r} has no directory {rel!r} in {source!r}")
        meta_root = os.path.join(source, *rel.split("/"), "META-INF") if rel else os.path.join(source, "META-INF")
        prefix = "src"
    elif layout == "path":
        if not path:
            raise InputError("the 'path' layout needs the import path (--path) the package is built as")
        _check_import_path(path)
        meta_root = os.path.join(source, "META-INF")
        prefix = "src/" + path
    else:
        raise InputError(f"unknown package layout {layout!r}: use auto, module or path")
    files = _walk(source, prefix, skip=meta_root)
    if not any(p.endswith(".go") for p in files):
        raise InputError(f"{source!r} holds no .go files; it is not Go chaincode")
    if os.path.isdir(meta_root):
        files.update(_meta_inf(meta_root))
    metadata = {"path": path, "type": "golang", "label": label}    # the peer's field order
    return _write_package(out, metadata, _code_entries(files), mtime)


def write_ccaas(out: str, label: str, address: str, dial_timeout: str = "10s",
                tls_required: bool = False, client_auth_required: bool = False,
                root_cert: str | None = None, client_cert: str | None = None,
                client_key: str | None = None, meta_inf: str | None = None, mtime: int = 0) -> str:
    """A ccaas package: code.tar.gz holds connection.json (address,
    dial_timeout, tls_required, and the TLS fields given, PEM text), plus
    META-INF from `meta_inf` when given. Returns the package ID."""
    _check_label(label)
    _check_mtime(mtime)
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise InputError(f"chaincode address {address!r} must be host:port, e.g. asset-cc.example.com:9999")
    if not _DURATION.fullmatch(dial_timeout or ""):
        raise InputError(f"dial timeout {dial_timeout!r} must be a Go duration, e.g. 10s or 1m30s")
    conn: dict = {"address": address, "dial_timeout": dial_timeout, "tls_required": bool(tls_required)}
    if tls_required:
        conn["client_auth_required"] = bool(client_auth_required)
    for key, value in (("root_cert", root_cert), ("client_cert", client_cert), ("client_key", client_key)):
        if value is not None:
            if not tls_required:
                raise InputError(f"{key} is given but TLS is not required; add tls_required or drop it")
            conn[key] = value
    if client_auth_required and not (client_cert and client_key):
        raise InputError("client_auth_required needs client_cert and client_key")
    files: dict[str, str | bytes] = {"connection.json": _json_bytes(conn, indent=2)}
    files.update(_meta_inf(meta_inf) if meta_inf else {})
    return _write_package(out, {"type": "ccaas", "label": label}, _code_entries(files), mtime)


def write_k8s(out: str, label: str, name: str, digest: str, meta_inf: str | None = None,
              mtime: int = 0) -> str:
    """A k8s package (for the Kubernetes builder, which runs images by
    digest): code.tar.gz holds image.json {"name", "digest"}, plus META-INF
    from `meta_inf` when given. Returns the package ID."""
    _check_label(label)
    _check_mtime(mtime)
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or "@" in name:
        raise InputError(f"image name {name!r} must be a repository name without tag or digest, "
                         "e.g. registry.example.com/asset-cc")
    if not is_digest(digest):
        raise InputError(f"image digest {digest!r} must be sha256:<64 hex digits>")
    files: dict[str, str | bytes] = {"image.json": _json_bytes({"name": name, "digest": digest}, indent=2)}
    files.update(_meta_inf(meta_inf) if meta_inf else {})
    return _write_package(out, {"type": "k8s", "label": label}, _code_entries(files), mtime)


# -- helpers ------------------------------------------------------------------

def _check_label(label: str) -> None:
    if not valid_label(label):
        raise InputError(f"label {label!r} is invalid: it must start with a letter or digit and hold only "
                         f"letters, digits and '_.+-' (Fabric's rule {LABEL_RULE})")


def _check_mtime(mtime: int) -> None:
    if not isinstance(mtime, int) or not 0 <= mtime < 8 ** 11:
        raise InputError(f"mtime {mtime!r} must be a non-negative whole number of seconds (SOURCE_DATE_EPOCH)")


def _check_import_path(path: str) -> None:
    if not _IMPORT_PATH.fullmatch(path) or any(p in (".", "..") for p in path.split("/")):
        raise InputError(f"{path!r} is not a Go import path, e.g. github.com/example/asset-cc")


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace")
    except OSError as e:
        raise InputError(f"cannot read {path!r}: {e.strerror}") from None


def _json_bytes(obj: dict, indent: int | None = None) -> bytes:
    if indent:
        return (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _walk(top: str, prefix: str, skip: str | None) -> dict[str, str | bytes]:
    """Archive name → host path of every file under `top`, in the peer CLI's
    manner: hidden directories left out, symlinks to files read as the
    files they point to; `skip` (META-INF) left out."""
    out: dict[str, str | bytes] = {}

    def descend(full: str, name: str) -> bool:
        return not (name.startswith(".") or (skip and os.path.abspath(full) == os.path.abspath(skip)))

    for full, arc, lst in walk(top, prefix, descend):
        if not stat.S_ISDIR(lst.st_mode):
            out[arc] = _regular(full, lst)
    return out


def _regular(full: str, lst: os.stat_result) -> str:
    if stat.S_ISLNK(lst.st_mode):
        try:
            st = os.stat(full)
        except OSError:
            raise InputError(f"{full!r} is a symlink to nothing; remove it or make it a file") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{full!r} is a symlink to a directory, which a package cannot carry; "
                             "copy the directory instead")
        lst = st
    if not stat.S_ISREG(lst.st_mode):
        raise InputError(f"{full!r} is not a regular file (a device, fifo or socket); remove it")
    if not os.access(full, os.R_OK):
        raise InputError(f"cannot read {full!r}: permission denied")
    return full


def _meta_inf(root: str) -> dict[str, str | bytes]:
    """META-INF/... from `root`, hidden files left out; CouchDB index
    definitions checked to be JSON objects, as the peer CLI checks them."""
    if not os.path.isdir(root):
        raise InputError(f"META-INF source {root!r} is not a directory")
    files = _walk(root, "META-INF", skip=None)
    out: dict[str, str | bytes] = {}
    for arc, host in files.items():
        if arc.rsplit("/", 1)[-1].startswith("."):
            continue
        if arc.startswith("META-INF/statedb/couchdb/") and arc.endswith(".json"):
            try:
                ok = isinstance(json.loads(host if isinstance(host, bytes) else _read_text(host)), dict)
            except (ValueError, RecursionError):
                ok = False
            if not ok:
                raise InputError(f"{host!r} is not a JSON object; CouchDB index definitions must be")
        out[arc] = host
    return out


def _code_entries(files: dict[str, str | bytes]) -> list[Entry]:
    """Sorted entries: every file (0644) and every directory above one (0755)."""
    entries: dict[str, Entry] = {}
    for arc, content in files.items():
        parts = arc.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            entries.setdefault(d, Entry(d, DIR, 0o755, FABRIC_UID, FABRIC_UID))
        if isinstance(content, bytes):
            entries[arc] = Entry(arc, FILE, 0o644, FABRIC_UID, FABRIC_UID, size=len(content), data=content)
        else:
            try:
                n = os.stat(content).st_size
            except OSError as e:
                raise InputError(f"cannot read {content!r}: {e.strerror}") from None
            entries[arc] = Entry(arc, FILE, 0o644, FABRIC_UID, FABRIC_UID, size=n, source=content)
    return sorted(entries.values(), key=Entry.sort_key)


def _write_package(out: str, metadata: dict, code: list[Entry], mtime: int) -> str:
    out = os.path.abspath(out)
    out_dir = os.path.dirname(out)
    if not os.path.isdir(out_dir):
        raise InputError(f"cannot write {out!r}: directory {out_dir!r} does not exist")
    gzip = compression("gzip")
    meta = _json_bytes(metadata)
    try:
        tag = f".{os.path.basename(out)}."
        sweep_stale(out_dir, tag, ".tmp")
        tmp_fd, tmp = tempfile.mkstemp(prefix=staging_prefix(tag), suffix=".tmp", dir=out_dir)
    except OSError as e:
        raise OutputError(f"cannot write in {out_dir!r}: {e.strerror}") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir) as code_file:
            gz = gzip.writer(code_file)
            write_tar(code, gz, mtime)
            gz.close()
            code_size = code_file.tell()
            code_file.seek(0)
            with os.fdopen(tmp_fd, "wb") as f:
                tmp_fd = -1
                hashing = HashingWriter(f)
                gz = gzip.writer(hashing)
                write_member(gz, METADATA, len(meta), io.BytesIO(meta), mtime)
                write_member(gz, CODE, code_size, code_file, mtime)
                end_archive(gz)
                gz.close()
                f.flush()
                os.fsync(f.fileno())
        publish(tmp, out)
    except OSError as e:
        raise OutputError(f"cannot write {out!r}: {e.strerror}") from None
    finally:
        if tmp_fd >= 0:
            os.close(tmp_fd)
        unlink_quietly(tmp)                 # after publish(): already gone
    return f"{metadata['label']}:{hex_of(hashing.digest)}"


def repack_extracted(out: str, code_dir: str, metadata: dict, limits: Limits) -> None:
    """The lifecycle package a peer extracted into `code_dir` (its
    code.tar.gz, as an external builder gets it), made into a package file
    again at `out`, so it is read by exactly the rules `ocibuild build PKG`
    applies. Nothing is followed or normalised away that the reader must
    judge: symlinks stay symlinks (refused there, as the peer refuses them),
    file modes keep their executable bits; devices, fifos and sockets are
    refused here. Bounded by `limits` (entries, total bytes)."""
    entries: list[Entry] = []
    total = 0

    def fail(arc: str, problem: str, rule: str) -> None:
        raise PackageError(f"SOURCE_DIR entry {arc!r} {problem} ({rule})", entry=arc, rule=rule)

    for full, arc, lst in walk(code_dir, "", lambda full, name: True):
        if len(entries) >= limits.max_entries:
            fail(arc, f"is past the {limits.max_entries} entries a package may hold", "entry limit")
        mode = 0o755 if lst.st_mode & 0o111 else 0o644
        if stat.S_ISDIR(lst.st_mode):
            entries.append(Entry(arc, DIR, 0o755, FABRIC_UID, FABRIC_UID))
        elif stat.S_ISLNK(lst.st_mode):
            entries.append(Entry(arc, SYMLINK, 0o777, FABRIC_UID, FABRIC_UID, link=os.readlink(full)))
        elif stat.S_ISREG(lst.st_mode):
            total += lst.st_size
            if total > limits.max_bytes:
                fail(arc, f"takes the code past {limits.max_bytes} bytes", "size limit")
            entries.append(Entry(arc, FILE, mode, FABRIC_UID, FABRIC_UID, size=lst.st_size, source=full))
        else:
            fail(arc, "is a device, fifo or socket", "device and fifo entries are not allowed")
    _write_package(out, metadata, sorted(entries, key=Entry.sort_key), 0)
