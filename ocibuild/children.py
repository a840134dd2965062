"""This process's child processes, found through /proc, and stopping the
ones started since a point: python-on-whales keeps its streaming Popen to
itself (and does not end it on an exception), so after an interrupt the
engine's client process is found and stopped here."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable


def child_pids() -> set[int]:
    """This process's children."""
    me, out = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == me:
                out.add(int(entry))
    return out


def stop_children(before: set[int], sig: int, grace: float) -> None:
    """Signal the children started since `before` with `sig`, wait up to
    `grace` seconds for them to exit, then SIGKILL what is left."""
    pids = child_pids() - before
    for p in pids:
        _kill(p, sig)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        if pids:
            time.sleep(0.05)
    for p in pids:
        _kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` for the engine and compiler processes ocibuild starts
    itself: the child gets SIGTERM when ocibuild dies, even by kill -9
    (Linux's parent-death signal), so nothing outlives it."""
    parent = os.getpid()

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:       # the parent died before prctl took effect
            os._exit(1)

    return preexec


_PR_SET_PDEATHSIG = 1


def end_process(proc, grace: float = 5) -> None:
    """Stop a child we started (a `subprocess.Popen`): SIGTERM, up to
    `grace` seconds, then SIGKILL; reaped either way."""
    import subprocess
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
