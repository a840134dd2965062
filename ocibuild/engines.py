"""Local container engines (docker, podman), reached through python-on-whales:
every engine command goes through `engine_run`, and every engine error reads
the same way. Outputs need only: is it there, and load an archive."""

from __future__ import annotations

from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run

from .errors import EngineError

WHAT_TO_DO = {
    "docker": "start dockerd (scripts/setup does), or choose --builder podman or --builder host",
    "podman": "install and configure podman (scripts/setup does), or choose --builder docker "
              "or --builder host",
}


def client(engine: str) -> DockerClient:
    return DockerClient(client_call=[engine])


def engine_run(engine: str, *args: str) -> str:
    """`ENGINE ARGS...`; its stdout. Raises python-on-whales' DockerException
    (with the command's stderr) on failure, EngineError when not installed."""
    try:
        return run(client(engine).client_config.docker_cmd + list(args)) or ""
    except ClientNotFoundError:
        raise not_installed(engine) from None


def unreachable(engine: str, why: str) -> EngineError:
    return EngineError(f"{engine} is not usable ({why}); {WHAT_TO_DO[engine]}")


def not_installed(engine: str) -> EngineError:
    return EngineError(f"{engine} is not installed; {WHAT_TO_DO[engine]}")


def last_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else "no message"


class Engine:
    def __init__(self, name: str):
        self.name = name

    def _run(self, *args: str) -> str:
        try:
            return engine_run(self.name, *args)
        except DockerException as e:
            raise EngineError(f"{self.name} {' '.join(args[:2])} failed: {last_line(e.stderr)}") from None

    def require(self) -> None:
        try:
            self._run("info", "--format", "{{json .}}")
        except EngineError as e:
            raise EngineError(f"the {self.name} engine is not reachable ({e}); "
                              f"{WHAT_TO_DO[self.name].split(', or')[0]}, or drop that output") from None

    def require_zstd(self) -> None:
        """Docker engines before 23 cannot unpack zstd layers (podman can)."""
        if self.name != "docker":
            return
        version = self._run("version", "--format", "{{.Server.Version}}").strip()
        try:
            major = int(version.split(".")[0])
        except ValueError:
            return
        if major < 23:
            raise EngineError(f"docker {version} cannot load zstd-compressed layers; "
                              "use --compression gzip for docker-daemon: outputs")

    def load(self, archive: str, name: str) -> None:
        self._run("load", "--input", archive)
        if name and not self.has(name):
            raise EngineError(f"{self.name} loaded the archive but has no image {name}")

    def has(self, name: str) -> bool:
        try:
            self._run("image", "inspect", "--format", "{{.Id}}", name)
            return True
        except EngineError:
            return False
