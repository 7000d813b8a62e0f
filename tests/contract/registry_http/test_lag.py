"""Convergence lag: a member's agent says, with its heartbeat, the revision
it has materialized; the registry tells how many watched changes and how
many seconds it is behind, in the status and the metrics."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from agents.client import RegistryError
from federation.model import SourceRef
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set

EAST = SourceRef.parse("cluster:east")
WEST = SourceRef.parse("cluster:west")


async def member(harness: Harness, name: str) -> dict[str, Any]:
    status = await harness.admin().request("GET", "/v1/status")
    return next(m for m in status["members"] if m["name"] == name)


async def test_lag_counts_changes_and_seconds_after_the_applied_revision(
    harness: Harness,
) -> None:
    east = await harness.enrol_cluster("east")
    west = await harness.enrol_cluster("west")
    await west.heartbeat(WEST)
    head = (await east.request("GET", "/v1/status"))["revision"]
    await east.heartbeat(EAST, head)
    assert (await member(harness, "east"))["changesBehind"] == 0
    assert (await member(harness, "west"))["changesBehind"] is None  # west says nothing

    for generation in (1, 2, 3):
        published = await west.publish(endpoint_set("west", generation=generation))
    harness.clock.advance(1.5)  # within the harness's 2 s liveness lease
    behind = await member(harness, "east")
    assert behind["appliedRevision"] == head
    assert behind["changesBehind"] == 3
    assert behind["lagSeconds"] >= 1.5

    await east.heartbeat(EAST, published["revision"])
    caught_up = await member(harness, "east")
    assert (caught_up["changesBehind"], caught_up["lagSeconds"]) == (0, 0.0)


async def test_lag_is_a_metric_per_member(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    west = await harness.enrol_cluster("west")
    await west.heartbeat(WEST)
    head = (await east.request("GET", "/v1/status"))["revision"]
    await east.heartbeat(EAST, head)
    await west.publish(endpoint_set("west"))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(f"{harness.url}/metrics") as answer,
    ):
        text = await answer.text()
    assert 'federation_registry_member_lag_changes{kind="cluster",name="east"} 1.0' in text
    assert 'federation_registry_member_lag_seconds{kind="cluster",name="east"}' in text


async def test_a_bad_applied_revision_is_400_and_renews_nothing(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    for body in ({"appliedRevision": -1}, {"appliedRevision": "7"}, {"applied": 7}, [7]):
        with pytest.raises(RegistryError) as caught:
            await east.request("POST", f"/v1/sources/{EAST}/heartbeat", body, retry=False)
        assert caught.value.status == 400, body
    assert (await member(harness, "east"))["alive"] is False
