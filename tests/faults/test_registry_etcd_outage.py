"""The registry's watch path survives an outage of its etcd member.

A registry on its own etcd process; watch streams are open, etcd stops for
a while, comes back.  Afterwards every stream, opened before the outage or
after it, receives the next publish, and a source whose heartbeats stop
is still marked stale: no background task died on the way."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.client import RegistryClient, RegistryError
from federation.model import SourceRef
from federation.sim.etcd_process import EtcdProcess
from tests.contract.registry_http.conftest import Harness, clock, running
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

EAST = SourceRef.parse("cluster:east")


@pytest.fixture
async def outage(tmp_path: Path) -> AsyncIterator[tuple[Harness, EtcdProcess]]:
    with EtcdProcess() as etcd:
        host, port = etcd.endpoint
        harness = Harness("etcd", tmp_path / "data", f"etcd://{host}:{port}", "/fed/", clock())
        async with running(harness) as made:
            yield made, etcd


async def stream(client: RegistryClient, url: str, since: int, got: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client.ssl_context)) as http,
        http.get(f"{url}/v1/watch?since={since}") as answer,
    ):
        assert answer.status == 200
        async for raw in answer.content:
            got.append(json.loads(raw))


async def publish_until_it_lands(east: RegistryClient, generation: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            return int((await east.publish(endpoint_set("east", generation)))["revision"])
        except RegistryError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def keep_publishing(east: RegistryClient, acked: list[int], first: int) -> None:
    """Publish every 50 ms through the outage; record what was acknowledged."""
    generation = first
    while True:
        generation += 1
        try:
            answer = await east.publish(endpoint_set("east", generation), retry=False)
            acked.append(int(answer["revision"]))
        except RegistryError:
            pass  # 503 while etcd is down: not acknowledged, so not expected
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("seconds", "busy"), [(3, False), (8, True), (30, True)])
async def test_every_stream_gets_the_next_publish_after_an_etcd_outage(
    outage: tuple[Harness, EtcdProcess], seconds: float, busy: bool
) -> None:
    harness, etcd = outage
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    first = await publish_until_it_lands(east, 1)
    before: list[dict[str, Any]] = []
    acked: list[int] = []
    task = asyncio.create_task(stream(east, harness.url, first, before))
    publisher = asyncio.create_task(keep_publishing(east, acked, 100)) if busy else None
    try:
        await eventually(lambda: any(x["type"] == "BOOKMARK" for x in before), what="a bookmark")
        await asyncio.to_thread(etcd.stop)
        await asyncio.sleep(seconds)  # the outage itself: what is measured is after it
        await asyncio.to_thread(etcd.start)
        if publisher is not None:
            await eventually(lambda: len(acked) >= 3, timeout=30, what="publishes after it")
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        landed = await publish_until_it_lands(east, 100_000)
        after: list[dict[str, Any]] = []
        late = asyncio.create_task(stream(east, harness.url, first, after))
        try:
            for got in (before, after):
                await eventually(
                    lambda got=got: any(
                        x.get("revision") == landed and x["type"] == "PUT" for x in got
                    ),
                    timeout=20,
                    what="the publish after the outage on every stream",
                )
        finally:
            late.cancel()
            await asyncio.gather(late, return_exceptions=True)
        seen = [x["revision"] for x in before if x["type"] == "PUT"]
        assert seen == sorted(set(seen)), "an event arrived twice or out of order"
        assert set(acked) <= set(seen), f"acknowledged but never streamed: {set(acked) - set(seen)}"
        # Liveness still runs: a silent source goes stale.
        harness.clock.advance(harness.heartbeat_ttl + 60)

        async def stale() -> bool:
            detail = await east.request("GET", "/v1/services/shop/cart")
            return bool(detail["items"][0]["stale"])

        await eventually(stale, timeout=30, what="the silent source marked stale")
    finally:
        for running_task in (task, publisher):
            if running_task is not None:
                running_task.cancel()
                await asyncio.gather(running_task, return_exceptions=True)
