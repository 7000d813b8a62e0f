"""The highly available control plane under faults, all real processes on
loopback: a 3-member etcd cluster, two registry replicas (``fedctl registry
serve``), a cluster publishing as fast as it is answered, and a watcher
starting on each replica.  Faults: the etcd leader SIGKILLed, the leading
registry replica SIGKILLed, quorum lost for 10 s.

Every test then checks what the servers hold against what the clients saw:
every acknowledged publish is in etcd's history and the last one is the
stored value; each watcher saw exactly etcd's history of the key (no gap, no
repeat, no relist); the singleton work ran once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agents.client import RegistryClient, RegistryError
from agents.credentials import CredentialKeeper
from federation.model import SourceRef
from federation.registry.leader import current_leader
from federation.shared.clock import Backoff, SystemClock
from federation.sim.etcd_process import EtcdCluster
from federation.store import DEFAULT_PREFIX, EventType, Store, open_store
from federation.trust.bundle import TrustBundle
from federation.trust.rotation import Phase
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.faults.replicas import (
    Publisher,
    Replica,
    Watcher,
    admin_client,
    heartbeats,
    stale_flags,
)
from tests.support import eventually

log = logging.getLogger(__name__)
EAST = SourceRef.parse("cluster:east")
KEY = "endpoints/shop/cart/cluster:east/0"


@dataclass
class World:
    cluster: EtcdCluster
    replicas: list[Replica]
    store: Store
    admin: RegistryClient
    publisher: Publisher
    watchers: list[Watcher]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    clients: list[RegistryClient] = field(default_factory=list)

    def client(self, credentials: object, order: list[Replica], **kwargs: object) -> RegistryClient:
        made = RegistryClient(",".join(r.url for r in order), credentials, **kwargs)  # type: ignore[arg-type]
        self.clients.append(made)
        return made

    async def enrol(self, name: str, order: list[Replica]) -> RegistryClient:
        record = {"name": name, "locality": {"region": "eu", "zone": "eu-1a"}}
        answer = await self.admin.request("POST", "/v1/clusters", {"record": record})
        credentials, _ = await RegistryClient.join(",".join(r.url for r in order), answer["token"])
        return self.client(credentials, order, retries=5, backoff=Backoff(0.1, 1.0))

    async def leading(self) -> Replica:
        leader = await current_leader(self.store, DEFAULT_PREFIX + "leader")
        assert leader is not None, "no replica leads"
        return next(r for r in self.replicas if r.name == leader.replica)

    async def history(self, key: str, since: int) -> list[tuple[int, bytes]]:
        """etcd's own record of every write of ``key`` after ``since`` (read
        from the whole prefix, which the head revision is sure to be in)."""
        head = (await self.store.get(DEFAULT_PREFIX + key)).revision
        writes: list[tuple[int, bytes]] = []
        if head <= since:
            return writes
        async with contextlib.aclosing(self.store.watch(DEFAULT_PREFIX, since + 1)) as events:
            async for event in events:
                if event.type is EventType.PUT and event.key == DEFAULT_PREFIX + key:
                    writes.append((event.revision, event.value))
                if event.revision >= head:
                    break
        return writes

    async def verify(self) -> None:
        """Stop the load, publish once more, and hold the clients to etcd."""
        self.stop.set()
        await asyncio.gather(*self.tasks[:2])  # publisher, heartbeats
        last = await self.publisher.publish_once()
        assert last.status is None, f"the last publish failed with {last.status}"
        for watcher in self.watchers:
            await eventually(
                lambda w=watcher: bool(w.revisions) and w.revisions[-1] >= last.revision,  # type: ignore[misc]
                timeout=30,
                what=f"the last publish at the watcher via {watcher.client.urls}",
            )
        acked = self.publisher.acked
        start = min(w.start for w in self.watchers)
        truth = await self.history(KEY, start)
        # By generation, not revision: a publish retried after its answer was
        # lost (a replica killed mid-request) is answered "already written",
        # with the store's revision of that moment.
        written = {json.loads(value)["generation"] for _, value in truth}
        lost = [o.generation for o in acked if o.revision > start and o.generation not in written]
        assert not lost, f"acknowledged publishes missing from etcd (generations): {lost}"
        stored = (await self.store.get(DEFAULT_PREFIX + KEY)).kv
        assert stored is not None and json.loads(stored.value)["generation"] == last.generation
        for watcher in self.watchers:
            expected = [r for r, _ in truth if r > watcher.start]
            assert watcher.revisions == expected, (
                f"via {watcher.client.urls}: saw {len(watcher.revisions)} events, etcd has "
                f"{len(expected)}; missing {sorted(set(expected) - set(watcher.revisions))[:5]}, "
                f"repeated {len(watcher.revisions) - len(set(watcher.revisions))}"
            )
            assert watcher.relists == 1, f"via {watcher.client.urls}: relisted"


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    cluster = EtcdCluster(3)
    await asyncio.to_thread(cluster.start)
    replicas = [Replica(name, cluster.url, tmp_path / name) for name in ("ra", "rb")]
    store = await open_store(cluster.url)
    made: World | None = None
    try:
        for replica in replicas:
            await replica.start()
        admin = admin_client(replicas, replicas[0].config)
        east = None
        made = World(cluster, replicas, store, admin, Publisher(admin, EAST), [])
        made.clients.append(admin)
        east = await made.enrol("east", replicas)
        made.publisher = Publisher(east, EAST)
        await east.heartbeat(EAST)
        await made.publisher.publish_once()
        for order in (replicas, replicas[::-1]):
            watching = made.client(east.credentials, order, backoff=Backoff(0.05, 0.5))
            made.watchers.append(Watcher(watching, KEY))
        made.tasks = [
            asyncio.create_task(made.publisher.run(made.stop)),
            asyncio.create_task(heartbeats(east, EAST, made.stop)),
            *(asyncio.create_task(w.run()) for w in made.watchers),
        ]
        await eventually(lambda: all(w.start for w in made.watchers), what="watchers synced")  # type: ignore[union-attr]
        yield made
    finally:
        if made is not None:
            made.stop.set()
            for task in made.tasks:
                task.cancel()
            await asyncio.gather(*made.tasks, return_exceptions=True)
            for client in made.clients:
                await client.close()
        await store.close()
        codes = [await replica.stop() for replica in replicas]
        await asyncio.to_thread(cluster.cleanup)
        assert codes == [0] * len(replicas), [r.log_tail() for r in replicas]


def report(what: str, seconds: float) -> None:
    log.warning("unavailability window, %s: %.2f s", what, seconds)


async def test_the_etcd_leader_is_killed_and_restarted(tmp_path: Path) -> None:
    async with world(tmp_path) as made:
        await eventually(lambda: len(made.publisher.acked) > 20, what="load running")
        leader = await asyncio.to_thread(made.cluster.leader)
        killed = time.monotonic()
        await asyncio.to_thread(leader.kill)
        await eventually(
            lambda: any(o.ended > killed + 0.5 for o in made.publisher.acked),
            timeout=10,
            what="publishes acknowledged after the kill",
        )
        await asyncio.to_thread(leader.start)
        count = len(made.publisher.acked)
        await eventually(lambda: len(made.publisher.acked) > count + 20, what="load after restart")
        report("etcd leader SIGKILL", made.publisher.longest_gap(killed))
        failed = [o for o in made.publisher.outcomes if o.status is not None]
        assert not failed, f"publishes failed while etcd kept quorum: {failed[:3]}"
        await made.verify()


async def test_the_leading_replica_is_killed_and_the_other_takes_its_work(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as made:
        west = await made.enrol("west", made.replicas)
        west_source = SourceRef.parse("cluster:west")
        await west.heartbeat(west_source)  # and never again: its lease runs out meanwhile
        west_revision = int((await west.publish(endpoint_set("west")))["revision"])
        leading = await made.leading()
        killed = time.monotonic()
        await leading.kill()
        other = next(r for r in made.replicas if r is not leading)

        async def moved() -> bool:
            now = await current_leader(made.store, DEFAULT_PREFIX + "leader")
            return now is not None and now.replica == other.name

        await eventually(moved, timeout=leading.leader_ttl + 3, what="the other replica to lead")
        taken_over = time.monotonic() - killed
        west_key = "endpoints/shop/cart/cluster:west/0"

        async def west_stale() -> bool:
            kv = (await made.store.get(DEFAULT_PREFIX + west_key)).kv
            return kv is not None and json.loads(kv.value).get("stale", False)

        await eventually(west_stale, timeout=20, what="west marked stale by the new leader")
        await leading.start()
        count = len(made.publisher.acked)
        await eventually(lambda: len(made.publisher.acked) > count + 20, what="load after restart")
        report("leading replica SIGKILL (publishes)", made.publisher.longest_gap(killed))
        report("leading replica SIGKILL (singleton work handed over)", taken_over)
        failed = [o for o in made.publisher.outcomes if o.status is not None]
        assert not failed, f"publishes failed with a replica left: {failed[:3]}"
        await made.verify()
        # The singleton work ran once: west went stale in exactly one write.
        assert stale_flags(await made.history(west_key, west_revision)) == [True]


async def test_etcd_loses_quorum_for_ten_seconds(tmp_path: Path) -> None:
    async with world(tmp_path) as made:
        await eventually(lambda: len(made.publisher.acked) > 20, what="load running")
        lost = made.cluster.members[1:]
        began = time.monotonic()
        for member in lost:
            await asyncio.to_thread(member.kill)
        await eventually(
            lambda: any(o.status == 503 and o.started > began for o in made.publisher.outcomes),
            timeout=30,
            what="a publish refused with 503 while quorum is lost",
        )
        await _assert_503_with_retry_after(made)
        remaining = 10 - (time.monotonic() - began)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the outage itself: a fault held for 10 s
        for member in lost:
            await asyncio.to_thread(member.launch)
        for member in lost:
            await asyncio.to_thread(member.wait_healthy)
        quorum = time.monotonic()
        await eventually(
            lambda: any(o.started > quorum and o.status is None for o in made.publisher.outcomes),
            timeout=5,
            what="a publish acknowledged within 5 s of quorum",
        )
        back = min(o.ended for o in made.publisher.acked if o.started > quorum) - quorum
        report("quorum lost 10 s: publishes after quorum returned", back)
        statuses = {o.status for o in made.publisher.outcomes if o.status is not None}
        assert statuses == {503}, f"publishes failed otherwise than with 503: {statuses}"
        assert all(
            o.ended >= began and o.started <= quorum
            for o in made.publisher.outcomes
            if o.status is not None
        ), "a publish failed that did not overlap the quorum loss"
        await made.verify()


async def _assert_503_with_retry_after(made: World) -> None:
    """The raw answer a client gets while etcd has no quorum."""
    east = made.publisher.client
    body = endpoint_set("east", 10**6).to_wire()
    connector = aiohttp.TCPConnector(ssl=east.ssl_context)  # the agent's own TLS identity
    async with aiohttp.ClientSession(connector=connector) as http:
        url = f"{made.replicas[0].url}/v1/services/shop/cart/sources/cluster:east"
        async with http.put(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as answer:
            assert answer.status == 503, await answer.text()
            assert int(answer.headers["Retry-After"]) >= 1
            assert "message" in await answer.json()


async def acknowledge(client: RegistryClient, until_version: int) -> None:
    """What an agent does in a rotation: install each bundle it is shown,
    renew under the new issuing root, acknowledge; until the rotation is over."""
    keeper = CredentialKeeper(client, SystemClock())
    acked = 0
    while True:
        try:
            _, events = await client.collect_snapshot()
            bundle = next(e.record for e in events if isinstance(e.record, TrustBundle))
            keeper.observe(bundle)
            await keeper.step()
            version = bundle.version
            if bundle.phase == Phase.IDLE.value and version >= until_version:
                return
            if keeper.current and version > acked:
                await client.request("POST", "/v1/trust/acks", {"version": version})
                acked = version
        except RegistryError as err:  # a replica just died: the agent retries
            log.info("acknowledging: %s; retrying", err)
        await asyncio.sleep(0.1)


async def test_the_leading_replica_is_killed_in_the_middle_of_a_root_rotation(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as made:
        rotated = await made.admin.request("POST", "/v1/ca/rotate", {})
        assert rotated["phase"] == Phase.PUBLISHED.value, rotated  # waiting for east
        new_root = next(r["sha256"] for r in rotated["roots"] if r["generation"] == 2)
        leading = await made.leading()
        await leading.kill()
        other = next(r for r in made.replicas if r is not leading)
        await eventually(
            lambda: all(w.client.url == other.url for w in made.watchers),
            timeout=10,
            what="both watchers on the remaining replica",
        )
        east = made.publisher.client
        # Two more bundle versions: switched, then retiring; settling keeps the last.
        await asyncio.wait_for(acknowledge(east, rotated["version"] + 2), 60)
        status = await east.request("GET", "/v1/ca/status")
        assert status["phase"] == Phase.IDLE.value and status["issuer"] == new_root, status
        assert [r["generation"] for r in status["roots"]] == [2]
        await leading.start()
        count = len(made.publisher.acked)
        await eventually(lambda: len(made.publisher.acked) > count + 20, what="load after restart")
        failed = [o for o in made.publisher.outcomes if o.status is not None]
        assert not failed, f"publishes failed during the rotation: {failed[:3]}"
        await made.verify()
