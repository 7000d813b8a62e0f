"""A service with 5,000 endpoints in one cluster: published as stable
shards, merged by every consumer, materialized in slices of at most 100
endpoints; one endpoint's change rewrites one shard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from federation.sim.kube.resources import ENDPOINT_SLICE, SERVICE
from federation.sim.world import ClusterSpec, World
from tests.support import eventually

NS = "big"
COUNT = 5000
SPECS = (ClusterSpec("east", "us-east", ("a",)), ClusterSpec("west", "us-west", ("b",)))


def address(i: int) -> str:
    return f"127.1.{100 + i // 250}.{1 + i % 250}"


def user_slice(index: int, *, not_ready: frozenset[int] = frozenset()) -> dict[str, Any]:
    members = range(index * 100, (index + 1) * 100)
    return {
        "metadata": {"name": f"big-{index}", "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [address(i)], "conditions": {"ready": i not in not_ready}, "zone": "a"}
            for i in members
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with World(tmp_path, SPECS, heartbeat_ttl=2, lease_seconds=1.0) as made:
        yield made


async def shard_generations(world: World) -> dict[int, int]:
    async with world.admin() as admin:
        _, events = await admin.collect_snapshot()
    return {
        int(e.key.rsplit("/", 1)[1]): int(e.object["generation"])
        for e in events
        if e.kind == "EndpointSet" and e.key.startswith("endpoints/big/big/") and e.object
    }


async def test_five_thousand_endpoints_reach_another_cluster_in_slices_of_100(
    world: World,
) -> None:
    east = world.sim("east")
    east.ensure_namespace(NS)
    east.client.create(
        SERVICE,
        NS,
        {"metadata": {"name": "big"}, "spec": {"ports": [{"name": "http", "port": 80}]}},
    )
    for index in range(COUNT // 100):
        east.client.create(ENDPOINT_SLICE, NS, user_slice(index))
    await world.export("east", NS, "big")
    wanted = {address(i) for i in range(COUNT)}

    def imported() -> bool:
        return west_addresses(world) == wanted

    await eventually(imported, timeout=60.0, what="5,000 endpoints in west")
    slices = west_slices(world)
    assert all(len(s["endpoints"]) <= 100 for s in slices)
    assert len(slices) == COUNT // 100
    before = await shard_generations(world)
    assert sorted(before) == list(range(COUNT // 1000))  # five shards of 1,000

    # One endpoint goes unready: one shard is written again, and west drops it.
    flipped = user_slice(17, not_ready=frozenset({1742}))
    current = east.client.get(ENDPOINT_SLICE, NS, "big-17")
    assert current is not None
    current["endpoints"] = flipped["endpoints"]
    east.client.update(ENDPOINT_SLICE, current)
    await eventually(
        lambda: west_addresses(world) == wanted - {address(1742)},
        timeout=30.0,
        what="the unready endpoint gone from west",
    )
    after = await shard_generations(world)
    assert sorted(n for n in after if after[n] != before[n]) == [1]

    # The export goes: every shard is withdrawn, and west's import with it.
    await world.unexport("east", NS, "big")
    await eventually(lambda: not west_slices(world), timeout=30.0, what="west's slices gone")
    assert await shard_generations(world) == {}


def west_slices(world: World) -> list[dict[str, Any]]:
    return world.sim("west").client.list(
        ENDPOINT_SLICE, NS, "kubernetes.io/service-name=big-global"
    )


def west_addresses(world: World) -> set[str]:
    return {a for s in west_slices(world) for e in s.get("endpoints") or [] for a in e["addresses"]}
