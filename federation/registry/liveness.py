"""Liveness: a source's heartbeats renew a leased ``alive/<source>`` key
(carrying the revision its agent has materialized, for lag); when the
lease lapses the key goes, and the leader marks the source's shards stale.
A source beating again has them un-staled."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from federation.model import SourceRef, keys
from federation.registry.leader import Fence
from federation.registry.sets import EndpointSets
from federation.shared.clock import Backoff, Clock
from federation.store import Compare, EventType, LeaseNotFound, Put, Store, StoreError

log = logging.getLogger("federation.registry")


@dataclass(frozen=True, slots=True)
class Liveness:
    """A live source's liveness record: since when, and its agent's
    materialized revision (None from agents that do not report one)."""

    since: float
    applied: int | None = None
    applied_at: float = 0.0


class Heartbeats:
    def __init__(
        self, store: Store, *, prefix: str, clock: Clock, ttl: int, sets: EndpointSets
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.ttl = ttl
        self.sets = sets

    def _key(self, relative: str) -> str:
        return self.prefix + relative

    async def renew(self, source: SourceRef, applied: int | None = None) -> int | None:
        """Renew the source's liveness lease if it has a live one; its TTL,
        or None when there is none to renew (``grant`` then).  ``applied``
        is the revision its agent has materialized: the liveness record
        keeps it (rewritten only when it moved), for lag."""
        key = self._key(keys.alive_key(source))
        got = await self.store.get(key)
        if got.kv is None:
            return None
        record = json.loads(got.kv.value)
        try:
            ttl = await self.store.keepalive(record["lease"])
        except LeaseNotFound:
            return None
        if applied is not None and record.get("applied") != applied:
            moved = {**record, "applied": applied, "appliedAt": self.clock.now()}
            # Compared, so a record a lapse replaced meanwhile is kept.
            await self.store.txn(
                [Compare(key=key, mod_revision=got.kv.mod_revision)],
                [Put(key=key, value=json.dumps(moved).encode(), lease=record["lease"])],
            )
        return ttl

    async def grant(self, source: SourceRef, applied: int | None = None) -> int:
        """A new liveness lease and record for a registered source (the
        caller checked) that has none; its sets are un-staled.  Returns
        the TTL."""
        key = self._key(keys.alive_key(source))
        lease = await self.store.grant(self.ttl)
        record = {"lease": lease.id, "since": self.clock.now()}
        if applied is not None:
            record |= {"applied": applied, "appliedAt": self.clock.now()}
        await self.store.put(key, json.dumps(record).encode(), lease=lease.id)
        await self.sets.mark(source, stale=False)
        return lease.ttl

    async def records(self) -> dict[str, Liveness]:
        """Each live source: when its current liveness lease was granted,
        and the revision its agent last said it had materialized."""
        out: dict[str, Liveness] = {}
        for kv in (await self.store.range(self._key(keys.ALIVE))).kvs:
            try:
                record = json.loads(kv.value)
                applied = record.get("applied")
                out[str(keys.parse_alive(kv.key))] = Liveness(
                    since=float(record["since"]),
                    applied=None if applied is None else int(applied),
                    applied_at=float(record.get("appliedAt", 0.0)),
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return out

    async def sweep(
        self, sources: Callable[[], Awaitable[list[SourceRef]]], fence: Fence | None = None
    ) -> None:
        """Mark a source's endpoint shards stale when its liveness key goes
        (lease expired), until cancelled.  At start, every one of
        ``sources`` (the members) without a liveness key is marked.
        Singleton work: run by the leader, fenced."""
        retry = Backoff(0.1, 5.0).retry()
        while True:
            try:
                result = await self.store.range(self._key(keys.ALIVE))
                retry.succeeded()
                alive = {keys.parse_alive(kv.key) for kv in result.kvs}
                for source in await sources():
                    if source not in alive:
                        await self.sets.mark(source, stale=True, fence=fence)
                async for event in self.store.watch(self._key(keys.ALIVE), result.revision + 1):
                    if event.type is EventType.DELETE:
                        source = keys.parse_alive(event.key)
                        log.info("%s missed its heartbeats: its endpoints are stale", source)
                        await self.sets.mark(source, stale=True, fence=fence)
            except StoreError as err:  # Unavailable, a timed-out etcd watch, any backend fault
                delay = retry.failed()
                log.warning("liveness: store failed (%s); retrying in %.1fs", err, delay)
                await self.clock.sleep(delay)


__all__ = ["Heartbeats", "Liveness"]
