"""The watch stream: NDJSON with bookmarks, 410 and snapshot fallback, resume
across a registry restart with no gap and no repeat, and liveness."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from agents.client import Bookmark, Event, RegistryClient, Relist, Synced
from federation.model import SourceRef
from federation.shared.clock import Backoff
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

EAST = SourceRef.parse("cluster:east")


async def test_watch_is_ndjson_with_bookmarks(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    since, _ = await east.collect_snapshot()
    lines: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(f"{harness.url}/v1/watch?since={since}") as answer,
    ):
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("application/x-ndjson")
        published = await east.publish(endpoint_set("east"))
        async for raw in answer.content:
            lines.append(json.loads(raw))
            types = {line["type"] for line in lines}
            if {"PUT", "BOOKMARK"} <= types:
                break
    put = next(line for line in lines if line["type"] == "PUT")
    assert put["kind"] == "EndpointSet"
    assert put["key"] == "endpoints/shop/cart/cluster:east/0"
    assert put["revision"] == published["revision"]
    assert put["object"]["source"] == "cluster:east"


async def test_a_compacted_since_is_410_and_the_client_relists(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    old, _ = await east.collect_snapshot()
    await east.publish(endpoint_set("east", generation=1))
    latest = (await east.publish(endpoint_set("east", generation=2)))["revision"]
    assert harness.store is not None
    await harness.store.compact(latest)
    # A fresh replica's watch hub starts after the compaction, so ``old``
    # can only be served by the store, which no longer has it.
    await harness.restart()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(f"{harness.url}/v1/watch?since={old}") as answer,
    ):
        assert answer.status == 410
        assert (await answer.json())["code"] == 410
    changes = east.changes(since=old)
    relist: list[Relist | Synced | Event] = []
    async for change in changes:
        assert not isinstance(change, Bookmark)
        relist.append(change)
        if isinstance(change, Synced):
            break
    await changes.aclose()
    assert isinstance(relist[0], Relist) and relist[0].revision >= latest
    assert relist[-1] == Synced(relist[0].revision)
    sets = [i for i in relist if isinstance(i, Event) and i.kind == "EndpointSet"]
    assert sets[0].object is not None and sets[0].object["generation"] == 2


async def test_a_reconnecting_agent_misses_nothing_and_sees_nothing_twice(
    harness: Harness,
) -> None:
    """The consumer follows the registry across a restart of the registry;
    every published revision arrives exactly once, in order."""
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    watcher = await harness.enrol_cluster("west")
    consumer = RegistryClient(
        harness.url, watcher.credentials, backoff=Backoff(0.02, 0.2), retries=1
    )
    seen: list[int] = []
    view: dict[str, Any] = {}
    listing = False

    async def follow() -> None:
        nonlocal listing
        async for change in consumer.changes():
            if isinstance(change, Relist | Synced):
                listing = isinstance(change, Relist)
                if listing:
                    view.clear()
            elif isinstance(change, Event):
                if not listing:
                    seen.append(change.revision)
                if change.type == "PUT":
                    view[change.key] = change.object
                else:
                    view.pop(change.key, None)
            else:
                assert isinstance(change, Bookmark)

    task = asyncio.create_task(follow())
    try:
        await eventually(lambda: bool(view) and not listing, what="the first snapshot")
        written: list[int] = []
        for generation in range(1, 31):
            if generation == 16:
                await harness.restart()
                east = harness.client(east.credentials)
            answer = await east.publish(endpoint_set("east", generation=generation))
            written.append(answer["revision"])
        await eventually(lambda: bool(seen) and seen[-1] >= written[-1], what="the last write")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.close()
    assert seen == sorted(set(seen)), "an event arrived twice or out of order"
    assert set(written) <= set(seen), f"missed revisions {sorted(set(written) - set(seen))}"
    assert view["endpoints/shop/cart/cluster:east/0"]["generation"] == 30


async def test_a_silent_source_goes_stale_and_comes_back(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    await east.publish(endpoint_set("east"))

    async def stale() -> bool:
        detail = await east.request("GET", "/v1/services/shop/cart")
        return bool(detail["items"][0]["stale"])

    assert not await stale()
    harness.clock.advance(harness.heartbeat_ttl + 1)  # SQLite leases follow this clock
    went_stale = harness.clock.now()
    await eventually(stale, timeout=20, what="the endpoints marked stale")
    harness.clock.advance(60)  # the time it went stale is kept, for a policy's grace
    await east.publish(endpoint_set("east", generation=2))
    detail = await east.request("GET", "/v1/services/shop/cart")
    assert detail["items"][0]["staleSince"] == went_stale
    status = await east.request("GET", "/v1/status")
    assert status["staleSources"] == ["cluster:east"]
    # Still there: stale, not deleted.
    assert (await east.request("GET", "/v1/services"))["items"][0]["sources"][0]["endpoints"] == 1
    await east.heartbeat(EAST)
    assert not await stale()
    detail = await east.request("GET", "/v1/services/shop/cart")
    assert detail["items"][0]["staleSince"] == 0


async def test_a_watch_from_a_future_revision_is_400_not_a_bookmark(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    revision, _ = await east.collect_snapshot()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(f"{harness.url}/v1/watch?since={revision + 1000}") as answer,
    ):
        assert answer.status == 400
        body = await answer.json()
        assert body["field"] == "since" and "ahead" in body["message"]


async def test_a_client_ahead_of_a_restored_store_relists(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    published = await east.publish(endpoint_set("east"))
    stream = east.changes(since=int(published["revision"]) + 1000)
    try:
        first = await asyncio.wait_for(anext(stream), 10)
        assert isinstance(first, Relist)
        rest = [await asyncio.wait_for(anext(stream), 10) for _ in range(3)]
        keys = [c.key for c in rest if isinstance(c, Event)]
        assert "endpoints/shop/cart/cluster:east/0" in keys
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
