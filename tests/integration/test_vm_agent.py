"""A VM agent with two simulated clusters: the VM reaches a cluster service
through its forwarder, a cluster client reaches the VM's service through
its ``-global`` Service, killing the VM's workload moves cluster traffic
away, the VM fails over between clusters, and a VM that stops
heartbeating is stale, then gone after its policy's grace.  Where Istio's
CRDs exist, the VM a cluster routes to is also a WorkloadEntry there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from agents.cluster.crds import crd
from agents.cluster.kube import CRDS, ISTIO_GROUP, WORKLOAD_ENTRIES, Kube
from agents.vm.agent import Probe, VMAgent
from federation.cli.vm import start
from federation.model import EndpointPort, Locality, ServiceRef, TrafficPolicy
from federation.model import Workload as VMRecord
from federation.sim import echo
from federation.sim.etcd_process import free_port
from federation.sim.world import ClusterSpec, World
from tests.integration.test_cluster_agent import global_addresses
from tests.support import eventually

NS = "demo"
SPECS = (ClusterSpec("east", "us-east", ("a",)), ClusterSpec("west", "us-west", ("b",)))
VM_ADDRESS = "127.0.9.1"
ECHO = ServiceRef(namespace=NS, name="echo")
DB = ServiceRef(namespace=NS, name="db")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with World(tmp_path, SPECS, heartbeat_ttl=2, lease_seconds=1.0) as made:
        yield made


async def answer_from(host: str, port: int) -> str:
    status, body = await echo.request(host, port)
    assert status == 200
    return str(json.loads(body)["cluster"])


async def with_istio(world: World, name: str) -> Kube:
    """Install Istio's WorkloadEntry CRD in ``name`` and restart its agent."""
    kube = world.members[name].kube
    assert kube is not None
    await kube.create(CRDS, None, crd("WorkloadEntry", "workloadentries", ISTIO_GROUP, "v1beta1"))
    await eventually(lambda: kube.served(WORKLOAD_ENTRIES), what="WorkloadEntries served")
    await world.stop_agent(name)
    agent = world.start_agent(name)
    await eventually(lambda: agent.ready and agent.elector.leading, timeout=20.0)
    return kube


async def test_a_vm_joins_both_ways_and_fails_over(world: World, tmp_path: Path) -> None:
    east_kube = await with_istio(world, "east")  # west has no Istio
    db_port = free_port()
    for name in world.members:
        world.sim(name).run_echo(NS, "echo", replicas=1)
        await world.export(name, NS, "echo")
    world.sim("west").run_echo(NS, "db", replicas=1, service_port=db_port)
    await world.export("west", NS, "db")

    workload = echo.EchoServer(VM_ADDRESS, db_port, pod="db-vm", cluster="vm")
    await workload.start()
    record = VMRecord(
        name="db-vm",
        namespace=NS,
        service_account="db",
        address=VM_ADDRESS,
        locality=Locality(region="us-east", zone="a"),
        ports=(EndpointPort(name="http", port=db_port),),
        service="db",
    )
    async with world.admin() as admin:
        answer = await admin.request("POST", "/v1/vms", {"record": record.to_wire()})
    state = tmp_path / "vm"
    stop = asyncio.Event()
    started = await start(world.url, state, str(answer["token"]), stop)
    assert started is not None
    client, got = started
    assert got == record
    forward_port = free_port()
    agent = VMAgent(
        client,
        record,
        state,
        probe=Probe("tcp", timeout=0.5),
        probe_interval=0.1,
        pinned={ECHO: ("127.0.0.1", forward_port)},
    )
    task = asyncio.create_task(agent.run())
    try:
        # Certificates: the workload's SVID for its namespace and account, the bundle.
        cert_path = state / "workload" / "cert.pem"
        await eventually(cert_path.exists, what="the workload certificate")
        svid = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = svid.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)] == [
            f"spiffe://cluster.local/ns/{NS}/sa/db"
        ]
        assert (state / "bundle.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")

        # The VM reaches echo through its forwarder, in its own region first.
        async def vm_reaches(cluster: str) -> bool:
            try:
                return await answer_from("127.0.0.1", forward_port) == cluster
            except (OSError, AssertionError, TimeoutError, ValueError):
                return False

        await eventually(lambda: vm_reaches("east"), timeout=15, what="the VM -> east's echo")
        assert "demo/echo port 80 -> 127.0.0.1:" in (state / "forwards.txt").read_text()

        # A client in east reaches the VM's db through db-global: the VM is
        # in east's region, west is further.
        async def east_db() -> str:
            try:
                host, port = world.sim("east").service_address(NS, "db-global")
                return await answer_from(host, port)
            except (OSError, AssertionError, KeyError, TimeoutError, ValueError):
                return ""

        async def east_db_is(cluster: str) -> bool:
            return await east_db() == cluster

        await eventually(lambda: east_db_is("vm"), timeout=15, what="east -> the VM's db")

        async def has_entry() -> bool:
            return await east_kube.get(WORKLOAD_ENTRIES, NS, "db-global-db-vm") is not None

        async def no_entry() -> bool:
            return not await has_entry()

        # east has Istio: the VM it routes to is also a WorkloadEntry, with
        # its identity (written in the same pass as the slices, just after).
        await eventually(has_entry, what="the VM's WorkloadEntry")
        written = await east_kube.get(WORKLOAD_ENTRIES, NS, "db-global-db-vm")
        assert written is not None
        assert written["spec"]["address"] == VM_ADDRESS
        assert written["spec"]["serviceAccount"] == "db"
        assert written["spec"]["locality"] == "us-east/a"
        assert written["spec"]["ports"] == {"http": db_port}

        # The VM's workload dies: its endpoint goes not ready, east moves to
        # west, and the WorkloadEntry goes with the routing choice.
        await workload.stop()
        await eventually(lambda: east_db_is("west"), timeout=15, what="east -> west's db")
        await eventually(no_entry, what="the VM's WorkloadEntry deleted")
        await workload.start()
        await eventually(lambda: east_db_is("vm"), timeout=15, what="east -> the VM again")
        await eventually(has_entry, what="the VM's WorkloadEntry again")

        # east loses its echo backends: the VM fails over to west.
        await world.sim("east").kill_backend(NS, "echo-0")

        await eventually(lambda: vm_reaches("west"), timeout=15, what="the VM -> west's echo")

        # A reboot: the state dir is enough, no token (it was single use anyway).
        again = await start(world.url, state, None, stop)
        assert again is not None and again[1] == record
        await again[0].close()

        # db's policy keeps a stale source 1 s.  The VM stops heartbeating
        # and west loses its db: without the grace, east would keep the
        # stale VM as its last resort; with it, the VM is gone.
        rules = TrafficPolicy(service=DB, stale_grace_seconds=1.0)
        async with world.admin() as admin:
            await admin.request("PUT", f"/v1/policies/{NS}/db", rules.to_wire())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await world.sim("west").kill_backend(NS, "db-0")
        east = world.members["east"].agent
        assert east is not None

        def vm_gone() -> bool:
            choice = east.choices.get(DB)
            return choice is not None and choice.gone == ("vm:db-vm",)

        await eventually(vm_gone, timeout=20, what="the stale VM gone from east's choice")
        assert east.view.sets[DB]["vm:db-vm"].stale  # the registry still has it, stale
        await eventually(  # the choice is made, then written
            lambda: VM_ADDRESS not in global_addresses(world, "east", "db"),
            what="the VM's address out of east's db-global",
        )
        await eventually(no_entry, what="the gone VM's WorkloadEntry deleted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await workload.stop()


async def test_a_90_10_policy_splits_a_thousand_vm_connections_across_clusters(
    world: World,
) -> None:
    """End to end on simulated clusters: the policy goes through the
    registry, the VM agent's forwarder weights 1,000 connections 90/10
    between east's and west's echo (within 5 points)."""
    for name in world.members:
        world.sim(name).run_echo(NS, "echo", replicas=2)
        await world.export(name, NS, "echo")
    forward_port = free_port()
    record = VMRecord(
        name="client-vm",
        namespace=NS,
        service_account="client",
        address="127.0.9.2",
        locality=Locality(region="us-east", zone="a"),
    )
    await world.start_vm(record, pinned={ECHO: ("127.0.0.1", forward_port)})
    gate = asyncio.Semaphore(32)

    async def one() -> str:
        async with gate:
            return await answer_from("127.0.0.1", forward_port)

    async def reaches_east() -> bool:
        try:
            return await one() == "east"
        except (OSError, AssertionError, TimeoutError, ValueError):
            return False

    await eventually(reaches_east, timeout=15, what="the VM reaching east, its region")
    async with world.admin() as admin:
        await admin.put_policy(
            TrafficPolicy(service=ECHO, weights={"cluster:east": 90, "cluster:west": 10})
        )

    async def split_applied() -> bool:  # before it, a us-east VM reaches east only
        answers = await asyncio.gather(*(one() for _ in range(100)))
        return "west" in answers

    await eventually(split_applied, timeout=15, what="the VM's forwarder taking the split")
    answers = await asyncio.gather(*(one() for _ in range(1000)))
    east = answers.count("east") / len(answers)
    assert 0.85 <= east <= 0.95, east
    assert answers.count("east") + answers.count("west") == 1000
