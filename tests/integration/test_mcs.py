"""The MCS API on simulated clusters: ServiceExport conditions (valid, and
conflicts resolved as KEP-1645 says, the oldest export winning), and the
ServiceImport's type, ips, ports, session affinity and cluster names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agents.cluster.importer import WEIGHTS_ANNOTATION
from agents.cluster.kube import (
    EVENTS,
    HTTP_ROUTES,
    SERVICE_ENTRIES,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SERVICES,
    Kube,
)
from federation.model import ServiceRef, TrafficPolicy
from federation.sim.kube import thirdparty
from federation.sim.kube.resources import ENDPOINT_SLICE
from federation.sim.world import ClusterSpec, World
from tests.integration.test_cluster_agent import NS, echo_world, pod_ips, routed_to
from tests.support import eventually


def kube_of(world: World, cluster: str) -> Kube:
    kube = world.members[cluster].kube
    assert kube is not None
    return kube


async def conditions(world: World, cluster: str, name: str = "echo") -> dict[str, Any]:
    export = await kube_of(world, cluster).get(SERVICE_EXPORTS, NS, name)
    assert export is not None
    return {c["type"]: c for c in (export.get("status") or {}).get("conditions") or []}


def reason(of: str, status: str, why: str) -> Any:
    async def holds(world: World, cluster: str, name: str = "echo") -> bool:
        found = (await conditions(world, cluster, name)).get(of)
        return found is not None and (found["status"], found["reason"]) == (status, why)

    return holds


async def test_the_service_import_is_what_the_mcs_api_says(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        await routed_to(world, "west", "west")
        kube = kube_of(world, "west")

        async def imported() -> dict[str, Any] | None:
            found = await kube.get(SERVICE_IMPORTS, NS, "echo")
            return found if found and found["spec"].get("ips") else None

        await eventually(imported, what="a ServiceImport with ips")
        service_import = await imported()
        assert service_import is not None
        derived = await kube.get(SERVICES, NS, "echo-global")
        assert derived is not None
        assert service_import["spec"]["type"] == "ClusterSetIP"
        assert service_import["spec"]["ips"] == [derived["spec"]["clusterIP"]]
        assert [p["port"] for p in service_import["spec"]["ports"]] == [
            p["port"] for p in derived["spec"]["ports"]
        ]
        assert service_import["status"]["clusters"] == [
            {"cluster": "east1"}, {"cluster": "east2"}, {"cluster": "west"}
        ]  # fmt: skip
        valid = reason("Valid", "True", "Valid")
        for name in world.members:
            await eventually(lambda n=name: valid(world, n), what=f"{name}'s export valid")
            assert (await conditions(world, name))["Conflict"]["reason"] == "NoConflicts"


async def test_a_port_conflict_is_reported_on_every_export_and_the_oldest_wins(
    tmp_path: Path,
) -> None:
    async with echo_world(tmp_path) as world:
        await routed_to(world, "west", "west")
        kube = kube_of(world, "east2")
        service = await kube.get(SERVICES, NS, "echo")
        assert service is not None
        winner_port = service["spec"]["ports"][0]["port"]
        service["spec"]["ports"][0]["port"] = winner_port + 1
        await kube.replace(SERVICES, NS, "echo", service)
        conflict = reason("Conflict", "True", "PortConflict")
        for name in world.members:
            await eventually(lambda n=name: conflict(world, n), what=f"{name}: PortConflict")
        message = (await conditions(world, "east2"))["Conflict"]["message"]
        assert "east2" in message and "in east1" in message  # the loser, and the oldest
        events, _ = await kube.list(EVENTS, NS)
        (warned,) = [e for e in events if e["involvedObject"]["kind"] == "ServiceExport"]
        assert (warned["reason"], warned["type"]) == ("PortConflict", "Warning")
        assert warned["source"]["component"] == "federation-agent"
        imported = await kube_of(world, "west").get(SERVICE_IMPORTS, NS, "echo")
        assert imported is not None
        assert [p["port"] for p in imported["spec"]["ports"]] == [winner_port]

        service = await kube.get(SERVICES, NS, "echo")
        assert service is not None
        service["spec"]["ports"][0]["port"] = winner_port
        await kube.replace(SERVICES, NS, "echo", service)
        cleared = reason("Conflict", "False", "NoConflicts")
        for name in world.members:
            await eventually(lambda n=name: cleared(world, n), what=f"{name}: conflict cleared")


async def test_an_export_of_a_missing_service_is_not_valid(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        await world.export("west", NS, "ghost")
        missing = reason("Valid", "False", "NoService")
        await eventually(lambda: missing(world, "west", "ghost"), what="ghost: NoService")
        accepted = (await conditions(world, "west", "ghost"))["Accepted"]
        assert (accepted["status"], accepted["reason"]) == ("False", "NoService")


async def test_weights_kube_proxy_cannot_honour_are_said_not_dropped(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        await routed_to(world, "west", "west")
        policy = TrafficPolicy(
            service=ServiceRef(namespace=NS, name="echo"),
            weights={"cluster:east1": 90, "cluster:west": 10},
        )
        await world.admin().request("PUT", f"/v1/policies/{NS}/echo", policy.to_wire())
        kube = kube_of(world, "east2")

        async def said() -> bool:
            found = await kube.get(SERVICE_IMPORTS, NS, "echo")
            return WEIGHTS_ANNOTATION in (
                (found or {}).get("metadata", {}).get("annotations") or {}
            )

        await eventually(said, what="the ServiceImport saying weights are not enforced")
        agent = world.members["east2"].agent
        assert agent is not None
        registry = agent.metrics.registry
        await eventually(  # set right after the write the annotation came with
            lambda: registry.get_sample_value("federation_agent_unenforced_weights") == 1.0,
            what="the gauge counting the service",
        )


SPLIT = {"cluster:east1": 90, "cluster:west": 10}


@contextlib.asynccontextmanager
async def weighting_world(tmp_path: Path) -> AsyncIterator[World]:
    """The echo world, where east2 serves Gateway API's and Istio's CRDs."""
    specs = [
        ClusterSpec("east1", "us-east", ("a",)),
        ClusterSpec("east2", "us-east", ("b",), serves=tuple(thirdparty.BY_NAME)),
        ClusterSpec("west", "us-west", ("c",)),
    ]
    async with World(tmp_path, specs, heartbeat_ttl=2, lease_seconds=1.0) as world:
        for name in world.members:
            world.sim(name).run_echo(NS, "echo", replicas=2)
            await world.export(name, NS, "echo")
        await routed_to(world, "east2", "east2")
        yield world


async def test_weights_go_to_gateway_api_and_istio_where_they_are_served(tmp_path: Path) -> None:
    """east2 serves Gateway API's and Istio's CRDs: a 90/10 split becomes an
    HTTPRoute over per-source Services and a weighted ServiceEntry, the
    ServiceImport says so, and nothing is left once the split ends."""
    async with weighting_world(tmp_path) as world:
        echo = ServiceRef(namespace=NS, name="echo")
        async with world.admin() as admin:
            await admin.put_policy(TrafficPolicy(service=echo, weights=SPLIT))
        kube = kube_of(world, "east2")

        async def weighted_route() -> bool:
            route = await kube.get(HTTP_ROUTES, NS, "echo-global")
            backends = route["spec"]["rules"][0]["backendRefs"] if route else []
            return {b["name"]: b["weight"] for b in backends} == {"echo-east1": 9, "echo-west": 1}

        await eventually(weighted_route, what="an HTTPRoute weighting east1 9 to west 1")
        per_source = world.sim("east2").client.list(
            ENDPOINT_SLICE, NS, "kubernetes.io/service-name=echo-west"
        )
        assert {a for s in per_source for e in s["endpoints"] for a in e["addresses"]} == pod_ips(
            world, "west"
        )
        entry = await kube.get(SERVICE_ENTRIES, NS, "echo-global")
        assert entry is not None
        assert {e["address"] for e in entry["spec"]["endpoints"]} == pod_ips(
            world, "east1"
        ) | pod_ips(world, "west")
        imported = await kube.get(SERVICE_IMPORTS, NS, "echo")
        assert imported is not None
        said = imported["metadata"]["annotations"][WEIGHTS_ANNOTATION]
        assert said.startswith("enforced by Gateway API HTTPRoutes") and "ServiceEntry" in said
        agent = world.members["east2"].agent
        assert agent is not None
        assert agent.metrics.registry.get_sample_value("federation_agent_unenforced_weights") == 0

        async with world.admin() as admin:
            await admin.delete_policy(echo)

        async def cleared() -> bool:
            left = [
                await kube.get(HTTP_ROUTES, NS, "echo-global"),
                await kube.get(SERVICE_ENTRIES, NS, "echo-global"),
                await kube.get(SERVICES, NS, "echo-west"),
                await kube.get(SERVICES, NS, "echo-east1"),
            ]
            return left == [None] * 4

        await eventually(cleared, what="the split's objects gone with the split")
        assert await kube.get(SERVICES, NS, "echo-global") is not None


async def test_a_users_service_of_a_per_source_name_is_never_overwritten(tmp_path: Path) -> None:
    async with weighting_world(tmp_path) as world:
        kube = kube_of(world, "east2")
        mine = {
            "metadata": {"name": "echo-west", "namespace": NS},
            "spec": {"ports": [{"port": 9}]},
        }
        await kube.create(SERVICES, NS, mine)
        async with world.admin() as admin:
            await admin.put_policy(
                TrafficPolicy(service=ServiceRef(namespace=NS, name="echo"), weights=SPLIT)
            )
        agent = world.members["east2"].agent
        assert agent is not None
        registry = agent.metrics.registry
        await eventually(
            lambda: (registry.get_sample_value(
                "federation_agent_refused_writes_total", {"kind": "services"}
            ) or 0) >= 1,
            what="the agent refusing to write over the user's Service",
        )  # fmt: skip
        kept = await kube.get(SERVICES, NS, "echo-west")
        assert kept is not None
        assert [p["port"] for p in kept["spec"]["ports"]] == [9]
        assert "app.kubernetes.io/managed-by" not in (kept["metadata"].get("labels") or {})
        imported = await kube.get(SERVICE_IMPORTS, NS, "echo")
        assert imported is not None  # it does not claim what was not written
        said = (imported["metadata"].get("annotations") or {}).get(WEIGHTS_ANNOTATION, "")
        assert not said.startswith("enforced")
