"""How the layers below the CLI report progress: a `Say` callable for one
line, and a `Progress` that also times phases and knows whether the
user sees the detail lines (-q hides them); human_size and human_duration
for the numbers it shows."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

Say = Callable[[str], None]


def silent(_: str) -> None:
    """A Say that says nothing."""


class Progress(Protocol):
    quiet: bool

    def say(self, msg: str) -> None: ...

    def phase(self, title: str) -> AbstractContextManager[None]: ...


def human_size(n: float) -> str:
    """Bytes for people: 1.0 GiB, 512 KiB, 17 bytes."""
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if n < 10 and n != int(n) else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """A phase's duration for people: 0.3 s, 12.5 s, 2 min 5 s."""
    if seconds < 59.95:
        return f"{max(seconds, 0.0):.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
