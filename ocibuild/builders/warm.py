"""A reusable builder container ("warm builder") for docker and podman,
rootful or rootless, driven through python-on-whales.

A fresh container (or BuildKit solve) per build costs more than a warm
one-line-change compile. So the first build starts a long-lived container,
keyed by engine, builder image ID, network mode, cache volume and the
user's work area (its name is a hash of the key; its labels record the key), and every later build with
the same key runs the same `go build` line in it with `exec`, each in a work
directory of its own. Same flags, same environment, same binary: -trimpath
takes the paths out, so the work directory's name does not reach it.

- **Work area**: a host directory per container (`<state>/<name>/`, in the
  caller's XDG_RUNTIME_DIR or cache directory), bind-mounted at
  `/ocibuild-work` when the container starts. A build mirrors its source
  into `<pid>-<random>/` there (hard links where the file system allows),
  the binary comes back through `out/`, and the directory is removed after
  the build, whatever happened; one left by a killed ocibuild is swept by
  the next build. One build's failure leaves nothing for the next.
- **Idle stop**: the builder images have `go` and `sh` but no `sleep`, so
  the container's main process is a few lines of Go (`go run`, compiled
  once into the cache volume) that exits once nothing has used the container
  for the idle time and no build directory is present; the container was
  created `--rm`, so the engine then removes it. `ocibuild builder
  status|stop` shows and ends them.
- **Never reused when stale**: an image updated under the same name has
  another ID, so another key and another container. A warm build asks the
  engine for the image's ID (one inspect, shared with the toolchain choice)
  and then only for the exec: the container is not inspected first. An
  exec that finds no running container of the key (the first build, an
  idle stop, an engine restart, a crashed keeper) removes whatever holds
  the name, starts one and runs the build again; one that went away under
  a build is said and replaced the same way, at most twice. Two ocibuild
  processes starting the same builder take a lock on `<state>/<name>.lock`:
  one starts it, the other uses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, cast

from ..engines import Engine, last_line, not_installed
from ..errors import BuildError, EngineError
from ..fsutil import staging_prefix, sweep_stale
from ..gosource import BINARY, INPUT, GoBuild
from ..progress import Say
from .container import CACHE, builder_env, mirror, source_mount

LABEL = "org.ocibuild.warm-builder"          # its value: the key, as JSON
WORK = "/ocibuild-work"                      # the work area inside the container
BUILD_TAG = "build-"                         # per-build directories: build-<pid>-<random>
DEFAULT_IDLE = 300                           # seconds

# The container's main process: exit when idle (nothing touched .last for
# IDLE seconds and no build directory is there). Go 1.16+ (os.ReadDir).
KEEPER = """package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	idle, _ := strconv.Atoi(os.Args[1])
	dir := os.Args[2]
	for {
		time.Sleep(time.Second)
		st, err := os.Stat(dir + "/.last")
		if err != nil {
			return
		}
		busy := false
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), "build-") {
				busy = true
			}
		}
		if !busy && time.Since(st.ModTime()) > time.Duration(idle)*time.Second {
			return
		}
	}
}
"""


@dataclass(frozen=True)
class WarmSettings:
    """From the CLI: where builder work areas live, and the idle time."""
    state_dir: str
    idle: int = DEFAULT_IDLE


@dataclass(frozen=True)
class Key:
    engine: str
    image_id: str
    network: bool
    cache_volume: str
    state_dir: str         # whose work area it mounts: two users of one docker engine never share one

    @property
    def text(self) -> str:
        return json.dumps({"engine": self.engine, "image": self.image_id, "network": self.network,
                           "cache": self.cache_volume, "state": self.state_dir}, sort_keys=True)

    @property
    def name(self) -> str:
        return "ocibuild-builder-" + hashlib.sha256(self.text.encode()).hexdigest()[:16]


class State(NamedTuple):
    running: bool
    key: str                          # the LABEL's value
    started_at: datetime | None


def _engine_refused(engine: str, status: int | None, stderr: str | bytes | None) -> bool:
    """The exec failed in the engine, not in go: podman exits 125 for its
    own errors; docker prints the daemon's refusal (go's own failures exit
    1 or 2 with the compiler's messages)."""
    if engine == "podman":
        return status == 125
    return last_line(stderr).startswith("Error response from daemon")


class NotRunning(Exception):
    """No running builder container for the key took the exec: start one
    (`during_build`: it went away under a build, which is said)."""

    def __init__(self, during_build: bool):
        super().__init__()
        self.during_build = during_build


class WarmBuilder:
    def __init__(self, engine: Engine, settings: WarmSettings, cache_volume: str):
        self.engine, self.settings, self.cache_volume = engine, settings, cache_volume

    def compile(self, job: GoBuild, image: str, out_dir: str, say: Say) -> str:
        """Compile `job` in the warm container for `image` (started or
        replaced as needed); the binary's path, in `out_dir`.

        Beyond the image's ID, a warm build asks the engine one thing: the
        exec. The container is named by its key, so it is not inspected
        first: an exec that finds no container running (the first build, an
        idle stop, an engine restart) is what says to start one, and then
        the build is run again."""
        image_id = self.engine.image_id(image)
        if image_id is None:
            raise EngineError(f"{self.engine.name} has no image {image}")
        key = Key(self.engine.name, image_id, job.network, self.cache_volume,
                  os.path.abspath(self.settings.state_dir))
        name = key.name
        os.makedirs(self._area(name), mode=0o700, exist_ok=True)
        went_away = False                  # under a build, as opposed to not there yet
        for attempt in range(3):
            try:
                return self._build(name, key, job, out_dir, say)
            except NotRunning as e:
                went_away = went_away or e.during_build
                if attempt == 2:
                    break
                if e.during_build:
                    say(f"builder container {name} went away; starting a fresh one")
                self._start(key, image, say)
        raise EngineError(f"the {self.engine.name} builder container {name} "
                          + ("went away during the build, twice" if went_away else "did not stay running")
                          + "; check the engine, or pass --fresh-builder")

    # -- the container ------------------------------------------------------------

    def _area(self, name: str) -> str:
        return os.path.join(self.settings.state_dir, name)

    def _start(self, key: Key, image: str, say: Say) -> None:
        """Start the container for `key` under the lock, replacing whatever
        holds its name; unless another ocibuild started it meanwhile (what
        the engine says under the lock decides, not what the exec saw)."""
        name = key.name
        area = self._area(name)
        os.makedirs(area, mode=0o700, exist_ok=True)
        _touch(os.path.join(area, ".last"))
        with _locked(area + ".lock"):
            state = self._state(name)
            if state is not None and state.running and state.key == key.text:
                return                                     # started by a build racing this one
            if state is not None:
                self.engine.remove_container(name)        # stopped, stale or gone astray: replaced
            with open(os.path.join(area, "keeper.go"), "w") as f:
                f.write(KEEPER)
            say(f"starting builder container {name} ({self.engine.name}, {image}, idle stop after "
                f"{self.settings.idle} s)")
            env = {"GO111MODULE": "off", "GOFLAGS": "", "GOPROXY": "off", "GOTOOLCHAIN": "local",
                   "CGO_ENABLED": "0", "GOCACHE": f"{CACHE}/go-build"}
            self.engine.call(
                f"start of builder container {name}", self.engine.client.container.run, image,
                ["go", "run", f"{WORK}/keeper.go", str(self.settings.idle), WORK],
                name=name, detach=True, remove=True, pull="never", user="0:0", envs=env,
                networks=[] if key.network else ["none"], labels={LABEL: key.text},
                volumes=[(self.cache_volume, CACHE), (area, WORK)])

    def _state(self, name: str) -> State | None:
        """What the engine says of container `name`; None when there is none."""
        from python_on_whales.exceptions import NoSuchContainer
        try:
            c = self.engine.call("inspect", self.engine.client.container.inspect, name,
                                 passthrough=(NoSuchContainer,))
        except NoSuchContainer:
            return None
        return State(bool(c.state.running), str((c.config.labels or {}).get(LABEL, "")), c.state.started_at)

    # -- one build ------------------------------------------------------------------

    def _build(self, name: str, key: Key, job: GoBuild, out_dir: str, say: Say) -> str:
        area = self._area(name)
        _touch(os.path.join(area, ".last"))              # before the build directory: no idle stop now
        sweep_stale(area, BUILD_TAG)                       # what killed runs left
        own = tempfile.mkdtemp(dir=area, prefix=staging_prefix(BUILD_TAG))
        os.chmod(own, 0o755)
        inside = f"{WORK}/{os.path.basename(own)}"
        try:
            host_src, target = source_mount(job)
            mirror(host_src, os.path.join(own, "input", os.path.relpath(target, INPUT)))
            os.mkdir(os.path.join(own, "out"))

            def moved(value: str) -> str:
                return value.replace(INPUT, f"{inside}/input")

            env = {k: moved(v) for k, v in builder_env(job).items()}
            argv = job.argv(f"{inside}/out/{BINARY}")
            say(f"compiling in builder container {name}: " + " ".join(argv[1:]))
            self._exec(name, key, argv, env, moved(job.source.workdir), say)
            built = os.path.join(own, "out", BINARY)
            if not os.path.isfile(built):
                raise EngineError(f"builder container {name} exited 0 but wrote no binary")
            output = os.path.join(out_dir, BINARY)
            shutil.copyfile(built, output)
            os.chmod(output, 0o755)
            return output
        finally:
            shutil.rmtree(own, ignore_errors=True)
            try:
                _touch(os.path.join(area, ".last"))
            except OSError:
                pass                       # the area was removed (`ocibuild builder stop`) meanwhile

    def _exec(self, name: str, key: Key, argv: list[str], env: dict[str, str], workdir: str, say: Say) -> None:
        from python_on_whales.client_config import ClientNotFoundError
        from python_on_whales.exceptions import DockerException
        lines: list[str] = []
        began = datetime.now(UTC)
        try:
            stream = self.engine.client.container.execute(name, argv, envs=env, workdir=workdir, stream=True)
            for _, raw in cast(Iterable[tuple[str, bytes]], stream):
                for line in raw.decode(errors="replace").splitlines():
                    lines.append(line)
                    say(line)
        except ClientNotFoundError:
            raise not_installed(self.engine.name) from None
        except KeyboardInterrupt:
            # The exec'd go goes on when its client is stopped: the container
            # goes instead (a build sharing it is retried in a fresh one).
            self.engine.remove_container(name)
            raise
        except DockerException as e:
            if e.return_code == 137:
                time.sleep(1)              # killed with its container: let the engine see it stopped
            state = self._state(name)
            restarted = state is not None and state.started_at is not None and state.started_at > began
            if state is None or not state.running or state.key != key.text or restarted:
                # No container, a stopped one, another's under this name, or
                # one started since the exec began (this one was killed and
                # replaced by another build): nothing of ours ran to the end.
                raise NotRunning(during_build=bool(lines) or e.return_code == 137 or restarted) from None
            if e.return_code in (126, 127):
                raise EngineError(f"{self.engine.name} could not run go in builder container {name} "
                                  f"({last_line(e.stderr)})") from None
            if _engine_refused(self.engine.name, e.return_code, e.stderr):
                raise EngineError(f"{self.engine.name} exec in builder container {name} failed: "
                                  f"{last_line(e.stderr)}") from None
            raise BuildError(self.engine.name, e.return_code, "\n".join(lines)) from None


def builders(engine_name: str, settings: WarmSettings) -> list[tuple[str, dict]]:
    """(name, key) of the engine's warm builder containers that use this
    user's work area (another user's on a shared docker engine are theirs)."""
    out = []
    for name, value in Engine(engine_name).containers_labelled(LABEL):
        try:
            key = json.loads(value)
        except ValueError:
            continue
        if isinstance(key, dict) and key.get("state") == os.path.abspath(settings.state_dir):
            out.append((name, key))
    return out


def stop(engine_name: str, settings: WarmSettings) -> list[str]:
    """Remove this user's warm builder containers of the engine, and their work areas."""
    engine = Engine(engine_name)
    stopped = []
    for name, _ in builders(engine_name, settings):
        engine.remove_container(name)
        shutil.rmtree(os.path.join(settings.state_dir, name), ignore_errors=True)
        stopped.append(name)
    return stopped


def _touch(path: str) -> None:
    with open(path, "a"):
        pass
    os.utime(path)


@contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
