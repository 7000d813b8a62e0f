"""Removing a member revokes it at once: every route refuses its credential
with 401 Revoked, its open watch stream ends, its unused join tokens go, and
no token of an earlier incarnation admits a member registered again under
the same name.  Expired tokens are swept.  SQLite and etcd."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from agents.client import RegistryClient, RegistryError, Revoked
from federation.api.app import ROUTES
from federation.model import SourceRef, keys
from federation.registry import NotFound
from federation.store import DEFAULT_PREFIX
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

WEST = SourceRef.parse("cluster:west")
PARAMS = {"name": "west", "namespace": "shop", "source": "cluster:west"}


def concrete(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path


async def tokens_held(harness: Harness) -> list[dict[str, Any]]:
    assert harness.store is not None
    held = await harness.store.range(harness.prefix + "tokens/")
    return [json.loads(kv.value) for kv in held.kvs]


async def test_every_route_refuses_a_removed_member(harness: Harness) -> None:
    west = await harness.enrol_cluster("west")
    await west.heartbeat(WEST)
    await west.publish(endpoint_set("west"))
    await harness.admin().request("DELETE", "/v1/clusters/west")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=west.ssl_context))
    refused: dict[str, tuple[int, str]] = {}
    try:
        for route in ROUTES:
            url = harness.url + concrete(route.path)
            async with session.request(route.method, url, json={}) as answer:
                body = await answer.json(content_type=None)
                refused[f"{route.method} {route.path}"] = (answer.status, body.get("reason"))
    finally:
        await session.close()
    assert refused == {key: (401, "Revoked") for key in refused}, refused
    assert len(refused) == len(ROUTES)
    with pytest.raises(Revoked, match="west was removed from the federation"):
        await west.heartbeat(WEST)
    # What west published went with it.
    _, events = await harness.admin().collect_snapshot()
    assert not [e for e in events if e.kind == "EndpointSet"]


async def test_an_open_watch_of_a_removed_member_ends(harness: Harness) -> None:
    west = await harness.enrol_cluster("west")
    revision, _ = await west.collect_snapshot()
    lines: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=west.ssl_context)) as http,
        http.get(f"{harness.url}/v1/watch?since={revision}") as answer,
    ):
        assert answer.status == 200

        async def read() -> None:
            async for raw in answer.content:
                lines.append(json.loads(raw))

        reading = asyncio.create_task(read())
        try:
            await eventually(lambda: bool(lines), what="a first bookmark")
            await harness.admin().request("DELETE", "/v1/clusters/west")
            await asyncio.wait_for(reading, 10)  # the server ended the stream
        finally:
            reading.cancel()
    assert lines[-1]["type"] == "ERROR" and lines[-1]["code"] == 401, lines[-1]
    assert lines[-1]["reason"] == "Revoked"
    # Nothing after the removal reached the removed member.
    assert not [line for line in lines if line.get("kind") == "Cluster"]


async def test_a_token_never_outlives_its_incarnation(harness: Harness) -> None:
    admin = harness.admin()
    first = await harness.add_cluster("west")
    spare = (await admin.request("POST", "/v1/clusters/west/tokens", {}))["token"]
    assert {t["identity"] for t in await tokens_held(harness)} == {"cluster/west"}
    await admin.request("DELETE", "/v1/clusters/west")
    assert await tokens_held(harness) == []  # removal took its unused tokens
    again = await harness.add_cluster("west")
    for stale in (first, spare):
        with pytest.raises(RegistryError) as refused:
            await RegistryClient.join(harness.url, stale)
        assert refused.value.status == 401
    credentials, identity = await RegistryClient.join(harness.url, again)
    assert identity.endswith("/cluster/west")
    client = harness.client(credentials)
    await client.heartbeat(WEST)


async def test_expired_tokens_are_swept_by_the_leader(harness: Harness) -> None:
    admin = harness.admin()
    await admin.request("POST", "/v1/clusters", {
        "record": {"name": "west", "locality": {"region": "eu", "zone": "eu-1a"}},
        "tokenTtlSeconds": 60,
    })  # fmt: skip
    kept = await admin.request("POST", "/v1/clusters/west/tokens", {"tokenTtlSeconds": 3600})
    assert len(await tokens_held(harness)) == 2
    harness.clock.advance(601)  # past the first token's expiry and the sweep interval

    async def swept() -> bool:
        return len(await tokens_held(harness)) == 1

    await eventually(swept, timeout=20, what="the expired token swept")
    credentials, _ = await RegistryClient.join(harness.url, kept["token"])
    assert credentials.certificate is not None


async def test_a_removed_member_can_be_registered_again(harness: Harness) -> None:
    west = await harness.enrol_cluster("west")
    await harness.admin().request("DELETE", "/v1/clusters/west")
    assert harness.store is not None
    assert (await harness.store.get(DEFAULT_PREFIX + "removing/clusters/west")).kv is None
    assert (await harness.store.get(harness.prefix + "removing/clusters/west")).kv is None
    with pytest.raises(Revoked):
        await west.heartbeat(WEST)
    again = await harness.enrol_cluster("west")
    await again.heartbeat(WEST)


async def test_a_heartbeat_renews_a_live_lease_and_grants_only_to_a_member(
    harness: Harness,
) -> None:
    """A live lease is renewed as it is (the member record is not read on
    that path); a source without one gets a lease only once its member
    record is read, so a removed source (its liveness key went with it)
    is refused even by a replica whose roster has not heard yet."""
    assert harness.store is not None
    alive = harness.prefix + keys.alive_key(WEST)
    west = await harness.enrol_cluster("west")
    await west.heartbeat(WEST)
    first = json.loads((await harness.store.get(alive)).kv.value)  # type: ignore[union-attr]
    assert await harness.registry.heartbeat(WEST) > 0
    renewed = json.loads((await harness.store.get(alive)).kv.value)  # type: ignore[union-attr]
    assert renewed["lease"] == first["lease"]
    await harness.admin().request("DELETE", "/v1/clusters/west")
    with pytest.raises(NotFound, match="not registered"):
        await harness.registry.heartbeat(WEST)
    assert (await harness.store.get(alive)).kv is None
