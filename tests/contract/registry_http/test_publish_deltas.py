"""A publisher's delta (PATCH on a source's set, decision 50): the client
sends a churned shard as a delta, the registry stores exactly what the
whole shard would have been, and a delta that does not fit the stored
shard, breaks the rules or contradicts the publisher is refused with
nothing written; the client then falls back to the whole shard."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.client import RegistryClient
from agents.errors import Rejected
from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from federation.model.deltas import between
from federation.sim.etcd_process import EtcdProcess
from tests.contract.registry_http.conftest import Harness, clock, running
from tests.contract.registry_http.test_patches import CART, EAST, hundred

PATH = f"/v1/services/{CART}/sources/{EAST}"
ROUTE = "/v1/services/{namespace}/{name}/sources/{source}"


async def stored(harness: Harness, client: Any) -> list[dict[str, Any]]:
    return list((await client.request("GET", f"/v1/services/{CART}"))["items"])


async def requests_by(harness: Harness, client: Any, method: str, code: int) -> float:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client.ssl_context)) as http,
        http.get(harness.url + "/metrics") as answer,
    ):
        text = await answer.text()
    wanted = re.compile(
        rf'federation_http_requests_total\{{code="{code}",method="{method}",'
        rf'route="{re.escape(ROUTE)}"\}} ([0-9.e+]+)'
    )
    found = wanted.search(text)
    return float(found.group(1)) if found else 0.0


async def live_east(harness: Harness) -> RegistryClient:
    """Cluster east, alive, with generation 1 of the shard published whole."""
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    await east.publish(hundred(1))
    return east


async def test_a_churned_shard_goes_as_a_delta_and_is_stored_as_the_whole(
    harness: Harness,
) -> None:
    east = await live_east(harness)
    for generation, unready in ((2, {7}), (3, {7, 40}), (4, {40})):
        await east.publish(hundred(generation, frozenset(unready)))
    assert await requests_by(harness, east, "PATCH", 200) == 3
    assert await requests_by(harness, east, "PUT", 200) == 1
    (held,) = await stored(harness, east)
    assert held == hundred(4, frozenset({40})).to_wire()
    # The same generation again is idempotent, as a whole publish is.
    again = await east.publish(hundred(4, frozenset({40})))
    assert again["written"] is False


async def test_a_delta_from_another_base_is_409_and_the_client_sends_the_whole(
    harness: Harness,
) -> None:
    east = await live_east(harness)
    delta = between(hundred(1), hundred(2, frozenset({3})))
    assert delta is not None
    await east.publish(hundred(5))  # the stored shard moves on from the delta's base
    with pytest.raises(Rejected) as refused:
        await east.request("PATCH", PATH, delta, retry=False)
    assert refused.value.status == 409 and "base 1" in str(refused.value)
    (held,) = await stored(harness, east)
    assert held["generation"] == 5
    # A second client of the same cluster wrote in between: this client's
    # delta (from generation 5) misses, and it sends the whole shard.
    other = harness.client(east.credentials)
    await other.publish(hundred(6, frozenset({9})))
    await east.publish(hundred(7, frozenset({1})))
    assert await requests_by(harness, east, "PATCH", 409) == 2
    (held,) = await stored(harness, east)
    assert held == hundred(7, frozenset({1})).to_wire()


async def test_bad_deltas_are_refused_and_write_nothing(harness: Harness) -> None:
    east = await live_east(harness)
    good = between(hundred(1), hundred(2, frozenset({3})))
    assert good is not None
    west_zone = Endpoint(
        address="10.1.0.200",
        ports=(EndpointPort(name="http", port=8080),),
        locality=Locality(region="us", zone="us-1a", cluster="east"),
    ).to_wire()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "fields": {"generation": 1}}, 422, "fields.generation"),
        ({**good, "fields": {"generation": 2, "stale": True}}, 400, "fields.stale"),
        ({**good, "fields": {}}, 400, "fields.generation"),
        ({**good, "endpoints": [[5, 4, []]]}, 422, "endpoints[0]"),
        (
            {**good, "endpoints": [[0, 1, [{"address": "10.1.0.1"}]]]},
            400,
            "endpoints[0][2][0].locality",
        ),
        ({**good, "endpoints": [[100, 101, []]]}, 409, ""),
        ({**good, "endpoints": [[0, 1, [west_zone]]]}, 422, "endpoints[0].locality.region"),
        ({**good, "shard": 3}, 404, ""),
    ]
    for body, status, field in cases:
        with pytest.raises(Rejected) as refused:
            await east.request("PATCH", PATH, body, retry=False)
        assert refused.value.status == status, (body, refused.value)
        assert (refused.value.field or "") == field, (body, refused.value)
    (held,) = await stored(harness, east)
    assert held == hundred(1).to_wire()


async def test_a_delta_may_not_write_another_members_shard(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    west = await harness.enrol_cluster("west")
    await east.publish(hundred(1))
    delta = between(hundred(1), hundred(2, frozenset({3})))
    with pytest.raises(Rejected) as refused:
        await west.request("PATCH", PATH, delta, retry=False)
    assert refused.value.status == 403
    (held,) = await stored(harness, east)
    assert held["generation"] == 1


async def test_a_stale_source_s_delta_keeps_the_shard_stale(harness: Harness) -> None:
    """No lease: the registry stamps the result stale, as a whole publish."""
    east = await harness.enrol_cluster("east")
    await east.publish(hundred(1))
    await east.publish(hundred(2, frozenset({3})))
    assert await requests_by(harness, east, "PATCH", 200) == 1
    (held,) = await stored(harness, east)
    assert held["stale"] is True and held["staleSince"] > 0
    assert held["endpoints"] == hundred(2, frozenset({3})).to_wire()["endpoints"]
    again = await east.publish(hundred(2, frozenset({3})))
    assert again["written"] is False


def test_between_declines_what_a_delta_would_not_save() -> None:
    base = hundred(1)
    assert between(base, hundred(2, frozenset(range(60)))) is None  # most changed
    assert between(base, base) is None  # not newer
    other = replace(hundred(2), service=ServiceRef(namespace="shop", name="till"))
    assert between(base, other) is None
    small = EndpointSet(service=CART, source=SourceRef.parse("cluster:east"), generation=1)
    assert between(small, replace(small, generation=2)) is None
    delta = between(base, replace(hundred(2, frozenset({5})), changed_at=12.5))
    assert delta is not None
    assert delta["fields"] == {"generation": 2, "changedAt": 12.5}
    assert [s[:2] for s in delta["endpoints"]] == [[5, 6]]


async def test_deltas_through_two_replicas_apply_to_what_the_store_holds(
    etcd_server: EtcdProcess, tmp_path: Path
) -> None:
    """Each replica remembers what it last wrote; a delta through one after
    the other wrote the shard applies to the store's value, never to the
    remembered one."""
    prefix = f"/federation-deltas-{time.time_ns()}/"
    url = "etcd://{}:{}".format(*etcd_server.endpoint)
    first = Harness("etcd", tmp_path / "a", url, prefix, clock(), heartbeat_ttl=60)
    second = Harness("etcd", tmp_path / "b", url, prefix, clock(), heartbeat_ttl=60)
    async with running(first), running(second):
        token = await first.add_cluster("east")
        credentials, _ = await RegistryClient.join(first.url, token)
        via_first = first.client(credentials)
        via_second = second.client(credentials)
        await via_first.heartbeat(EAST)
        await via_first.publish(hundred(1))
        await via_first.publish(hundred(2, frozenset({4})))  # a delta: the first remembers 2
        via_second.published.keep(hundred(2, frozenset({4})))  # as if it had published 2
        await via_second.publish(hundred(3, frozenset({4, 9})))  # a delta through the second
        # The client's base is 3 now, the first replica remembers writing 2.
        via_first.published.keep(hundred(3, frozenset({4, 9})))
        await via_first.publish(hundred(4, frozenset({9})))
        assert await requests_by(first, via_first, "PATCH", 200) == 2
        assert await requests_by(second, via_second, "PATCH", 200) == 1
        for replica, client in ((first, via_first), (second, via_second)):
            (held,) = await stored(replica, client)
            assert held == hundred(4, frozenset({9})).to_wire()
