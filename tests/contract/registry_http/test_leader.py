"""Leader election for the registry's singleton work, on a real SQLite file
and a real etcd: one replica leads, the next takes over when it stops or
dies, a deposed leader's fenced writes are refused, and with two registry
replicas on one etcd an expired source is marked stale exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.model import EndpointSet, SourceRef, decode
from federation.registry.leader import Deposed, Election, Fence, current_leader
from federation.shared.clock import SystemClock
from federation.sim.etcd_process import EtcdProcess
from federation.store import EventType, Put, Store, open_store
from tests.contract.registry_http.conftest import Harness, clock, running
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

TTL = 2
_prefixes = itertools.count()


@dataclass
class Replicas:
    """Store connections to one data set, each as a replica would hold."""

    url: str
    prefix: str
    shared: bool  # SQLite: one process, one store, however many elections
    stores: list[Store] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def store(self) -> Store:
        if self.shared and self.stores:
            return self.stores[-1]
        opened = await open_store(self.url)
        self.stores.append(opened)
        return opened

    async def kill(self, task: asyncio.Task[None]) -> None:
        """The replica's connection goes first, so it can neither resign nor
        renew; then the task (SQLite: the whole process) stops."""
        await self.stores[0].close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.shared:
            self.stores.clear()

    async def election(
        self, replica: str, work: Callable[[Fence], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[None]:
        election = Election(
            await self.store(),
            self.prefix + "leader",
            replica=replica,
            clock=SystemClock(),
            ttl=TTL,
        )
        task = asyncio.create_task(election.run(work), name=f"election {replica}")
        self.tasks.append(task)
        return task

    async def leader(self) -> str | None:
        found = await current_leader(self.stores[-1], self.prefix + "leader")
        return None if found is None else found.replica


@pytest.fixture(params=["sqlite", "etcd"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        etcd: EtcdProcess = request.getfixturevalue("etcd_server")
        url = "etcd://{}:{}".format(*etcd.endpoint)
    prefix = f"/federation-leader-{next(_prefixes)}-{time.time_ns()}/"
    made = Replicas(url, prefix, shared=request.param == "sqlite")
    yield made
    for task in made.tasks:
        task.cancel()
    for task in made.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for store in made.stores:
        await store.close()


class Terms:
    """What the singleton work saw: one entry per term that started."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Fence]] = []

    def work(self, replica: str) -> Callable[[Fence], Coroutine[Any, Any, None]]:
        async def run(fence: Fence) -> None:
            self.started.append((replica, fence))
            await asyncio.Event().wait()

        return run


async def test_one_replica_leads_and_the_next_takes_over_when_it_stops(
    replicas: Replicas,
) -> None:
    terms = Terms()
    first = await replicas.election("a", terms.work("a"))
    await eventually(lambda: len(terms.started) == 1, what="a first term")
    await replicas.election("b", terms.work("b"))
    assert await replicas.leader() == "a"
    first.cancel()  # a clean stop resigns: b need not wait for the lease
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await eventually(lambda: len(terms.started) == 2, timeout=TTL, what="b to take over")
    assert [replica for replica, _ in terms.started] == ["a", "b"]
    assert await replicas.leader() == "b"
    assert terms.started[1][1].revision > terms.started[0][1].revision


@pytest.mark.parametrize("replicas", ["etcd"], indirect=True)  # SQLite runs one replica
async def test_a_dead_leader_is_replaced_within_the_lease_ttl(replicas: Replicas) -> None:
    terms = Terms()
    first = await replicas.election("a", terms.work("a"))
    await eventually(lambda: len(terms.started) == 1, what="a first term")
    await replicas.election("b", terms.work("b"))
    await replicas.kill(first)
    started = time.monotonic()
    await eventually(lambda: len(terms.started) == 2, timeout=TTL * 3, what="b to take over")
    assert time.monotonic() - started <= TTL + 1.5
    assert terms.started[1][0] == "b"


async def test_a_deposed_leader_cannot_write(replicas: Replicas) -> None:
    terms = Terms()
    await replicas.election("a", terms.work("a"))
    await eventually(lambda: len(terms.started) == 1, what="a first term")
    _, old = terms.started[0]
    store = await replicas.store()
    # The key goes behind a's back (as when a pauses past its lease), and b wins.
    await store.delete(old.key)
    await replicas.election("b", terms.work("b"))
    await eventually(lambda: any(r == "b" for r, _ in terms.started), what="b to lead")
    target = replicas.prefix + "work"
    written = await store.txn([old.compare()], [Put(key=target, value=b"from a")])
    assert not written.succeeded
    assert not await old.holds(store)
    with pytest.raises(Deposed):
        await old.check(store)
    assert (await store.get(target)).kv is None


async def test_a_replica_restarted_under_its_name_takes_its_key_back_at_once(
    replicas: Replicas,
) -> None:
    terms = Terms()
    first = await replicas.election("a", terms.work("a"))
    await eventually(lambda: len(terms.started) == 1, what="a first term")
    await replicas.kill(first)  # the key stays until its lease expires
    await replicas.election("a", terms.work("a"))
    await eventually(lambda: len(terms.started) == 2, timeout=TTL / 2, what="a again, at once")


# -- two registry replicas on one etcd --------------------------------------


async def stale_writes(store: Store, prefix: str, key: str, since: int) -> list[bool]:
    """The ``stale`` flag of every write of ``key`` after ``since`` (read from
    the whole prefix, which the head revision is sure to be in)."""
    flags: list[bool] = []
    head = (await store.get(key)).revision
    if head <= since:
        return flags
    async with contextlib.aclosing(store.watch(prefix, since + 1)) as events:
        async for event in events:
            if event.type is EventType.PUT and event.key == key:
                flags.append(decode(EndpointSet, event.value).stale)
            if event.revision >= head:
                break
    return flags


async def test_two_replicas_mark_an_expired_source_stale_exactly_once(
    etcd_server: EtcdProcess, tmp_path: Path
) -> None:
    prefix = f"/federation-two-{next(_prefixes)}-{time.time_ns()}/"
    url = "etcd://{}:{}".format(*etcd_server.endpoint)
    first = Harness("etcd", tmp_path / "a", url, prefix, clock(), leader_ttl=TTL)
    second = Harness("etcd", tmp_path / "b", url, prefix, clock(), leader_ttl=TTL)
    async with running(first), running(second):
        store = await open_store(url)
        try:
            await _two_replicas(first, second, store, prefix)
        finally:
            await store.close()


async def _two_replicas(first: Harness, second: Harness, store: Store, prefix: str) -> None:
    east = await first.enrol_cluster("east")
    await east.heartbeat(SourceRef.parse("cluster:east"))
    published = await east.publish(endpoint_set("east"))
    key = prefix + "endpoints/shop/cart/cluster:east/0"
    await eventually(lambda: _stale(store, key), timeout=20, what="east marked stale")
    assert await stale_writes(store, prefix, key, int(published["revision"])) == [True]

    names = {h.registry.election.replica: h for h in (first, second)}
    leader = await current_leader(store, prefix + "leader")
    assert leader is not None and leader.replica in names
    status = await first.admin().request("GET", "/v1/status")
    assert status["leader"]["replica"] == leader.replica
    # The leader stops; the other replica takes the singleton work over.
    stopped = names.pop(leader.replica)
    (remaining,) = names.values()
    for client in stopped.clients:
        await client.close()
    stopped.clients.clear()
    await stopped.stop()

    async def taken_over() -> bool:
        now = await current_leader(store, prefix + "leader")
        return now is not None and now.replica == remaining.registry.election.replica

    await eventually(taken_over, timeout=TTL * 3, what="the other replica to lead")
    west = await remaining.enrol_cluster("west")
    await west.heartbeat(SourceRef.parse("cluster:west"))
    await west.publish(endpoint_set("west"))
    west_key = prefix + "endpoints/shop/cart/cluster:west/0"
    await eventually(lambda: _stale(store, west_key), timeout=20, what="west marked stale")


async def _stale(store: Store, key: str) -> bool:
    kv = (await store.get(key)).kv
    return kv is not None and decode(EndpointSet, kv.value).stale
