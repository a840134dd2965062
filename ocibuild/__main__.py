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


if __name__ == "__main__":
    main()
