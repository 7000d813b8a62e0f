"""Injectable time, and the one retry policy.

Leases, hold-downs and rotations take a ``Clock`` so tests move time instead
of sleeping.  ``SystemClock`` is wall time; ``ManualClock`` only moves when a
test calls ``advance``, and wakes the sleepers whose deadline has passed.

``Backoff`` is how every loop that retries waits: capped exponential, with
jitter so that 255 agents cut off together do not come back together.
``Retry`` is its running count for one loop.  ``jittered`` spreads a
periodic loop the same way: a fleet started (or stalled, then answered)
together would otherwise stay in step for ever.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch, as this clock sees it."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that stands still until ``advance`` is called."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: after the ``n``-th failure in
    a row, wait ``min(base * 2**(n-1), cap)``, times a factor drawn from
    ``[1 - jitter, 1 + jitter)``."""

    base: float = 0.1
    cap: float = 5.0
    jitter: float = 0.5

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        nominal: float = min(self.base * 2.0 ** max(failures - 1, 0), self.cap)
        return jittered(nominal, self.jitter, rng)

    def delays(self, attempts: int) -> Iterator[float]:
        """For ``attempts`` tries: 0 before the first, then the backoff."""
        for attempt in range(attempts):
            yield 0.0 if attempt == 0 else self.delay(attempt)

    def retry(self) -> Retry:
        return Retry(self)


class Retry:
    """One loop's failures in a row under a ``Backoff``."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the delay to wait before the next try."""
        self.failures += 1
        return self.backoff.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0


_RANDOM = random.Random()


def jittered(seconds: float, jitter: float = 0.2, rng: random.Random | None = None) -> float:
    """``seconds`` times a factor drawn from ``[1 - jitter, 1 + jitter)``:
    the mean period stays ``seconds``, and loops that ran in step drift
    apart within a few periods."""
    return seconds * (1.0 - jitter + 2.0 * jitter * (rng or _RANDOM).random())
