"""One leader among the registry replicas, for the work that must run once.

Registry replicas share one store and hold no state of their own, but some
work must happen once however many replicas run: marking a source stale when
its liveness lease expires, moving a root rotation on.  That work runs only
on the replica that holds the leader key (``keys.LEADER``), written by
compare-and-swap on the key's absence and attached to a store lease the
leader keeps alive.  A leader that stops (killed, partitioned, shut down)
loses the key when its lease expires, or at once when it resigns, and the
next replica's compare-and-swap succeeds.

The work is fenced: every write it makes carries ``Fence.compare()``, the
leader key at the revision this term wrote it.  A deposed leader that has
not noticed yet (its process paused, its keepalives lost) cannot write: its
compare fails, the work checks ``Fence.holds`` and stops with ``Deposed``.

The same code runs on SQLite, whose leases behave as etcd's: one process
elects itself.  A replica restarted under the same name finds the key of
its previous life and takes it over without waiting for that lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from federation.shared.clock import Backoff, Clock, SystemClock
from federation.store import (
    Compare,
    EventType,
    KeyValue,
    LeaseId,
    LeaseNotFound,
    Put,
    Store,
    StoreError,
)

log = logging.getLogger("federation.leader")

DEFAULT_LEADER_TTL = 10
RETRY_SECONDS = (0.2, 2.0)  # a failed campaign waits from the first to the second, doubling


class Deposed(Exception):
    """This replica no longer holds the leader key: its singleton work stops."""


@dataclass(frozen=True, slots=True)
class Fence:
    """The leader key as one term wrote it."""

    key: str
    revision: int

    def compare(self) -> Compare:
        return Compare(key=self.key, mod_revision=self.revision)

    async def holds(self, store: Store) -> bool:
        got = await store.get(self.key)
        return got.kv is not None and got.kv.mod_revision == self.revision

    async def check(self, store: Store) -> None:
        """Raise ``Deposed`` unless this term still holds the key (after a
        fenced write failed its compare)."""
        if not await self.holds(store):
            raise Deposed(f"the leader key {self.key} is no longer at revision {self.revision}")


@dataclass(frozen=True, slots=True)
class Leader:
    """Who holds the leader key, as the key says."""

    replica: str
    url: str
    since: float
    revision: int

    def to_wire(self) -> dict[str, object]:
        return {"replica": self.replica, "url": self.url, "since": self.since}

    @classmethod
    def of(cls, kv: KeyValue) -> Leader:
        try:
            data = json.loads(kv.value)
            replica, url, since = str(data["replica"]), str(data["url"]), float(data["since"])
            return cls(replica, url, since, kv.mod_revision)
        except (ValueError, KeyError, TypeError):
            return cls("(unreadable)", "", 0.0, kv.mod_revision)


async def current_leader(store: Store, key: str) -> Leader | None:
    got = await store.get(key)
    return None if got.kv is None else Leader.of(got.kv)


class Election:
    """Campaign for the leader key and run ``work`` while holding it."""

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        replica: str,
        clock: Clock,
        timer: Clock | None = None,
        ttl: int = DEFAULT_LEADER_TTL,
    ) -> None:
        """``clock`` stamps the key; ``timer`` paces renewals and retries, and
        must run at the pace of the store's leases (wall time for etcd)."""
        if ttl < 2:
            raise ValueError(f"the leader lease TTL must be at least 2 s, got {ttl}")
        self.store = store
        self.key = key
        self.replica = replica
        self.url = ""
        self.ttl = ttl
        self.clock = clock
        self.timer = timer or SystemClock()
        self.leading = False
        self.terms = 0  # how often this replica became leader
        self.on_change: Callable[[bool], None] = lambda leading: None

    async def run(self, work: Callable[[Fence], Coroutine[Any, Any, None]]) -> None:
        """Forever: win the key, run ``work`` until deposed, campaign again.
        Store faults are retried with backoff; an error of ``work`` other
        than ``Deposed`` ends this (the caller supervises it)."""
        retry = Backoff(*RETRY_SECONDS).retry()
        while True:
            try:
                fence, lease = await self._campaign()
            except StoreError as err:
                delay = retry.failed()
                log.warning("leader election: %s; retrying in %.1f s", err, delay)
                await self.timer.sleep(delay)
                continue
            retry.succeeded()
            await self._lead(fence, lease, work)

    async def _campaign(self) -> tuple[Fence, LeaseId]:
        while True:
            lease = await self.store.grant(self.ttl)
            value = json.dumps(
                {"replica": self.replica, "url": self.url, "since": self.clock.now()}
            ).encode()
            got = await self.store.get(self.key)
            held = 0 if got.kv is None else got.kv.mod_revision
            if got.kv is not None and Leader.of(got.kv).replica != self.replica:
                held = -1  # someone else's: wait for it to go
            if held >= 0:
                result = await self.store.txn(
                    [Compare(key=self.key, mod_revision=held)],
                    [Put(key=self.key, value=value, lease=lease.id)],
                )
                if result.succeeded:
                    return Fence(self.key, result.revision), lease.id
            with contextlib.suppress(StoreError):
                await self.store.revoke(lease.id)
            await self._await_vacancy()

    async def _await_vacancy(self) -> None:
        """Return when the leader key is gone (or was never there)."""
        got = await self.store.get(self.key)
        if got.kv is None:
            return
        async for event in self.store.watch(self.key, got.revision + 1):
            if event.type is EventType.DELETE:
                return

    async def _lead(
        self, fence: Fence, lease: LeaseId, work: Callable[[Fence], Coroutine[Any, Any, None]]
    ) -> None:
        self.terms += 1
        self._set_leading(True)
        log.info("%s leads (leader key at revision %d)", self.replica, fence.revision)
        working = asyncio.create_task(work(fence), name="singleton work")
        keeping = asyncio.create_task(self._keep(fence, lease), name="leader lease")
        try:
            await asyncio.wait({working, keeping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (working, keeping):
                task.cancel()
            results = await asyncio.gather(working, keeping, return_exceptions=True)
            self._set_leading(False)
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(1.0):  # resign: the next replica need not wait
                    await self.store.revoke(lease)
        for result in results:
            if isinstance(result, Deposed | asyncio.CancelledError):
                continue
            if isinstance(result, BaseExceptionGroup):
                rest = result.split(Deposed)[1]
                if rest is None:
                    continue
                raise rest
            if isinstance(result, BaseException):
                raise result
        log.warning("%s no longer leads", self.replica)

    async def _keep(self, fence: Fence, lease: LeaseId) -> None:
        """Renew the lease every third of its TTL; raise ``Deposed`` when it
        or the key is gone, or when renewals have failed so long that it may be."""
        renewed = self.timer.now()
        while True:
            await self.timer.sleep(self.ttl / 3)
            asked = self.timer.now()
            try:
                await self.store.keepalive(lease)
                renewed = asked
                await fence.check(self.store)
            except LeaseNotFound:
                raise Deposed("the leader lease expired") from None
            except StoreError as err:
                if self.timer.now() - renewed > self.ttl * 2 / 3:
                    raise Deposed(f"cannot renew the leader lease: {err}") from err
                log.warning("leader lease renewal failed (%s); retrying", err)

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        self.on_change(leading)


__all__ = ["DEFAULT_LEADER_TTL", "Deposed", "Election", "Fence", "Leader", "current_leader"]
