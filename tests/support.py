"""Helpers for tests: wait on conditions, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool],
    *,
    timeout: float = 10.0,
    what: str = "condition",
) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def metric(agent: Any, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of an agent's exported metrics (what ``/metrics`` serves)."""
    value = agent.metrics.registry.get_sample_value(name, labels or {})
    return float(value or 0.0)
