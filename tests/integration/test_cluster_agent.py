"""Cluster agents federating simulated clusters end to end: export, import,
locality failover of real TCP traffic, failback, withdraw, static
stability with the registry down, and leader election."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.cluster.exporter import GATEWAY_SUFFIX
from agents.cluster.importer import sets_from_import
from agents.cluster.kube import MCS_GROUP as MCS
from federation.model import NetworkMode
from federation.sim import echo
from federation.sim.kube.resources import ENDPOINT_SLICE, NODE, SERVICE
from federation.sim.world import ClusterSpec, World
from tests.support import eventually, metric

NS = "demo"
SPECS = (
    ClusterSpec("east1", "us-east", ("a",)),
    ClusterSpec("east2", "us-east", ("b",)),
    ClusterSpec("west", "us-west", ("c",)),
)


@contextlib.asynccontextmanager
async def echo_world(tmp_path: Path) -> AsyncIterator[World]:
    """Three clusters (two in us-east), each exporting two echo pods."""
    async with World(tmp_path, SPECS, heartbeat_ttl=2, lease_seconds=1.0) as made:
        for name in made.members:
            made.sim(name).run_echo(NS, "echo", replicas=2)
            await made.export(name, NS, "echo")
        yield made


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with echo_world(tmp_path) as made:
        yield made


def global_addresses(world: World, cluster: str, service: str = "echo") -> set[str]:
    slices = world.sim(cluster).client.list(
        ENDPOINT_SLICE, NS, f"kubernetes.io/service-name={service}-global"
    )
    return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}


def pod_ips(world: World, cluster: str) -> set[str]:
    slices = world.sim(cluster).client.list(ENDPOINT_SLICE, NS, "kubernetes.io/service-name=echo")
    return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}


async def served_from(world: World, client_cluster: str) -> str:
    """The cluster that answers a request to echo-global from ``client_cluster``."""
    host, port = world.sim(client_cluster).service_address(NS, "echo-global")
    status, body = await echo.request(host, port)
    assert status == 200
    return str(json.loads(body)["cluster"])


async def routed_to(world: World, consumer: str, source: str) -> None:
    await eventually(
        lambda: (
            bool(pod_ips(world, source))
            and global_addresses(world, consumer) == pod_ips(world, source)
        ),
        timeout=15.0,
        what=f"{consumer} routed to {source}",
    )


async def kill_all(world: World, cluster: str) -> None:
    for i in range(2):
        await world.sim(cluster).kill_backend(NS, f"echo-{i}")


async def revive_all(world: World, cluster: str) -> None:
    for i in range(2):
        await world.sim(cluster).revive_backend(NS, f"echo-{i}")


async def test_imports_are_materialized_and_traffic_fails_over_by_locality(world: World) -> None:
    for name in world.members:
        await routed_to(world, name, name)
    service = world.sim("east2").client.get(SERVICE, NS, "echo-global")
    assert service is not None and "selector" not in service["spec"]
    assert await served_from(world, "east1") == "east1"

    await kill_all(world, "east1")
    await routed_to(world, "east1", "east2")  # same region next
    assert await served_from(world, "east1") == "east2"

    await kill_all(world, "east2")
    await routed_to(world, "east1", "west")  # then the other region
    assert await served_from(world, "east1") == "west"

    await revive_all(world, "east1")
    await routed_to(world, "east1", "east1")  # and back home
    assert await served_from(world, "east1") == "east1"
    agent = world.members["east1"].agent
    assert agent is not None and metric(agent, "federation_propagation_seconds_sum") > 0


async def test_every_agent_reports_what_it_materialized_and_lag_returns_to_zero(
    world: World,
) -> None:
    for name in world.members:
        await routed_to(world, name, name)
    admin = world.admin()

    async def in_sync(after: int) -> bool:
        status = await admin.request("GET", "/v1/status")
        rows = [m for m in status["members"] if m["kind"] == "cluster"]
        return len(rows) == len(world.members) and all(
            m["changesBehind"] == 0 and m["appliedRevision"] >= after for m in rows
        )

    await eventually(lambda: in_sync(0), timeout=15.0, what="every cluster in sync")
    before = (await admin.request("GET", "/v1/status"))["revision"]
    await kill_all(world, "east1")  # changes after ``before`` every cluster must materialize
    await routed_to(world, "east1", "east2")
    await eventually(lambda: in_sync(before + 1), timeout=15.0, what="in sync after the change")
    agent = world.members["west"].agent
    assert agent is not None
    applied = agent.metrics.registry.get_sample_value("federation_agent_applied_revision")
    assert applied is not None and applied > before


async def test_withdrawing_an_export_removes_it_everywhere(world: World) -> None:
    await routed_to(world, "east1", "east1")
    await world.unexport("east2", NS, "echo")
    await world.unexport("west", NS, "echo")
    await world.unexport("east1", NS, "echo")

    def gone() -> bool:
        return all(
            world.sim(n).client.get(SERVICE, NS, "echo-global") is None for n in world.members
        )

    await eventually(gone, timeout=15.0)


async def test_registry_down_keeps_imports_and_local_failover_works(world: World) -> None:
    for name in world.members:
        await routed_to(world, name, name)
    assert world.server is not None
    await world.server.stop()
    await kill_all(world, "east1")
    await routed_to(world, "east1", "east2")
    assert await served_from(world, "east1") == "east2"
    deleted = sum(
        metric(m.agent, "federation_agent_deleted_imports_total")
        for m in world.members.values()
        if m.agent
    )
    assert deleted == 0


async def test_an_agent_restarted_during_an_outage_starts_from_its_imports(world: World) -> None:
    for name in world.members:
        await routed_to(world, name, name)

    def saved_view_complete() -> bool:  # what the restarted agent will start from
        kind = world.sim("east1").api.types.find(MCS, "v1alpha1", "serviceimports")
        saved = world.sim("east1").client.get(kind, NS, "echo")
        sets = sets_from_import(saved) if saved else []
        return len(sets) == 3 and all(sum(e.ready for e in s.endpoints) == 2 for s in sets)

    await eventually(saved_view_complete, timeout=15.0, what="the saved view complete")
    assert world.server is not None
    await world.stop_agent("east1")
    await world.server.stop()
    agent = world.start_agent("east1")
    await eventually(
        lambda: agent.ready and agent.elector.leading, timeout=15.0, what="the restarted agent"
    )
    assert global_addresses(world, "east1") == pod_ips(world, "east1")
    await kill_all(world, "east1")
    await routed_to(world, "east1", "east2")
    assert metric(agent, "federation_agent_deleted_imports_total") == 0


async def test_only_one_replica_leads(world: World) -> None:
    first = world.members["east1"].agent
    assert first is not None
    await eventually(lambda: first.elector.leading, timeout=10.0)
    member = world.members["east1"]
    old_task, old_client = member.task, member.client
    second = world.start_agent("east1")  # a second replica of the same cluster's agent
    second.elector.identity = "agent-east1-b"
    try:
        await eventually(lambda: second.ready, timeout=10.0)
        assert first.elector.leading and not second.elector.leading
    finally:
        await world.stop_agent("east1")
        member.task, member.client = old_task, old_client


async def test_gateway_mode_publishes_node_ports_and_traffic_crosses_them(
    tmp_path: Path,
) -> None:
    """Pod IPs not routable between clusters: each agent publishes node
    address x NodePort (creating the NodePort companion Service), and a
    client's traffic reaches the other cluster through that node port."""
    specs = (SPECS[0], SPECS[2])
    async with World(tmp_path, specs, mode=NetworkMode.GATEWAY, lease_seconds=1.0) as world:
        for name in world.members:
            world.sim(name).run_echo(NS, "echo", replicas=1)
            await world.export(name, NS, "echo")
        west = world.sim("west")

        def companion_port() -> int | None:
            companion = west.client.get(SERVICE, NS, "echo" + GATEWAY_SUFFIX)
            return None if companion is None else companion["spec"]["ports"][0].get("nodePort")

        await eventually(lambda: companion_port() is not None, what="west's NodePort companion")
        nodes = {
            a["address"]
            for n in west.client.list(NODE)
            for a in n["status"]["addresses"]
            if a["type"] == "InternalIP"
        }
        await world.sim("east1").kill_backend(NS, "echo-0")  # east1 must cross to west

        def west_nodes_imported() -> bool:
            slices = world.sim("east1").client.list(
                ENDPOINT_SLICE, NS, "kubernetes.io/service-name=echo-global"
            )
            pairs = {
                (a, p["port"])
                for s in slices
                for e in s.get("endpoints") or []
                for a in e["addresses"]
                for p in s.get("ports") or []
            }
            return bool(pairs) and pairs == {(a, companion_port()) for a in nodes}

        await eventually(west_nodes_imported, timeout=15.0, what="west's node ports in east1")
        assert await served_from(world, "east1") == "west"


async def test_a_removed_cluster_stops_publishing_and_keeps_its_imports(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    for name in world.members:
        await routed_to(world, name, name)
    await kill_all(world, "west")
    east = pod_ips(world, "east1") | pod_ips(world, "east2")
    await eventually(
        lambda: global_addresses(world, "west") == east,
        timeout=15.0,
        what="west routed to the east clusters through its import",
    )
    before = global_addresses(world, "west")
    async with world.admin() as admin:
        await admin.request("DELETE", "/v1/clusters/west")

    def east_forgot_west() -> bool:
        return all(
            not (global_addresses(world, n) & pod_ips(world, "west")) for n in ("east1", "east2")
        )

    await eventually(east_forgot_west, timeout=15.0, what="west's endpoints gone elsewhere")
    await eventually(
        lambda: "cluster/west was removed from the federation" in caplog.text,
        timeout=15.0,
        what="west's agent to say it was removed",
    )
    assert global_addresses(world, "west") == before  # imports stay as they were
    await revive_all(world, "west")  # a change west would publish, were it a member
    await routed_to(world, "west", "west")  # its local failover still works
    async with world.admin() as admin:
        _, events = await admin.collect_snapshot()
    sources = {e.object["source"] for e in events if e.kind == "EndpointSet" and e.object}
    assert "cluster:west" not in sources  # the registry took nothing more from west
    assert east_forgot_west()
    said = [r for r in caplog.records if "was removed from the federation" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # one line, not one per request
    assert not [r for r in caplog.records if getattr(r, "cluster", None) == "west"]
