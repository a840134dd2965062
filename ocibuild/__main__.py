"""The `ocibuild` command. The CLI's imports happen inside main(), so a
Ctrl-C while they load is reported like any other interrupt, not as a
traceback. `python -m ocibuild` runs the same."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except BaseException as e:
        # Python wraps an interrupt that lands in a class body being set up
        # (__set_name__) in a RuntimeError: an interrupt all the same.
        if isinstance(e, KeyboardInterrupt) or isinstance(e.__cause__, KeyboardInterrupt):
            sys.stderr.write("error: interrupted; nothing was written\n")
            sys.exit(130)
        raise
    cli_main()
    _done()


def _done() -> None:
    """A finished run ends here without the interpreter's teardown (freeing
    every module, python-on-whales' ~150 pydantic models among them: ~45 ms
    of a one-second warm build). Safe because nothing is left for it: every
    temporary directory and staged output is removed by its own context
    manager, nothing registers atexit, and threads are joined; when one is
    still running, or the streams cannot be flushed, the normal exit runs."""
    import os
    import threading
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    if threading.active_count() == 1:
        os._exit(0)


if __name__ == "__main__":
    main()
