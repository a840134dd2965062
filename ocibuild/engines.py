"""Local container engines (docker, podman), reached through python-on-whales.
Only what outputs need: is it there, and load an archive under a name."""

from __future__ import annotations

from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run

from .errors import EngineError

_HOW_TO_START = {
    "docker": "start dockerd (or run scripts/setup)",
    "podman": "install podman (or run scripts/setup)",
}


class Engine:
    def __init__(self, name: str):
        self.name = name
        self.client = DockerClient(client_call=[name])

    def _run(self, *args: str) -> str:
        try:
            return run(self.client.client_config.docker_cmd + list(args),
                       capture_stdout=True, capture_stderr=True) or ""
        except ClientNotFoundError:
            raise EngineError(f"{self.name} is not installed; {_HOW_TO_START[self.name]}") from None
        except DockerException as e:
            raise EngineError(f"{self.name} {' '.join(args[:2])} failed: {_last_line(e.stderr)}") from None

    def require(self) -> None:
        try:
            self._run("info", "--format", "{{json .}}")
        except EngineError as e:
            raise EngineError(f"the {self.name} engine is not reachable ({e}); "
                              f"{_HOW_TO_START[self.name]}, or drop that output") from None

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

    def remove(self, name: str) -> None:
        self._run("image", "rm", "--force", name)


def _last_line(text: str | None) -> str:
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else "no message"
