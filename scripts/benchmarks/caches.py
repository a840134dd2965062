"""Caches of the bench's own, for cold rows that empty nothing shared, and
the warm builder containers and volumes the bench makes, removed again.

Cold rows never empty a cache the machine shares (BuildKit's whole cache,
podman's storage, other people's volumes): each cold build gets caches
nobody else has.
  - a Dockerfile's cache mounts: fresh `id=`s (cache_mounts);
  - ocibuild's docker and podman builders: a fresh cache volume for the
    warm builder container (so a new container, as its key holds the
    volume) and fresh BuildKit cache mount ids for --fresh-builder. ocibuild
    takes no option for these: fresh_command runs its own CLI through
    `python -c LAUNCH`, which first sets DockerBuilder's cache_id and
    PodmanBuilder's cache_volume defaults and the docker module's
    WARM_CACHE_VOLUME;
  - the host builder: a fresh GOCACHE (the callers' temp dirs).

Owned records what existed before a run in each engine (ocibuild's default
cache volume, the warm builder containers) and removes what the run made:
the warm builders on the bench's fresh volumes and those volumes after
each cold round (Owned.end_round), and at the end (Owned.clean) the warm
builders the run started and the default volume if it created it.
Containers and volumes that were there before are left alone (`ocibuild
builder stop` would stop everyone's warm builders, so it is not used).

Rootless podman (the user `ocibuild`, through runuser, as
tests/test_build_cli.py runs it) is an engine of its own: its images,
volumes and containers are the user's."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .common import REPO

VENV_PY = REPO / ".venv" / "bin" / "python"
BENCH_LABEL = "org.ocibuild.bench"             # on podman build's images: found and removed by it
ROOTLESS_USER = "ocibuild"

# ocibuild's own CLI with fresh caches for its docker and podman builders
# (argv: CACHE_ID VOLUME ocibuild-arguments...): the cold rows only.
LAUNCH = """\
import inspect, sys
from ocibuild.builders import docker, podman
def fresh(cls, param, value):
    names = [p.name for p in inspect.signature(cls.__init__).parameters.values()
             if p.default is not inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    if param not in names:
        sys.exit(f"bench: {cls.__name__}.__init__ has no {param}= parameter any more")
    defaults = list(cls.__init__.__defaults__)
    defaults[names.index(param)] = value
    cls.__init__.__defaults__ = tuple(defaults)
cache_id, volume = sys.argv.pop(1), sys.argv.pop(1)
fresh(docker.DockerBuilder, "cache_id", cache_id)
fresh(podman.PodmanBuilder, "cache_volume", volume)
if "WARM_CACHE_VOLUME" not in docker.DockerBuilder.compile.__code__.co_names:
    sys.exit("bench: DockerBuilder.compile no longer reads docker.WARM_CACHE_VOLUME")
docker.WARM_CACHE_VOLUME = volume
sys.argv[0] = "ocibuild"
from ocibuild.__main__ import main
main()
"""


def fresh_command(cache_id: str, volume: str, argv: list[str], prefix: tuple[str, ...] = ()) -> list[str]:
    """`ocibuild ARGV` (prefix: runuser ...) with fresh caches for its docker
    and podman builders: BuildKit cache ids CACHE_ID-build/-mod, VOLUME."""
    return [*prefix, str(VENV_PY), "-c", LAUNCH, cache_id, volume, *argv]


CACHE_TARGETS = ("/root/.cache/go-build", "/go/pkg/mod")     # the Dockerfiles' GOCACHE, GOMODCACHE
CACHE_SUFFIXES = ("build", "mod")


def cache_mounts(cache_id: str) -> str:
    """A Dockerfile RUN's Go build and module cache mounts, ids CACHE_ID-build, CACHE_ID-mod."""
    return " ".join(f"--mount=type=cache,id={cache_id}-{s},target={t}"
                    for s, t in zip(CACHE_SUFFIXES, CACHE_TARGETS, strict=True))


def buildah_cache_root() -> Path:
    """Where podman build keeps `RUN --mount=type=cache,id=ID` (buildah 1.28:
    $TMPDIR, else /var/tmp, then buildah-cache/ID)."""
    return Path(os.environ.get("TMPDIR") or "/var/tmp") / "buildah-cache"


def buildah_cache_dirs(cache_id: str) -> list[Path]:
    """podman build's directories for cache_mounts(cache_id)."""
    return [buildah_cache_root() / f"{cache_id}-{s}" for s in CACHE_SUFFIXES]


def default_volume(engine: str) -> str:
    """ocibuild's warm builders' cache volume in `engine` (docker.WARM_CACHE_VOLUME,
    podman.CACHE_VOLUME; today one name, ocibuild-go-cache, for both)."""
    from ocibuild.builders import docker, podman
    return docker.WARM_CACHE_VOLUME if engine == "docker" else podman.CACHE_VOLUME


def warm_label() -> str:
    from ocibuild.builders.warm import LABEL
    return LABEL


# --- the engines ---------------------------------------------------------------------

def rootless_env() -> dict[str, str] | None:
    """The environment the rootless user's ocibuild and podman run in (as
    tests/test_build_cli.py's), or None without that user or runuser."""
    try:
        pw = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        return None
    if not shutil.which("runuser"):
        return None
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": pw.pw_dir,
            "USER": ROOTLESS_USER, "LOGNAME": ROOTLESS_USER,
            "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}", "LANG": "C.UTF-8"}


def rootless_prefix(extra_env: dict[str, str] | None = None) -> tuple[str, ...]:
    env = {**(rootless_env() or {}), **(extra_env or {})}
    return ("runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()])


@dataclass
class Engine:
    """One image store: docker, podman (rootful) or podman-rootless."""
    name: str
    prefix: tuple[str, ...]           # the CLI
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))   # its user's ocibuild's

    @classmethod
    def docker(cls) -> Engine:
        return cls("docker", ("docker",))

    @classmethod
    def podman(cls) -> Engine:
        return cls("podman", ("podman",))

    @classmethod
    def rootless(cls) -> Engine:
        return cls("podman-rootless", (*rootless_prefix(), "podman"), rootless_env() or {})

    def __call__(self, *args: str, timeout: int = 300) -> str | None:
        """stdout of the CLI, or None if it fails (from "/": the rootless
        user cannot read root's working directory)."""
        try:
            p = subprocess.run([*self.prefix, *args], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout, cwd="/")
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.decode(errors="replace").strip() if p.returncode == 0 else None

    def volume_exists(self, name: str) -> bool:
        if self.name == "docker":
            return self("volume", "inspect", name) is not None
        return self("volume", "exists", name) is not None

    def warm_builders(self) -> dict[str, str]:
        """{container name: its cache volume} of ocibuild's warm builder containers."""
        ids = (self("ps", "-aq", "--filter", f"label={warm_label()}") or "").split()
        if not ids:
            return {}
        try:
            docs = json.loads(self("inspect", *ids) or "[]")
        except ValueError:
            return {}
        found = {}
        for d in docs:
            try:
                key = json.loads(((d.get("Config") or {}).get("Labels") or {}).get(warm_label(), "{}"))
            except ValueError:
                key = {}
            found[str(d.get("Name", "")).lstrip("/")] = str(key.get("cache", ""))
        return found

    def image_id(self, ref: str) -> str:
        """The image's id (hex, no sha256: prefix), "" if there is none."""
        return (self("image", "inspect", "--format", "{{.Id}}", ref) or "").removeprefix("sha256:")

    def warm_running(self, volume: str, image_id: str = "") -> str | None:
        """The id of the running warm builder container on `volume` (for the
        builder image `image_id`, network none), or None."""
        ids = (self("ps", "-q", "--no-trunc", "--filter", f"label={warm_label()}", "--filter", "status=running")
               or "").split()
        if not ids:
            return None
        try:
            docs = json.loads(self("inspect", *ids) or "[]")
        except ValueError:
            return None
        for d in docs:
            try:
                key = json.loads(((d.get("Config") or {}).get("Labels") or {}).get(warm_label(), "{}"))
            except ValueError:
                continue
            if key.get("cache") == volume and not key.get("network") and (d.get("State") or {}).get("Running") \
                    and (not image_id or str(key.get("image", "")).removeprefix("sha256:") == image_id):
                return str(d.get("Id"))
        return None

    def state_dir(self) -> Path:
        """Where this user's ocibuild keeps warm builders' work areas."""
        from ocibuild.cli import builder_state_dir
        return Path(builder_state_dir(self.env))

    def remove_warm(self, names: list[str]) -> None:
        """Remove warm builder containers and their work areas."""
        if not names:
            return
        self("rm", "-f", *names)
        for n in names:
            shutil.rmtree(self.state_dir() / n, ignore_errors=True)
            (self.state_dir() / f"{n}.lock").unlink(missing_ok=True)


class Owned:
    """What a run made in its engines' caches, removed by end_round and clean."""

    def __init__(self, engines: list[Engine]):
        self.engines = {e.name: e for e in engines}
        self.default = {e.name: default_volume(e.name) for e in engines}
        self.had_default = {e.name: e.volume_exists(self.default[e.name]) for e in engines}
        self.had_warm = {e.name: set(e.warm_builders()) for e in engines}
        self.fresh: dict[str, list[str]] = {e.name: [] for e in engines}

    def volume(self, engine: str, name: str) -> str:
        """Record `name` as a fresh cache volume of the bench's in `engine`."""
        self.fresh[engine].append(name)
        return name

    def end_round(self) -> None:
        """Stop the warm builders on the bench's fresh volumes and remove those volumes."""
        for name, vols in self.fresh.items():
            if not vols:
                continue
            e = self.engines[name]
            e.remove_warm([c for c, v in e.warm_builders().items() if v in vols])
            for v in vols:
                e("volume", "rm", "-f", v)
            vols.clear()

    def clean(self) -> None:
        """end_round, then the warm builders the run started (on ocibuild's
        default volume) and that volume where the run created it."""
        self.end_round()
        for name, e in self.engines.items():
            e.remove_warm(sorted(set(e.warm_builders()) - self.had_warm[name]))
            if not self.had_default[name]:
                e("volume", "rm", self.default[name])  # not -f: someone else's builder may use it now
