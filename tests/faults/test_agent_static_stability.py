"""Static stability of the cluster agent under injected faults: the API
server unreachable, a source whose lease expired.  No import is deleted."""

from __future__ import annotations

from federation.model import ServiceRef
from federation.sim.world import World
from tests.integration.test_cluster_agent import (
    NS,
    global_addresses,
    kill_all,
    pod_ips,
    routed_to,
    world,  # noqa: F401 - the fixture
)
from tests.support import eventually, metric

ECHO = ServiceRef(namespace=NS, name="echo")


def deleted(world: World) -> int:  # noqa: F811
    return int(
        sum(
            metric(m.agent, "federation_agent_deleted_imports_total")
            for m in world.members.values()
            if m.agent
        )
    )


async def test_an_unreachable_api_server_loses_nothing_and_catches_up(
    world: World,  # noqa: F811
) -> None:
    for name in world.members:
        await routed_to(world, name, name)
    sim = world.sim("east2")
    sim.api.faults.unreachable = True
    try:
        await kill_all(world, "east1")  # east2's agent cannot see or write anything now
        await routed_to(world, "east1", "east2")  # east1 still fails over to it
        before = global_addresses(world, "east2")
        assert before == pod_ips(world, "east2")
    finally:
        sim.api.faults.unreachable = False
    agent = world.members["east2"].agent
    assert agent is not None
    await eventually(lambda: agent.ready and agent.elector.leading, timeout=20.0)
    await routed_to(world, "east2", "east2")
    assert deleted(world) == 0


async def test_a_source_whose_lease_expired_is_stale_not_gone(
    world: World,  # noqa: F811
) -> None:
    east1 = world.members["east1"].agent
    assert east1 is not None
    for name in world.members:
        await routed_to(world, name, name)

    def east2_published_ready() -> bool:  # its import may run ahead of its coalesced export
        endpoint_set = east1.view.sets.get(ECHO, {}).get("cluster:east2")
        endpoints = endpoint_set.endpoints if endpoint_set is not None else ()
        return bool(endpoints) and all(e.healthy for e in endpoints)

    await eventually(east2_published_ready, timeout=15.0)
    await world.stop_agent("east2")  # its heartbeats stop; the lease (2 s) runs out

    def east2_stale() -> bool:
        endpoint_set = east1.view.sets.get(ECHO, {}).get("cluster:east2")
        return endpoint_set is not None and endpoint_set.stale

    await eventually(east2_stale, timeout=20.0)
    await kill_all(world, "east1")
    await routed_to(world, "east1", "west")  # a live remote source beats a stale nearer one
    assert east1.view.sets[ECHO]["cluster:east2"].endpoints  # still known, not deleted
    await kill_all(world, "west")
    await routed_to(world, "east1", "east2")  # stale endpoints as the last resort
    choice = east1.choices[ECHO]
    assert choice.last_resort
    assert deleted(world) == 0
