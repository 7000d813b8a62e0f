"""A VM's applications resolve ``clusterset.local`` names through the VM
agent's own resolver, with a real resolver library, and connect through
the forwarder the names point at."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import dns.asyncresolver

from agents.vm.agent import Probe, VMAgent
from federation.cli.vm import start
from federation.model import Locality, ServiceRef
from federation.model import Workload as VMRecord
from federation.sim import echo
from federation.sim.world import World
from tests.integration.test_vm_agent import NS, SPECS
from tests.support import eventually


async def test_the_vm_resolves_a_service_and_connects_through_its_forwarder(
    tmp_path: Path,
) -> None:
    async with World(tmp_path, SPECS, heartbeat_ttl=2, lease_seconds=1.0) as world:
        for name in world.members:
            world.sim(name).run_echo(NS, "echo", replicas=1)
            await world.export(name, NS, "echo")
        here = Locality(region="us-east", zone="a")
        record = VMRecord(
            name="app-vm", namespace=NS, service_account="app", address="127.0.9.3", locality=here
        )
        async with world.admin() as admin:
            answer = await admin.request("POST", "/v1/vms", {"record": record.to_wire()})
        stop = asyncio.Event()
        started = await start(world.url, tmp_path / "vm", str(answer["token"]), stop)
        assert started is not None
        client, _ = started
        agent = VMAgent(client, record, tmp_path / "vm", probe=Probe("none"),
                        dns=("127.0.0.1", 0))  # fmt: skip
        task = asyncio.create_task(agent.run())
        try:
            await eventually(lambda: agent.resolver is not None and agent.resolver.port != 0)
            assert agent.resolver is not None
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers, resolver.port = ["127.0.0.1"], agent.resolver.port
            name = f"echo.{NS}.svc.clusterset.local"
            await eventually(lambda: (ServiceRef(namespace=NS, name="echo"), 80)
                             in agent.forwarder.bound, what="the forwarder listening")  # fmt: skip
            (address,) = [r.address for r in await resolver.resolve(name, "A")]
            (srv,) = list(await resolver.resolve(f"_http._tcp.{name}", "SRV"))

            async def served_from() -> str | None:
                try:
                    status, body = await echo.request(address, int(srv.port))
                except (OSError, TimeoutError):  # bound before any pod is ready: a reset
                    return None
                return str(json.loads(body)["cluster"]) if status == 200 else None

            async def east_serves() -> bool:  # until east's set arrives, west is all there is
                return await served_from() == "east"

            await eventually(east_serves, what="the same region serving through the forwarder")
            assert [await served_from() for _ in range(10)] == ["east"] * 10  # and only it
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
