"""Sharded endpoint sets at the registry, and records near the size bounds:
every legal record streams to every client; one over the bound is a clear
413; a line a client cannot read is a retried error, never a dead task."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from agents.client import Event, RegistryClient, RegistryError, Relist, Synced
from federation.model import (
    MAX_SET_BYTES,
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    encode,
)
from federation.shared.clock import Backoff
from tests.contract.registry_http.conftest import Harness
from tests.support import eventually

CART = ServiceRef(namespace="shop", name="cart")
EAST = SourceRef.parse("cluster:east")


def wide_set(endpoints: int, ports: int, *, shard: int = 0, generation: int = 1) -> EndpointSet:
    return EndpointSet(
        service=CART,
        source=EAST,
        generation=generation,
        shard=shard,
        endpoints=tuple(
            Endpoint(
                address=f"10.{shard % 256}.{shard // 256 * 16 + i // 256}.{i % 256}",
                ports=tuple(EndpointPort(name=f"p{p}", port=9000 + p) for p in range(ports)),
                locality=Locality(region="eu", zone="eu-1a", cluster="east"),
            )
            for i in range(endpoints)
        ),
    )


async def shards_of(client: RegistryClient) -> dict[int, EndpointSet]:
    _, events = await client.collect_snapshot()
    return {
        int(e.key.rsplit("/", 1)[1]): EndpointSet.from_wire(e.object)
        for e in events
        if e.kind == "EndpointSet" and e.object is not None
    }


async def test_shards_are_records_of_their_own_merged_for_readers(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    for shard in range(3):
        await east.publish(wide_set(1000, 1, shard=shard))
    detail = await east.request("GET", "/v1/services/shop/cart")
    [merged] = detail["items"]
    assert merged["source"] == "cluster:east" and len(merged["endpoints"]) == 3000
    summary = (await east.request("GET", "/v1/services"))["items"][0]["sources"][0]
    assert summary["endpoints"] == 3000 and summary["shards"] == 3
    await east.withdraw(CART, EAST, shard=1)
    assert sorted(await shards_of(east)) == [0, 2]
    await east.withdraw(CART, EAST)  # every shard
    assert await shards_of(east) == {}


async def test_removing_a_member_removes_every_shard(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    for shard in range(4):
        await east.publish(wide_set(10, 1, shard=shard))
    await harness.admin().request("DELETE", "/v1/clusters/east")
    assert await shards_of(harness.admin()) == {}


async def test_another_cluster_cannot_write_a_shard(harness: Harness) -> None:
    await harness.enrol_cluster("east")
    west = await harness.enrol_cluster("west")
    with pytest.raises(RegistryError) as denied:
        await west.publish(wide_set(10, 1, shard=2), retry=False)
    assert denied.value.status == 403


async def test_every_shard_goes_stale_and_comes_back(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    for shard in range(3):
        await east.publish(wide_set(5, 1, shard=shard))
    harness.clock.advance(harness.heartbeat_ttl + 1)

    async def all_stale() -> bool:
        shards = await shards_of(east)
        return len(shards) == 3 and all(s.stale for s in shards.values())

    await eventually(all_stale, timeout=20, what="every shard stale")
    await east.heartbeat(EAST)
    assert not any(s.stale for s in (await shards_of(east)).values())


async def test_a_set_over_the_byte_bound_is_413_and_nothing_is_written(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    too_big = wide_set(1000, 30)
    assert len(encode(too_big)) > MAX_SET_BYTES
    with pytest.raises(RegistryError) as refused:
        await east.publish(too_big, retry=False)
    assert refused.value.status == 413 and "shards" in str(refused.value)
    with pytest.raises(RegistryError) as huge:  # 1,000 x 100 ports: over the body bound too
        await east.publish(wide_set(1000, 100), retry=False)
    assert huge.value.status == 413
    assert await shards_of(east) == {}


async def test_a_legal_set_over_aiohttps_line_limit_reaches_a_watcher(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    big = wide_set(1000, 10)  # a 677 KB line, over aiohttp's 512 KiB readline limit
    assert 524_288 < len(encode(big)) <= MAX_SET_BYTES
    watcher = await harness.enrol_cluster("west")
    got: list[Event] = []
    listed = False

    async def follow() -> None:
        nonlocal listed
        async for change in watcher.changes():
            listed = listed or isinstance(change, Synced)
            if listed and isinstance(change, Event) and change.kind == "EndpointSet":
                got.append(change)

    task = asyncio.create_task(follow())
    try:
        await eventually(lambda: listed, what="the first listing")
        await east.publish(big)
        await eventually(lambda: bool(got), timeout=15, what="the big event")
        assert got[0].object is not None and len(got[0].object["endpoints"]) == 1000
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unreadable_line_is_a_retried_error_not_a_dead_task(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    member = await harness.enrol_cluster("west")
    small = RegistryClient(
        harness.url, member.credentials, max_line=64 * 1024, backoff=Backoff(0.02, 0.1)
    )
    caplog.set_level(logging.WARNING, logger="agents.client")
    relists = 0

    async def follow() -> None:
        nonlocal relists
        async for change in small.changes():
            relists += isinstance(change, Relist)

    task = asyncio.create_task(follow())
    try:
        await eventually(lambda: relists >= 1, what="the first listing")
        await east.publish(wide_set(1000, 10))

        def retried() -> bool:  # said once (outages are not logged per retry), tried again
            said = [r for r in caplog.records if "over 65536 bytes" in r.getMessage()]
            return len(said) >= 1 and small.stream.breaks >= 2

        await eventually(retried, timeout=15, what="the unreadable line retried")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await small.close()


async def test_the_snapshot_streams_many_pages_at_one_revision(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    for shard in range(600):  # with their index keys, more than one store page holds
        await east.publish(wide_set(1, 1, shard=shard))
    changes = east.snapshot()
    first = await anext(changes)
    assert isinstance(first, Relist)
    await east.publish(wide_set(2, 1, shard=0, generation=2))  # after the snapshot's revision
    items = [c async for c in changes]
    assert items[-1] == Synced(first.revision)
    sets = [i for i in items if isinstance(i, Event) and i.kind == "EndpointSet"]
    assert len(sets) == 600
    assert all(i.revision == first.revision for i in sets)
    shard0 = next(i for i in sets if i.key.endswith("/0"))
    assert shard0.object is not None and shard0.object["generation"] == 1


async def test_a_store_failure_is_503_with_retry_after(sqlite_harness: Harness) -> None:
    east = await sqlite_harness.enrol_cluster("east")
    assert sqlite_harness.store is not None
    await sqlite_harness.store.close()
    with pytest.raises(RegistryError) as failed:
        await east.request("GET", "/v1/clusters", retry=False)
    assert failed.value.status == 503
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(f"{sqlite_harness.url}/v1/policies") as answer,
    ):
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "1"
        assert (await answer.json())["reason"] == "ServiceUnavailable"
