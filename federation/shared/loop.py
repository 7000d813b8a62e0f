"""The event loop a long-running command runs on.

``run`` is ``asyncio.run`` on uvloop's loop when uvloop is installed (it is
a dependency on Linux and macOS), and on asyncio's own loop otherwise or
when ``FEDERATION_EVENT_LOOP=asyncio`` asks for it.  uvloop's transports,
TLS included, are compiled, where asyncio's TLS transport is Python over
``ssl.MemoryBIO``: the registry's fan-out to hundreds of watch streams and
its clients' reading of them cost less on it (decision 59).  Nothing in the
code depends on which loop runs it: the tests run on asyncio's, the
commands they start on uvloop's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOP_ENV = "FEDERATION_EVENT_LOOP"

T = TypeVar("T")


class UnknownLoop(ValueError):
    """``FEDERATION_EVENT_LOOP`` names no loop this knows."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    choice = os.environ.get(LOOP_ENV, "uvloop")
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise UnknownLoop(f"{LOOP_ENV}={choice!r}: expected 'uvloop' or 'asyncio'")
    try:
        import uvloop
    except ImportError:  # a platform without it: asyncio's loop does the same job
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        factory = loop_factory()
    except UnknownLoop:
        main.close()  # never started: no "never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
