"""PATCH lines on the watch: a churned endpoint set reaches a watcher that
asked for deltas as a delta a fraction of its size, and a view following
them holds exactly what a fresh snapshot holds; a watcher that did not ask
gets whole objects as before."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from typing import Any

import aiohttp

from agents.client import Event, RegistryClient
from agents.view import View, follow
from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from federation.shared.clock import SystemClock
from tests.contract.registry_http.conftest import Harness
from tests.support import eventually

EAST = SourceRef.parse("cluster:east")
CART = ServiceRef(namespace="shop", name="cart")


def hundred(generation: int, unready: frozenset[int] = frozenset()) -> EndpointSet:
    return EndpointSet(
        service=CART,
        source=EAST,
        generation=generation,
        endpoints=tuple(
            Endpoint(
                address=f"10.1.0.{i + 1}",
                ports=(EndpointPort(name="http", port=8080),),
                locality=Locality(region="eu", zone="eu-1a", cluster="east"),
                ready=i not in unready,
            )
            for i in range(100)
        ),
    )


async def lines_until(answer: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for raw in answer.content:
        line = json.loads(raw)
        if line["type"] != "BOOKMARK":
            out.append(line)
        if len(out) == count:
            return out
    return out


async def test_a_flip_is_a_small_patch_and_plain_watchers_get_objects(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    await east.publish(hundred(1))
    since, _ = await east.collect_snapshot()
    ssl = east.ssl_context  # the client's own TLS context, to read raw lines
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as http,
        http.get(f"{harness.url}/v1/watch?since={since}&patches=true") as deltas,
        http.get(f"{harness.url}/v1/watch?since={since}") as plain,
    ):
        await east.publish(hundred(2, frozenset({7})))
        (patch,) = await asyncio.wait_for(lines_until(deltas, 1), 10)
        (whole,) = await asyncio.wait_for(lines_until(plain, 1), 10)
    assert patch["type"] == "PATCH" and whole["type"] == "PUT"
    assert patch["revision"] == whole["revision"] and patch["key"] == whole["key"]
    assert patch["patch"]["fields"] == {"generation": 2}
    assert [s[:2] for s in patch["patch"]["endpoints"]] == [[7, 8]]
    assert len(json.dumps(patch)) * 10 < len(json.dumps(whole))


async def test_patches_bad_value_is_400(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(f"{harness.url}/v1/watch?patches=yes") as answer,
    ):
        assert answer.status == 400
        assert (await answer.json())["field"] == "patches"


async def test_a_view_following_patches_holds_what_a_snapshot_holds(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    watcher = await harness.enrol_cluster("west")
    current = hundred(1)
    await east.publish(current)
    view = View()
    patched: list[int] = []

    def changed(change: Any) -> None:
        if isinstance(change, Event) and change.type == "PATCH":
            patched.append(change.revision)
        view.take(change)

    consumer = RegistryClient(harness.url, watcher.credentials)
    task = asyncio.create_task(follow(consumer, SystemClock(), changed))
    try:
        await eventually(lambda: view.authoritative)
        for generation in range(2, 22):  # flips, an added and a removed endpoint
            endpoints = current.endpoints
            if generation % 5 == 0:
                endpoints = endpoints[:3] + endpoints[4:]
            elif generation % 7 == 0:
                extra = replace(endpoints[0], address=f"10.2.0.{generation}")
                endpoints = (*endpoints[:10], extra, *endpoints[10:])
            else:
                i = generation % len(endpoints)
                endpoints = (
                    *endpoints[:i],
                    replace(endpoints[i], ready=not endpoints[i].ready),
                    *endpoints[i + 1 :],
                )
            current = replace(current, generation=generation, endpoints=endpoints)
            await east.publish(current)
        await eventually(lambda: view.sets.get(CART, {}).get(str(EAST)) == current)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(patched) >= 15  # the churn came as deltas, not whole sets
    fresh = View()
    async for change in watcher.snapshot():
        fresh.take(change)
    assert fresh.sets == view.sets
