"""``fedctl demo``: a local federation of three SIMULATED clusters in two
regions and a VM, real echo backend processes, real agents and a real
registry on SQLite.  A client in cluster east1 sends a steady stream of
requests to ``echo-global``, and an application on the VM (in us-west)
one to echo through its VM agent's forwarder.  The demo takes east1's
backends down, then east2's, brings east1 back, then takes west's down,
and prints for each phase and client who served, how many requests failed
and how long traffic took to recover."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from agents.vm.agent import VMAgent
from federation.model import Locality, ServiceRef, TrafficPolicy, Workload
from federation.shared.routing import SAME_REGION
from federation.sim.etcd_process import free_port
from federation.sim.failover import Phase, Traffic, table
from federation.sim.world import ClusterSpec, World

NS = "demo"
REPLICAS = 2
HOLD_DOWN = 3.0  # the "back" phase lasts twice as long
INTERVAL = 0.02
SPECS = (
    ClusterSpec("east1", "us-east", ("us-east-a",)),
    ClusterSpec("east2", "us-east", ("us-east-b",)),
    ClusterSpec("west", "us-west", ("us-west-a",)),
)
ECHO = ServiceRef(namespace=NS, name="echo")
VM = Workload(
    name="vm1",
    namespace=NS,
    service_account="vm1",
    address="127.0.9.1",
    locality=Locality(region="us-west", zone="us-west-b"),
)


async def run_demo(out: TextIO, keep_running: bool = False, base: Path | None = None) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="federation-demo-") as tmp:
        root = base or Path(tmp)
        say = _say(out)
        say("Starting a registry (SQLite), three SIMULATED clusters and a VM agent:")
        say("  east1 and east2 in region us-east, west and the VM vm1 in us-west; the")
        say("  Kubernetes API servers, kubelets and kube-proxies are simulated in this")
        say("  process; the echo backends are real processes, the traffic is real TCP,")
        say("  the agents (cluster and VM) and the registry are the production code.")
        async with World(root, SPECS, process_pods=True, lease_seconds=2.0) as world:
            for name in world.members:
                world.sim(name).run_echo(NS, "echo", replicas=REPLICAS)
                await world.export(name, NS, "echo")
            await _apply_policy(world)
            forward = free_port()
            vm = await world.start_vm(VM, pinned={ECHO: ("127.0.0.1", forward)})
            await _wait(lambda: _routed(world, "east1"), 60.0, "echo-global in east1")
            await _wait(lambda: _vm_routed(vm, SAME_REGION), 60.0, "the VM's forwarder")
            host, port = world.sim("east1").service_address(NS, "echo-global")
            say(
                f"\nA client in east1 sends a request every {INTERVAL * 1000:.0f} ms to "
                f"echo-global ({host}:{port});\nan application on vm1 does the same through "
                f"its forwarder (127.0.0.1:{forward}). Failback hold-down {HOLD_DOWN:g}s.\n"
            )
            streams = {
                "east1": Traffic(host, port, INTERVAL),
                "vm1": Traffic("127.0.0.1", forward, INTERVAL),
            }
            clients = [asyncio.create_task(s.run()) for s in streams.values()]
            try:
                for name, expect, action, length in _steps(world):
                    begin = time.monotonic()
                    marks = {c: len(s.samples) for c, s in streams.items()}
                    await action()
                    await asyncio.sleep(length)
                    rows = {
                        c: Phase(name, frozenset({e}), begin, s.samples[marks[c] :])
                        for (c, s), e in zip(streams.items(), expect, strict=True)
                    }
                    say(table(name, rows))
            finally:
                for client in clients:
                    client.cancel()
                await asyncio.gather(*clients, return_exceptions=True)
            say(f"\nDone in {time.monotonic() - started:.1f}s. The clusters were simulated.")
            if keep_running:
                await _keep_running(world, say)
    return 0


Step = tuple[str, tuple[str, str], Callable[[], Awaitable[None]], float]


def _steps(world: World) -> list[Step]:
    """(phase, who should serve east1's client and the VM, action, length)."""
    return [
        ("steady state", ("east1", "west"), _nothing, 1.5),
        ("east1's backends down", ("east2", "west"), lambda: _kill(world, "east1"), 3.0),
        ("east2's backends down too", ("west", "west"), lambda: _kill(world, "east2"), 3.0),
        ("east1's backends back", ("east1", "west"), lambda: _revive(world, "east1"), 6.0),
        ("west's backends down", ("east1", "east1"), lambda: _kill(world, "west"), 3.0),
    ]


def _say(out: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    return say


async def _nothing() -> None:
    return None


async def _kill(world: World, cluster: str) -> None:
    for i in range(REPLICAS):
        await world.sim(cluster).kill_backend(NS, f"echo-{i}")


async def _revive(world: World, cluster: str) -> None:
    for i in range(REPLICAS):
        await world.sim(cluster).revive_backend(NS, f"echo-{i}")


async def _apply_policy(world: World) -> None:
    policy = TrafficPolicy(service=ECHO, failback_hold_down_seconds=HOLD_DOWN)
    async with world.admin() as admin:
        await admin.put_policy(policy)


def _routed(world: World, cluster: str) -> bool:
    try:
        world.sim(cluster).service_address(NS, "echo-global")
    except LookupError:
        return False
    agent = world.members[cluster].agent
    choice = agent.choices.get(ECHO) if agent else None
    return choice is not None and choice.priority == 0


def _vm_routed(vm: VMAgent, level: int) -> bool:
    choice = vm.forwarder.choices.get(ECHO)
    return (ECHO, 80) in vm.forwarder.bound and choice is not None and choice.priority == level


async def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def _keep_running(world: World, say: Callable[[str], None]) -> None:
    say("\nStill running (Ctrl-C to stop). Look around:")
    say(f"  registry      {world.url}")
    say(f"  admin config  {world.base / 'registry' / 'admin.json'}")
    say(f"  dashboard     {world.url}/  (with the admin certificate)")
    for name, member in world.members.items():
        say(f"  sim-{name:<8} {member.sim.url}  kubeconfig {member.kubeconfig}")
    for name, (vm, _) in world.vms.items():
        say(f"  vm {name:<9} state dir {vm.state_dir}  (forwards.txt, hosts)")
    say("  e.g. fedctl --config <admin config> services")
    say("       kubectl --kubeconfig <kubeconfig> get endpointslices -n demo")
    await asyncio.Event().wait()


__all__ = ["run_demo"]
