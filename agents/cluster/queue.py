"""A work queue of keys, as client-go's workqueue has it.

A key is *dirty* when it needs reconciling and *processing* while a worker
has it.  Adding a dirty key again does nothing; adding a key that is being
processed marks it dirty, so it runs once more after the worker is done,
never twice at the same time.  ``retry`` puts a failed key back after a
per-key exponential backoff with jitter; ``forget`` clears its failures
once it succeeds.  Delays run on the injected clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from federation.shared.clock import Backoff, Clock
from federation.shared.tasks import stop_tasks

K = TypeVar("K", bound=Hashable)

BASE_DELAY = 0.05
MAX_DELAY = 5.0


class WorkQueue(Generic[K]):
    def __init__(
        self,
        clock: Clock,
        *,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        jitter: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self._backoff = Backoff(base_delay, max_delay)
        self._random = jitter or random.Random()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self._timer = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Keys waiting: queued, processing or delayed."""
        return len(self._dirty | self._processing) + len(self._delayed)

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        heapq.heappush(self._delayed, (self.clock.now() + delay, next(self._order), key))
        self._timer.set()

    async def get(self) -> K:
        """The next dirty key; it is processing until ``done``."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def retry(self, key: K) -> float:
        """Put ``key`` back after its backoff; returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self._backoff.delay(failures, self._random)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    async def run(self) -> None:
        """Move delayed keys in when they are due, until cancelled."""
        while True:
            now = self.clock.now()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, key = heapq.heappop(self._delayed)
                self.add(key)
            delay = self._delayed[0][0] - now if self._delayed else 3600.0
            self._timer.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            changed = asyncio.ensure_future(self._timer.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await stop_tasks(sleeper, changed)


__all__ = ["WorkQueue"]
