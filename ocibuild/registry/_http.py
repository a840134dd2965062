"""httpx, imported the one way the registry package imports it: without its
command-line client. httpx's `__init__` imports `httpx._main` whenever
click, rich and pygments are installed — and they are, for ocibuild's own
CLI — which costs as much again as httpx itself (~25 ms of a push's
start-up). httpx expects that import to fail when its CLI extra is absent
and then defines a stub `httpx.main`; a `None` in `sys.modules` makes it
fail here. The marker is removed again at once, so a later
`import httpx._main` (nothing of ocibuild's does one) would still work.

Everything under ocibuild.registry that needs HTTP does
`from ._http import httpx`; ocibuild.registry.options does not, so
commands that never reach a registry never import httpx."""

from __future__ import annotations

import sys

_BLOCK = "httpx" not in sys.modules and "httpx._main" not in sys.modules
if _BLOCK:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
try:
    import httpx  # noqa: E402
finally:
    if _BLOCK and "httpx._main" in sys.modules and sys.modules["httpx._main"] is None:
        del sys.modules["httpx._main"]

__all__ = ["httpx"]
