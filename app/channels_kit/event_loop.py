"""The asyncio event loop of the kit's processes: uvloop when it is installed.

``EVENT_LOOP`` chooses it: ``uvloop`` (libuv's loop, the kit's ``speed`` extra),
``asyncio`` (the standard library's), or ``auto`` (the default: uvloop when importable).
Daphne runs Twisted on asyncio; :func:`install_twisted_reactor` puts the chosen loop under
Twisted's asyncio reactor before Daphne installs its own, so every socket write of Daphne
and every coroutine of the relay run on it. Measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from channels_kit.variables import Allowed, allowed_for

CHOICES = ("auto", "uvloop", "asyncio")


def loop_name() -> str:
    """The loop ``EVENT_LOOP`` asks for, resolved: ``uvloop`` or ``asyncio``."""
    wanted = os.environ.get("EVENT_LOOP", "auto").strip().lower() or "auto"
    if wanted not in CHOICES:
        raise ValueError(f"EVENT_LOOP must be one of {', '.join(CHOICES)}, not {wanted!r}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise RuntimeError(
                "EVENT_LOOP=uvloop, but uvloop is not installed: install the kit's 'speed' extra "
                "(pip install './app[speed]' from the root of the kit's checkout)"
            ) from None
        return "asyncio"
    return "uvloop"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``EVENT_LOOP`` asks for."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: the package a running loop comes from (for the logs)."""
    return type(loop).__module__.split(".")[0]


def install_twisted_reactor() -> str:
    """Install Twisted's asyncio reactor on :func:`new_event_loop`; returns the loop's name.

    Call it before anything imports ``twisted.internet.reactor`` (Daphne's server module
    installs a reactor of its own on import, unless one is installed). A reactor already
    installed is left as it is, and its loop named.
    """
    if "twisted.internet.reactor" in sys.modules:
        loop = getattr(sys.modules["twisted.internet.reactor"], "_asyncioEventloop", None)
        return loop_kind(loop) if loop is not None else "none"
    from twisted.internet import asyncioreactor

    loop = new_event_loop()
    threads = os.environ["ASGI_THREADS"].strip() if "ASGI_THREADS" in os.environ else ""
    if threads:  # as Daphne does for its own loop (empty: unset, as for every setting)
        count = int((allowed_for("ASGI_THREADS") or Allowed()).read("ASGI_THREADS", threads, whole=True))
        loop.set_default_executor(ThreadPoolExecutor(max_workers=count))
    asyncioreactor.install(loop)
    return loop_kind(loop)
