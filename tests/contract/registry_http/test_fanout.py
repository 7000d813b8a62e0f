"""The hub's fan-out under concurrent writes: streams parked on the hub are
written by the hub itself (decision 58), and group commit puts several
changes in one etcd revision.  Every stream still gets every change exactly
once, in revision order, whichever way its lines went out."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp

from federation.model import SourceRef
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

CLUSTERS = 12
ROUNDS = 8
STREAMS = 6
SENT = re.compile(r'federation_watch_events_sent_total\{type="(PUT|PATCH)"\} ([0-9.e+]+)')


async def lines_sent(harness: Harness, ssl: object) -> float:
    """PUT and PATCH lines the registry counts as sent, over all streams."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as http,
        http.get(harness.url + "/metrics") as answer,
    ):
        text = await answer.text()
    return sum(float(count) for _, count in SENT.findall(text))


async def test_every_stream_gets_every_concurrent_change_once(harness: Harness) -> None:
    names = [f"c{i}" for i in range(CLUSTERS)]
    publishers = [await harness.enrol_cluster(name) for name in names]
    for name, client in zip(names, publishers, strict=True):
        await client.heartbeat(SourceRef.parse(f"cluster:{name}"))
    since, _ = await publishers[0].collect_snapshot()
    sent_before = await lines_sent(harness, publishers[0].ssl_context)
    got: list[list[tuple[int, str]]] = [[] for _ in range(STREAMS)]
    opened: list[None] = []

    async def stream(index: int, patches: bool) -> None:
        query = f"since={since}" + ("&patches=true" if patches else "")
        ssl = publishers[index].ssl_context
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as http,
            http.get(f"{harness.url}/v1/watch?{query}") as answer,
        ):
            assert answer.status == 200
            opened.append(None)
            async for raw in answer.content:
                line = json.loads(raw)
                if line["type"] in ("PUT", "PATCH") and line["key"].startswith("endpoints/"):
                    got[index].append((line["revision"], line["key"]))

    readers = [asyncio.create_task(stream(i, patches=i % 2 == 0)) for i in range(STREAMS)]
    try:
        await eventually(lambda: len(opened) == STREAMS, what="every stream open")
        written: list[tuple[int, str]] = []
        for generation in range(1, ROUNDS + 1):
            answers = await asyncio.gather(
                *(
                    client.publish(endpoint_set(name, generation, f"127.0.1.{generation + 1}"))
                    for name, client in zip(names, publishers, strict=True)
                )
            )
            written += [
                (a["revision"], f"endpoints/shop/cart/cluster:{n}/0")
                for a, n in zip(answers, names, strict=True)
            ]
        want = sorted(written)
        await eventually(
            lambda: all(len(lines) >= len(want) for lines in got), what="every change everywhere"
        )
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    # Counted once per line and stream, whether the hub or the stream wrote it.
    assert await lines_sent(harness, publishers[0].ssl_context) - sent_before == STREAMS * len(want)
    for lines in got:
        revisions = [revision for revision, _ in lines]
        assert revisions == sorted(revisions), "out of revision order"
        assert sorted(lines) == want, "a change missing or repeated"
