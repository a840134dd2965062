"""Where an image goes. Every output follows one small protocol — check
before any work, stage aside, commit, or abort leaving nothing — so writing
to several places is one loop, and a failure anywhere leaves every output
as it was.

This module is the protocol and the loop only; it imports nothing but the
core, so every output (local files here, engines, the registry push) can
implement it without import cycles. `ocibuild.transports.open_output`
turns a reference into the right output."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Protocol

from ..errors import InputError, OcibuildError, OutputError, PartialWriteError
from ..oci.blobs import WorkStore
from ..oci.image import Image
from ..oci.reference import FileRef, Reference
from ..progress import Say, silent


class Output(Protocol):
    @property
    def ref(self) -> Reference:
        """Where the image goes, as the user named it."""

    @property
    def commit_first(self) -> bool:
        """True for a registry or an engine: they are the likeliest to refuse
        at the last step, so they commit first, while local files are still
        only staged (and so still removable)."""

    def check(self) -> None:
        """Refuse early (before assembly) what would certainly fail."""

    def stage(self, image: Image, work: WorkStore) -> None:
        """Write everything aside; the destination is not touched."""

    def commit(self) -> None:
        """Make the staged image visible, as one atomic step where possible."""

    def abort(self) -> None:
        """Remove whatever stage() left; harmless after commit()."""


def check_distinct(outputs: Sequence[Output]) -> None:
    """Refuse two outputs naming one path (an archive twice, or an archive
    and a layout): the second would replace the first, and one of them
    would be reported wrongly. Several tags of one `oci:` layout are fine:
    they are merged into its index."""
    seen: dict[str, Output] = {}
    for out in outputs:
        if isinstance(out.ref, FileRef):
            path = os.path.realpath(out.ref.path)
            prev = seen.get(path)
            if prev is not None and not (out.ref.transport == "oci" and prev.ref.transport == "oci"):
                raise InputError(f"{prev.ref} and {out.ref} name the same path {path}; "
                                 "give each output its own")
            seen[path] = out


def write_all(outputs: Sequence[Output], image: Image, work: WorkStore, say: Say = silent) -> None:
    """Stage every output, then commit them (commit_first ones first); on any
    failure or interrupt, abort all of them. Once one output is committed,
    a failure says exactly which were written (PartialWriteError)."""
    try:
        for out in outputs:
            say(f"writing {out.ref}")
            _os_errors(out, partial(out.stage, image, work))
    except BaseException:
        for out in outputs:
            out.abort()
        raise
    committed: list[Output] = []
    try:
        for out in sorted(outputs, key=lambda o: not o.commit_first):
            if out.commit_first:
                _os_errors(out, out.commit)     # engines and registries handle an interrupt themselves
                committed.append(out)
            else:
                # A local commit is a rename: quick, and with Ctrl-C/SIGTERM held
                # off for it, "committed" is always exactly what was written.
                with _signals_held():
                    _os_errors(out, out.commit)
                    committed.append(out)
    except BaseException as e:
        for out in outputs:
            out.abort()
        if isinstance(e, KeyboardInterrupt) and len(committed) == len(outputs):
            return              # held off until the last commit was done: everything is written
        if not committed:
            raise
        raise PartialWriteError([str(o.ref) for o in committed],
                                [str(o.ref) for o in outputs if o not in committed], e) from None


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM delivered only after the block (main thread only)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        _deliver_pending()


def _deliver_pending() -> None:
    """A Python-level call: CPython runs a signal handler that became due
    (one held above) on entering a function, so an interrupt is raised
    here, inside the block, not later in the caller."""


def _os_errors(out: Output, step: Callable[[], None]) -> None:
    try:
        step()
    except OcibuildError:
        raise
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise OutputError(f"cannot write {out.ref}: {e.strerror}{where}; nothing was written") from None
