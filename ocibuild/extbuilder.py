"""ocibuild as a Fabric peer's external builder and launcher: the four
executables the peer runs (detect, build, release, run), their settings
in a file beside them, and what each does.

    install(directory, settings, interpreter)  -> the core.yaml entry to paste
    build(source_dir, metadata_dir, output_dir, job, settings, env, go_env, progress) -> the digest
        (job: the image options of `ocibuild build`, writing to outputs_for(output_dir, settings))
    release(output_dir, release_dir)
    run(output_dir, run_metadata_dir, settings, progress) -> the chaincode's exit code

`build` makes the image exactly as `ocibuild build PKG` does: the tree the
peer extracted is made into a package file again and read by the same
rules (so a hostile package is refused the same way); only the package-id
annotation is missing (the peer does not pass the package file). The image
stays in BUILD_OUTPUT_DIR (an OCI layout, which the peer keeps across
restarts) and is loaded into the configured engine; `run` reloads it from
there when the engine lacks it, and starts the chaincode as the peer's own
Docker launcher does."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from .build import BuildRequest, ImageJob, build_chaincode
from .builders.warm import WarmSettings
from .errors import InputError
from .fabric.common import Limits
from .fabric.conventions import BINARY_PATH, CHAINCODE_USER, DEFAULT_VERSION, INDEXES_PATH
from .fsutil import atomic_write
from .progress import Progress

SETTINGS = "ocibuild-builder.json"     # in the builder's directory
RECORD = "ocibuild-image.json"         # in BUILD_OUTPUT_DIR: what `run` starts
LAYOUT, TAG = "image", "chaincode"     # BUILD_OUTPUT_DIR/image, an OCI layout
RELEASED = "release"                   # BUILD_OUTPUT_DIR/release: what `release` copies out
INDEXES = tuple(INDEXES_PATH.strip("/").split("/"))     # META-INF/statedb/couchdb/indexes, as packaged
TLS_DIR = "/etc/hyperledger/fabric"
ENGINES = ("podman", "docker", "none")
REINSTALL = "install the builder again with another --engine"
_ADDRESS = re.compile(r"[A-Za-z0-9.\-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}", re.ASCII)


@dataclass(frozen=True)
class Settings:
    """What `fabric install-builder` was told; written to SETTINGS."""
    engine: str = "podman"             # where images are loaded and run; "none": build only
    builder: str = "auto"
    builder_image: str = ""
    go: str = ""
    go_proxy: str = ""
    network: str = "none"              # during the compile
    outputs: tuple[str, ...] = ()      # more outputs (e.g. docker://registry/repo:tag)
    run_network: str = "host"          # the chaincode container's network
    fabric_version: str = DEFAULT_VERSION

    @classmethod
    def read(cls, path: str) -> Settings:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the builder settings {path}: {e}; rerun "
                             "`ocibuild fabric install-builder`") from None
        if not isinstance(doc, dict):
            raise InputError(f"the builder settings {path} are not a JSON object")
        known = {k: doc[k] for k in asdict(cls()) if k in doc}
        outputs = known.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise InputError(f"the builder settings {path}: outputs must be a list of references")
        known["outputs"] = tuple(outputs)
        try:
            settings = cls(**known)
        except TypeError as e:
            raise InputError(f"the builder settings {path} are malformed: {e}") from None
        settings.check()
        return settings

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.network not in ("none", "default"):
            raise InputError(f"network {self.network!r}: use none or default")


# -- install ------------------------------------------------------------------

_WRAPPER = """#!/bin/sh
# ocibuild's external builder for a Fabric peer: `{step}`. Written by
# `ocibuild fabric install-builder`; its settings are in {settings}.
# The peer passes no HOME (podman and the Go caches want one) and, for a
# rootless user, no XDG_RUNTIME_DIR: both are found as a login would.
[ -n "$HOME" ] || HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
[ -n "$XDG_RUNTIME_DIR" ] || [ ! -d "/run/user/$(id -u)" ] || XDG_RUNTIME_DIR=/run/user/$(id -u)
export HOME XDG_RUNTIME_DIR
exec {python} -I -m ocibuild fabric external {step} --settings {settings} "$@"
"""

# detect runs for every installed package at each peer start: a few lines
# of Python with nothing to import (-S: not even site), not the whole CLI.
# Keys are matched without case, as Go's encoding/json (the peer) does.
_DETECT = """#!/bin/sh
# ocibuild's external builder for a Fabric peer: `detect SOURCE METADATA`.
# Exit 0 (claim the package) for golang packages, 1 otherwise; silent.
exec {python} -I -S -c '
import json, sys
try:
    with open(sys.argv[2] + "/metadata.json", encoding="utf-8") as f:
        doc = json.loads(f.read(1 << 20))
    kind = [v for k, v in doc.items() if k.lower() == "type"][0]
except Exception:
    sys.exit(1)
sys.exit(0 if isinstance(kind, str) and kind.lower() == "golang" else 1)
' "$@"
"""


def install(directory: str, settings: Settings, interpreter: str) -> str:
    """DIR/bin/{detect,build,release,run} and DIR/SETTINGS; the core.yaml
    entry to paste into the peer's configuration."""
    settings.check()
    directory = os.path.abspath(directory)
    for what, text in (("the builder directory", directory), ("the interpreter", interpreter)):
        if re.search(r"[\x00-\x1f\x7f]", text):
            raise InputError(f"{what} {text!r} has a control character; choose another")
    bin_dir = os.path.join(directory, "bin")
    try:
        os.makedirs(bin_dir, exist_ok=True)
        path = os.path.join(directory, SETTINGS)
        atomic_write(path, (json.dumps(asdict(settings), indent=2, sort_keys=True) + "\n").encode())
        atomic_write(os.path.join(bin_dir, "detect"), _DETECT.format(python=interpreter).encode(), mode=0o755)
        for step in ("build", "release", "run"):
            text = _WRAPPER.format(step=step, settings=_sh_quote(path), python=_sh_quote(interpreter))
            atomic_write(os.path.join(bin_dir, step), text.encode(), mode=0o755)
    except OSError as e:
        raise InputError(f"cannot write the builder in {directory}: {e.strerror}") from None
    name = os.path.basename(directory) or "ocibuild"
    entry = (f"chaincode:\n  externalBuilders:\n    - name: {json.dumps(name)}\n"
             f"      path: {json.dumps(directory)}\n")
    if settings.network == "default":
        # The peer passes builders only what is listed: the Go variables the
        # compile may need (NETWORK_VARS, as `ocibuild build` reads them).
        from .gosource import NETWORK_VARS
        return entry + f"      propagateEnvironment: [{', '.join(NETWORK_VARS)}]\n"
    return entry + "      # nothing to propagate: the settings are in the builder's directory\n"


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# -- build ----------------------------------------------------------------------

def outputs_for(output_dir: str, settings: Settings) -> list[str]:
    """Where `build` writes: BUILD_OUTPUT_DIR's layout, then the settings' outputs."""
    return [f"oci:{os.path.join(os.path.abspath(output_dir), LAYOUT)}:{TAG}", *settings.outputs]


def build(source_dir: str, metadata_dir: str, output_dir: str, job: ImageJob, settings: Settings,
          env: Mapping[str, str], go_env: Mapping[str, str], progress: Progress, limits: Limits = Limits(),
          warm: WarmSettings | None = None) -> str:
    """The image of the package the peer extracted, written to `job`'s
    outputs (outputs_for) and loaded into the configured engine; its digest.
    `go_env`: the Go variables the peer propagated (with --network default);
    `warm`: reuse warm builder containers (the peer builds every package it
    installs: each one after the first costs only its compile)."""
    from .engines import Engine
    from .fabric.package import read_metadata_file
    from .fabric.writer import repack_extracted
    from .oci.readers import open_image
    from .oci.reference import FileRef

    metadata = read_metadata_file(os.path.join(metadata_dir, "metadata.json"), limits)
    if not os.path.isdir(source_dir):
        raise InputError(f"SOURCE_DIR {source_dir} is not a directory")
    if settings.engine != "none":
        Engine(settings.engine).require(REINSTALL)          # before the compile, not after it
    layout = os.path.join(os.path.abspath(output_dir), LAYOUT)
    with tempfile.TemporaryDirectory(prefix="ocibuild-repack-", dir=env.get("TMPDIR")) as tmp:
        package = os.path.join(tmp, "package.tar.gz")
        repack_extracted(package, source_dir, metadata, limits)
        req = BuildRequest(source=package, image=job, binary_path=BINARY_PATH, env=env, go_env=go_env,
                           builder=settings.builder, builder_image=settings.builder_image, go=settings.go,
                           network=settings.network == "default", go_proxy=settings.go_proxy,
                           fabric_version=settings.fabric_version, limits=limits, repacked=True, warm=warm)
        digest = build_chaincode(req, progress).digest
    _keep_indexes(source_dir, output_dir)
    image = open_image(FileRef("oci", layout, TAG))
    name = f"localhost/ocibuild-cc/{_name_part(metadata['label'])}:{digest.partition(':')[2][:16]}"
    if settings.engine != "none":
        from .oci.blobs import WorkStore
        engine = Engine(settings.engine)
        if engine.image_id(name) != image.config.descriptor.digest:
            with WorkStore() as work:
                engine.load_image(image, name, work)
    record = {"name": name, "digest": digest, "config": image.config.descriptor.digest,
              "engine": settings.engine, "label": metadata["label"]}
    atomic_write(os.path.join(output_dir, RECORD), (json.dumps(record, indent=2) + "\n").encode())
    return digest


def _name_part(label: str) -> str:
    """A label as a repository path component (lower case, [a-z0-9._-])."""
    return re.sub(r"[^a-z0-9._-]+", "-", label.lower()).strip("._-") or "chaincode"


def _keep_indexes(source_dir: str, output_dir: str) -> None:
    """META-INF/statedb/couchdb/indexes into BUILD_OUTPUT_DIR, for `release`
    (which gets only BUILD_OUTPUT_DIR): regular files and directories only,
    nothing followed (the tree is a stranger's, read again here)."""
    from .fsutil import walk
    shutil.rmtree(os.path.join(output_dir, RELEASED), ignore_errors=True)
    src = source_dir
    for part in INDEXES:                 # every step a real directory, not a link
        src = os.path.join(src, part)
        if os.path.islink(src) or not os.path.isdir(src):
            return
    dest = os.path.join(output_dir, RELEASED, *INDEXES[1:])
    os.makedirs(dest)
    for full, rel, lst in walk(src):
        target = os.path.join(dest, rel)
        if stat.S_ISDIR(lst.st_mode):
            os.mkdir(target)
        elif stat.S_ISREG(lst.st_mode):
            shutil.copyfile(full, target, follow_symlinks=False)
        else:
            raise InputError(f"SOURCE_DIR's CouchDB index {rel!r} is not a regular file")


def release(output_dir: str, release_dir: str) -> None:
    """BUILD_OUTPUT_DIR's CouchDB indexes → RELEASE/statedb/couchdb/indexes."""
    if not os.path.isfile(os.path.join(output_dir, RECORD)):
        raise InputError(f"BUILD_OUTPUT_DIR {output_dir} holds no ocibuild image; was it built by this builder?")
    src = os.path.join(output_dir, RELEASED, *INDEXES[1:])
    if os.path.isdir(src):
        dest = os.path.join(release_dir, *INDEXES[1:])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copytree(src, dest, dirs_exist_ok=True)       # made by _keep_indexes: files and directories


# -- run --------------------------------------------------------------------------

@dataclass(frozen=True)
class RunMetadata:
    """chaincode.json, as the peer writes it for `run`."""
    chaincode_id: str
    peer_address: str
    mspid: str = ""
    client_cert: str = ""
    client_key: str = ""
    root_cert: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.client_cert or self.client_key or self.root_cert)


def read_run_metadata(run_dir: str) -> RunMetadata:
    path = os.path.join(run_dir, "chaincode.json")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read((1 << 20) + 1)
        if len(text) > 1 << 20:
            raise ValueError("larger than 1 MiB")
        doc = json.loads(text)
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} is not a JSON object")
    fields = {k: doc.get(k, "") for k in ("chaincode_id", "peer_address", "mspid", "client_cert", "client_key",
                                           "root_cert")}
    bad = [k for k, v in fields.items() if not isinstance(v, str) or re.search(r"[\x00\ud800-\udfff]", v)]
    if bad:
        raise InputError(f"{path}: {', '.join(bad)} must be strings (no NUL, valid Unicode)")
    meta = RunMetadata(**fields)
    if not meta.chaincode_id:
        raise InputError(f"{path} has no chaincode_id")
    if not _ADDRESS.fullmatch(meta.peer_address):
        raise InputError(f"{path}: peer_address {meta.peer_address!r} is not HOST:PORT")
    if meta.tls and not (meta.client_cert and meta.client_key and meta.root_cert):
        raise InputError(f"{path}: TLS needs client_cert, client_key and root_cert together")
    return meta


@dataclass(frozen=True)
class _Record:
    name: str                          # in the engine
    config: str                        # its config digest: the engine's image ID


def _record(output_dir: str) -> _Record:
    path = os.path.join(output_dir, RECORD)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return _Record(str(doc["name"]), str(doc["config"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise InputError(f"BUILD_OUTPUT_DIR {output_dir} holds no ocibuild image record ({RECORD}); "
                         "was it built by this builder?") from None


def run(output_dir: str, run_dir: str, settings: Settings, progress: Progress) -> int:
    """Start the chaincode and wait for it; its exit code. Interrupted
    (the peer's SIGTERM), the container is stopped and removed."""
    from .engines import Engine
    from .oci.blobs import WorkStore
    from .oci.readers import open_image
    from .oci.reference import FileRef

    meta = read_run_metadata(run_dir)
    rec = _record(output_dir)
    if settings.engine == "none":
        raise InputError("this builder was installed with --engine none: it builds images but cannot run them")
    engine = Engine(settings.engine)
    engine.require(REINSTALL)
    if engine.image_id(rec.name) != rec.config:       # a fresh engine, or the image was removed
        progress.say(f"loading {rec.name} from {output_dir} into {engine.name}")
        with WorkStore() as work:
            engine.load_image(open_image(FileRef("oci", os.path.join(output_dir, LAYOUT), TAG)), rec.name, work)
    _sweep_dead_runs(engine)
    container = f"ocibuild-cc-{_name_part(meta.chaincode_id)[:40]}-{uuid.uuid4().hex[:8]}"
    env = {"CORE_CHAINCODE_ID_NAME": meta.chaincode_id, "CORE_PEER_TLS_ENABLED": "true" if meta.tls else "false",
           "CORE_PEER_LOCALMSPID": meta.mspid}
    if meta.tls:
        env.update(CORE_TLS_CLIENT_KEY_FILE=f"{TLS_DIR}/client_pem.key",
                   CORE_TLS_CLIENT_CERT_FILE=f"{TLS_DIR}/client_pem.crt",
                   CORE_PEER_TLS_ROOTCERT_FILE=f"{TLS_DIR}/peer.crt")
    command = ["chaincode", f"-peer.address={meta.peer_address}"]
    # In a work store: removed when run ends, swept by a later run if it was killed.
    with WorkStore() as work:
        tls = os.path.join(work.root, "tls")
        os.mkdir(tls)
        try:
            binds: tuple[tuple[str, str], ...] = ()
            if meta.tls:
                root = os.geteuid() == 0
                binds = _tls_files(tls, meta, own=engine.name == "docker" and root,
                                   unowned_readable=engine.name == "docker" and not root)
            engine.create_container(rec.name, container, command, env, settings.run_network,
                                    files=binds if engine.name == "docker" else (),
                                    labels={RUN_LABEL: str(os.getpid())})
            if meta.tls and engine.name != "docker":
                engine.copy_into(container, tls, TLS_DIR)
                shutil.rmtree(tls)                   # in the container now: no key left on the host
            progress.say(f"starting {container} from {rec.name} ({engine.name}, network {settings.run_network})")
            return engine.start_attached(container)
        finally:
            _remove(engine, container)


RUN_LABEL = "org.ocibuild.run-pid"     # on every chaincode container: the `run` that owns it


def _remove(engine, container: str) -> None:
    """The container gone, whatever happened (it was created --rm, so it
    usually is): a second SIGTERM during the removal does not stop it."""
    from .errors import EngineError
    for _ in range(3):
        try:
            engine.remove_container(container)
            return
        except KeyboardInterrupt:
            continue
        except EngineError:
            return


def _sweep_dead_runs(engine) -> None:
    """Remove chaincode containers whose `run` died (kill -9 between create
    and start leaves one created, never started: --rm acts only on exit)."""
    from .errors import EngineError
    from .fsutil import pid_dead
    try:
        for name, pid in engine.containers_labelled(RUN_LABEL):
            if pid.isascii() and pid.isdigit() and pid_dead(int(pid)):
                engine.remove_container(name)
    except EngineError:
        pass


CHAINCODE_UID = int(CHAINCODE_USER.partition(":")[0])    # the chaincode's user in ocibuild's images


def _tls_files(directory: str, meta: RunMetadata, own: bool,
               unowned_readable: bool = False) -> tuple[tuple[str, str], ...]:
    """chaincode.json's key and certificates as the files the peer's
    launcher puts in /etc/hyperledger/fabric: mode 0400 owned by the
    chaincode's user when `own` (bound into a docker container by root;
    podman's cp gives them to the container's user itself); a docker
    caller that cannot chown makes them 0444. (host file, path inside)."""
    out = []
    for name, text in (("client_pem.key", meta.client_key), ("client_pem.crt", meta.client_cert),
                       ("peer.crt", meta.root_cert)):
        path = os.path.join(directory, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w", encoding="utf-8") as f:
            f.write(text)
        if own:
            os.chown(path, CHAINCODE_UID, CHAINCODE_UID)
        elif unowned_readable:
            os.chmod(path, 0o444)
        out.append((path, f"{TLS_DIR}/{name}"))
    os.chmod(directory, 0o755)
    return tuple(out)
