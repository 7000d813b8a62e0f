"""One object the apiserver refuses never stops the others.

A VM whose address Kubernetes cannot hold in an EndpointSlice (link-local
169.254.10.5) exports a service: every cluster leaves that endpoint out,
says why on the ServiceImport and in a metric, and an unrelated service in
the same namespace keeps failing over.  Against a strict apiserver (the
bare emulator, as strict as kube-apiserver), an address only the apiserver
refuses is learnt from its 422 and left out too."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.client import RegistryClient
from agents.cluster import importer
from agents.cluster.crds import ensure_crds
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    MCS_GROUP,
    SERVICE_IMPORTS,
    SERVICES,
    Informer,
    Kube,
    ensure_namespace,
)
from agents.cluster.writer import Writer
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    Workload,
)
from federation.shared.routing import choose
from federation.sim.cluster import SimCluster
from federation.sim.kube.app import SimKubeServer
from federation.sim.kube.objects import ResourceType
from federation.sim.world import World
from tests.integration.test_cluster_agent import (
    echo_world,
    global_addresses,
    kill_all,
    pod_ips,
    revive_all,
    routed_to,
)
from tests.support import eventually

NS = "demo"
POISON = "169.254.10.5"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with echo_world(tmp_path) as made:
        yield made


def metric(world: World, cluster: str, name: str) -> float:
    agent = world.members[cluster].agent
    assert agent is not None
    text = generate_latest(agent.metrics.registry).decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def vm_exports(
    world: World,
    name: str,
    address: str,
    service_ports: tuple[EndpointPort, ...] = (),
) -> None:
    """Register VM ``name`` at ``address`` and publish, as the VM, one ready
    endpoint of its service ``name`` (service ports ``service_ports``)."""
    record = Workload(
        name=name,
        namespace=NS,
        service_account=name,
        address=address,
        locality=Locality(region="us-east", zone="a"),
        ports=(EndpointPort(name="http", port=8080),),
        service=name,
    )
    async with world.admin() as admin:
        answer = await admin.request("POST", "/v1/vms", {"record": record.to_wire()})
    credentials, _ = await RegistryClient.join(world.url, str(answer["token"]))
    source = SourceRef.parse(f"vm:{name}")
    async with RegistryClient(world.url, credentials) as vm:
        await vm.heartbeat(source)
        await vm.publish(
            EndpointSet(
                service=ServiceRef(namespace=NS, name=name),
                source=source,
                generation=1,
                ports=service_ports,
                endpoints=(
                    Endpoint(address=address, ports=record.ports, locality=record.locality),
                ),
            )
        )


async def test_an_address_kubernetes_refuses_stalls_nothing_else(world: World) -> None:
    await vm_exports(world, "aaa", POISON)
    for name in world.members:
        sim = world.sim(name)
        kind = sim.api.types.find(MCS_GROUP, "v1alpha1", "serviceimports")

        def left_out_shown(sim: SimCluster = sim, kind: ResourceType = kind) -> bool:
            found = sim.client.get(kind, NS, "aaa")
            annotations = (found or {}).get("metadata", {}).get("annotations", {})
            return importer.LEFT_OUT_ANNOTATION in annotations

        await eventually(left_out_shown, timeout=15.0, what=f"aaa's ServiceImport in {name}")
        await eventually(
            lambda name=name: metric(world, name, "federation_agent_left_out_endpoints") == 1,
            what=f"the left-out metric in {name}",
        )
        saved = sim.client.get(kind, NS, "aaa")
        assert saved is not None
        left_out = json.loads(saved["metadata"]["annotations"][importer.LEFT_OUT_ANNOTATION])
        assert left_out["count"] == 1
        assert left_out["endpoints"][0]["address"] == POISON
        assert "link-local" in left_out["endpoints"][0]["reason"]
        assert global_addresses(world, name, "aaa") == set()
    # The unrelated service in the same namespace still fails over, both ways.
    await routed_to(world, "east1", "east1")
    await kill_all(world, "east1")
    await routed_to(world, "east1", "east2")
    await eventually(lambda: global_addresses(world, "west", "echo") == pod_ips(world, "west"))
    await revive_all(world, "east1")
    await routed_to(world, "east1", "east1")


async def test_an_address_only_the_apiserver_refuses_is_learnt_and_left_out(
    tmp_path: Path,
) -> None:
    service = ServiceRef(namespace="shop", name="cart")
    here = Locality(region="us", zone="us-1", cluster="home")
    ports = (EndpointPort(name="http", port=80),)
    sets = [
        EndpointSet(
            service=service,
            source=SourceRef.parse("cluster:far"),
            generation=1,
            endpoints=(
                Endpoint(address="10.1.1.1", ports=ports, locality=here),
                Endpoint(address="127.0.0.5", ports=ports, locality=here),  # loopback
            ),
        )
    ]
    choice = choose(sets, here, None, now=0.0)
    async with SimKubeServer("strict") as server:  # no loopback relaxation: a real apiserver
        kube = await Kube.from_kubeconfig(server.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            await ensure_crds(kube)
            await ensure_namespace(kube, "shop")
            informers = {
                kind: Informer(kube, kind, lambda obj: None, index_labels=(importer.SERVICE_LABEL,))
                for kind in (SERVICES, ENDPOINT_SLICES, SERVICE_IMPORTS)
            }
            writer = Writer(kube, informers, "home")
            first = importer.materialize(service, sets, choice, "-global")
            assert first.left_out == {}  # loopback is the apiserver's to refuse
            assert not await writer.apply(service, first.objects, set(), set())
            assert "loopback" in writer.refused_addresses["127.0.0.5"]
            second = importer.materialize(
                service, sets, choice, "-global", writer.refused_addresses
            )
            assert set(second.left_out) == {"127.0.0.5"}
            assert await writer.apply(service, second.objects, set(), set())
            slices, _ = await kube.list(ENDPOINT_SLICES)
            held = {a for s in slices for e in s["endpoints"] for a in e["addresses"]}
            assert held == {"10.1.1.1"}
            saved = await kube.get(SERVICE_IMPORTS, "shop", "cart")
            assert saved is not None
            assert "127.0.0.5" in saved["metadata"]["annotations"][importer.LEFT_OUT_ANNOTATION]
        finally:
            await kube.close()


async def test_a_refused_write_retries_its_own_key_and_no_other(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Two unnamed ports make a Service kube-apiserver refuses (every port
    of a multi-port Service needs a name): that import retries with its
    own backoff, and the echo service keeps failing over meanwhile."""
    caplog.set_level(logging.WARNING, logger="agents.cluster.writer")
    unnamed = (EndpointPort(name="", port=80), EndpointPort(name="", port=81))
    await vm_exports(world, "multi", "127.0.9.7", unnamed)
    for name in world.members:
        await eventually(
            lambda name=name: metric(world, name, "federation_agent_refused_writes_total") >= 2,
            timeout=15.0,
            what=f"the refused Service retried in {name}",
        )
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert any(
        (getattr(r, "namespace", None), getattr(r, "service", None)) == ("demo", "multi")
        and "spec.ports" in r.getMessage()
        for r in refused
    )
    await routed_to(world, "east1", "east1")
    await kill_all(world, "east1")
    await routed_to(world, "east1", "east2")
    await revive_all(world, "east1")
    await routed_to(world, "east1", "east1")
