"""What an agent knows of the registry, and the loop that keeps it.

``View`` holds the endpoint sets by service and source, the policies, the
VM workloads and the trust bundle; ``follow`` runs the registry's snapshot-then-watch stream
into a callback, with one log line and capped backoff when it breaks;
``keep_alive`` renews a source's liveness lease.  Cluster and VM agents
share all three."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.client import (
    REVOKED_RETRY,
    Bookmark,
    Event,
    RegistryClient,
    RegistryError,
    Relist,
    Revoked,
    Synced,
    UnreadableStream,
)
from agents.stream import Record
from federation.model import (
    EndpointSet,
    ServiceRef,
    SourceRef,
    TrafficPolicy,
    ValidationError,
    Workload,
    keys,
    merge_shards,
    patches,
)
from federation.shared.clock import Backoff, Clock, jittered
from federation.trust.bundle import TrustBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Touched:
    """What one change of the view affects: these services, or (``all``)
    every service (a VM workload or the trust bundle changed)."""

    services: frozenset[ServiceRef] = frozenset()
    all: bool = False

    def __or__(self, other: Touched) -> Touched:
        return Touched(services=self.services | other.services, all=self.all or other.all)


NOTHING = Touched()
EVERYTHING = Touched(all=True)


@dataclass
class View:
    """The registry's state as one agent follows it.

    ``sets`` holds per service one endpoint set per source, its shards
    merged; ``apply`` takes one object by its registry key and says which
    services it touched, so a keyed reconciler runs only those.  A relist
    marks every key unconfirmed (``relist``); the snapshot's objects confirm
    theirs; ``synced`` drops the rest, as deletions.  Restart is not
    removal: a view seeded from saved imports is replaced only by a
    complete snapshot."""

    sets: dict[ServiceRef, dict[str, EndpointSet]] = field(default_factory=dict)
    policies: dict[ServiceRef, TrafficPolicy] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)  # VMs by name
    bundle: TrustBundle | None = None
    authoritative: bool = False  # a registry snapshot completed in this process
    loaded: bool = False  # from the registry, or (cluster agent) from its saved imports
    revision: int = 0  # the last registry revision applied
    shards: dict[tuple[ServiceRef, str], dict[int, EndpointSet]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> why it is left out
    _keys: dict[str, str] = field(default_factory=dict)  # registry key -> kind
    _unconfirmed: set[str] | None = None

    def apply(self, kind: str, obj: Record | None, key: str) -> Touched:
        """One object of ``kind`` at registry ``key``: its model record, or
        None: deleted."""
        if self._unconfirmed is not None:
            self._unconfirmed.discard(key)
        if obj is None:
            self._keys.pop(key, None)
        else:
            self._keys[key] = kind
        if kind == "EndpointSet":
            assert obj is None or isinstance(obj, EndpointSet)
            return self._put_shard(key, obj)
        if kind == "TrafficPolicy":
            service = keys.parse_policy(key)
            if obj is None:
                self.policies.pop(service, None)
            else:
                assert isinstance(obj, TrafficPolicy)
                self.policies[service] = obj
            return Touched(services=frozenset({service}))
        if kind == "Workload":
            name = keys.parse_vm(key)
            if obj is None:
                self.workloads.pop(name, None)
            else:
                assert isinstance(obj, Workload)
                self.workloads[name] = obj
            return EVERYTHING
        if kind == "TrustBundle" and isinstance(obj, TrustBundle):
            self.bundle = obj
            return EVERYTHING
        return NOTHING

    def _put_shard(self, key: str, endpoint_set: EndpointSet | None) -> Touched:
        where = keys.parse_shard(key)
        service, source = where.service, str(where.source)
        shards = self.shards.setdefault((service, source), {})
        if endpoint_set is None:
            shards.pop(where.shard, None)
        else:
            shards[where.shard] = endpoint_set
        if shards:
            self.sets.setdefault(service, {})[source] = merge_shards(shards.values())
        else:
            self.shards.pop((service, source), None)
            self.sets.get(service, {}).pop(source, None)
            if not self.sets.get(service):
                self.sets.pop(service, None)
        return Touched(services=frozenset({service}))

    def seed(self, endpoint_set: EndpointSet) -> None:
        """A source's set as saved in this cluster (restart during an
        outage), held as its shard 0 until a complete snapshot says what
        the registry has."""
        where = keys.ShardKey(service=endpoint_set.service, source=endpoint_set.source)
        self.apply("EndpointSet", endpoint_set, where.key)

    def relist(self) -> None:
        """A snapshot begins: every key is unconfirmed until it shows up."""
        self._unconfirmed = set(self._keys)

    def synced(self, revision: int) -> Touched:
        """The snapshot is complete: what it did not confirm is gone."""
        touched = NOTHING
        for key in sorted(self._unconfirmed or ()):
            kind = self._keys.get(key)
            if kind is not None:
                touched |= self.apply(kind, None, key)
        self._unconfirmed = None
        self.authoritative = self.loaded = True
        self.revision = revision
        return touched

    def take(self, change: Relist | Synced | Event) -> Touched:
        """One item of the registry's stream."""
        if isinstance(change, Relist):
            self.relist()
            return NOTHING
        if isinstance(change, Synced):
            return self.synced(change.revision)
        self.revision = max(self.revision, change.revision)
        if change.type == "PATCH":
            return self.patch(change.kind, change.object, change.key)
        if change.unreadable is not None:  # left out; every other object goes on
            if self._unconfirmed is not None:
                self._unconfirmed.discard(change.key)  # present, so not a deletion
            if change.key not in self.unreadable:
                log.warning("leaving out %s %s: %s", change.kind, change.key, change.unreadable)
            self.unreadable[change.key] = change.unreadable
            return NOTHING
        self.unreadable.pop(change.key, None)
        if change.type != "PUT":
            return self.apply(change.kind, None, change.key)
        return self.apply(change.kind, change.record, change.key)

    def patch(self, kind: str, delta: object, key: str) -> Touched:
        """A delta (``model.patches``) to the endpoint-set shard at ``key``.
        One that does not fit this view's copy means the view missed
        something: UnreadableStream, and the follower relists."""
        current = None
        if kind == "EndpointSet":
            where = keys.parse_shard(key)
            current = self.shards.get((where.service, str(where.source)), {}).get(where.shard)
        if current is None:
            raise UnreadableStream(f"a PATCH for {key}, which this agent does not hold")
        try:
            changed = patches.patched(current, delta)
        except ValidationError as err:
            message = f"a PATCH for {key} does not fit this agent's copy: {err}"
            raise UnreadableStream(message) from err
        return self._put_shard(key, changed)


async def follow(
    client: RegistryClient,
    clock: Clock,
    on_change: Callable[[Relist | Synced | Event], Any],
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Every Relist, Synced and Event of the registry's stream to ``on_change``
    (awaited if it returns an awaitable), until cancelled."""
    retry = Backoff(0.1, 5.0).retry()
    while True:
        try:
            async with contextlib.aclosing(client.changes(patches=True)) as changes:
                async for change in changes:
                    retry.succeeded()
                    if isinstance(change, Bookmark):
                        continue
                    done = on_change(change)
                    if done is not None:
                        await done
        except RegistryError as err:
            on_error()
            delay = retry.failed()
            log.warning("registry: %s; retrying in %.1fs", err, delay)
            await clock.sleep(delay)


async def keep_alive(
    client: RegistryClient,
    source: SourceRef,
    clock: Clock,
    on_error: Callable[[], None] = lambda: None,
    applied: Callable[[], int | None] = lambda: None,
) -> None:
    """Heartbeat ``source`` three times per lease TTL, until cancelled,
    saying each time the revision ``applied`` says is materialized.  Each
    wait is jittered (+-20%): agents started together, or answered together
    after a registry stall, would otherwise beat in step, a burst of
    hundreds of heartbeats every period that holds up the registry's
    publishes (docs/performance.md, run O)."""
    interval = 5.0
    failing = 0  # heartbeats failed in a row: an outage is said once a minute, not every beat
    while True:
        try:
            answer = await client.heartbeat(source, applied())
            interval = max(float(answer.get("ttlSeconds", 15)) / 3, 0.2)
            if failing:
                log.info("heartbeat: the registry answers again after %d failures", failing)
            failing = 0
        except Revoked:  # removed: the client said so once; ask again now and then
            on_error()
            interval = REVOKED_RETRY
        except RegistryError as err:
            on_error()
            failing += 1
            if failing == 1 or failing * interval % 60.0 < interval:
                log.warning("heartbeat: %s (failed %d times in a row)", err, failing)
        await clock.sleep(jittered(interval))
