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
from ..oci.imageset import ImageSet, same_platform
from ..oci.model import Platform
from ..oci.reference import FileRef, Reference
from ..progress import Say, human_size, silent


class Output(Protocol):
    @property
    def ref(self) -> Reference:
        """Where the image goes, as the user named it."""

    @property
    def commit_first(self) -> bool:
        """True for a registry or an engine: they are the likeliest to refuse
        at the last step, so they commit first, while local files are still
        only staged (and so still removable)."""

    @property
    def single_platform(self) -> bool:
        """True when the destination holds one platform's image (an engine, a
        docker-archive): it gets the host's image of a multi-platform set, and
        no referrers."""

    @property
    def written(self) -> int:
        """Bytes stage() wrote (or, for a registry, sent): for the progress display."""

    def check(self) -> None:
        """Refuse early (before assembly) what would certainly fail."""

    def stage(self, images: ImageSet, work: WorkStore) -> None:
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


def check_platforms(outputs: Sequence[Output], platforms: Sequence[Platform], host: Platform) -> None:
    """Before anything is built: a single-platform output of a multi-platform
    build takes the host's image, so the host's platform must be in the set."""
    if len(platforms) < 2 or any(same_platform(p, host) for p in platforms):
        return
    for out in outputs:
        if out.single_platform:
            raise InputError(f"{out.ref} holds one platform's image, the host's ({host}), which is not among "
                             f"{', '.join(map(str, platforms))}: add {host} to --platform, or write the "
                             "index to oci:, oci-archive: or docker://")


def held_by(out: Output, images: ImageSet) -> ImageSet:
    """What `out` holds of `images`: all of them, or for a single-platform
    output the host's image alone, without referrers."""
    if not out.single_platform:
        return images
    if len(images.images) == 1:
        return ImageSet(images.images)
    return images.only(Platform.host())


def _for(out: Output, images: ImageSet, say: Say) -> ImageSet:
    """held_by, saying when a single-platform output gets the host's image only."""
    held = held_by(out, images)
    if len(held.images) < len(images.images):
        say(f"{out.ref}: the {held.images[0].platform} image only (of {', '.join(map(str, images.platforms))}): "
            "it holds one platform")
    return held


def write_all(outputs: Sequence[Output], images: ImageSet | Image, work: WorkStore, say: Say = silent) -> None:
    """Stage every output, then commit them (commit_first ones first); on any
    failure or interrupt, abort all of them. Once one output is committed,
    a failure says exactly which were written (PartialWriteError)."""
    if isinstance(images, Image):
        images = ImageSet((images,))
    try:
        for out in outputs:
            say(f"writing {out.ref}")
            _os_errors(out, partial(out.stage, _for(out, images, say), work))
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
    for out in outputs:
        say(f"wrote {out.ref} ({human_size(out.written)})")


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
