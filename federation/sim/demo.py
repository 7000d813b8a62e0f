"""``fedctl demo``: a local federation of three SIMULATED clusters in two
regions, real echo backend processes, real agents and a real registry on
SQLite, and a client in cluster east1 sending a steady stream of requests
to ``echo-global``.  It takes east1's backends down, then east2's, then
brings east1 back, and prints for each phase who served, how many requests
failed and how long traffic took to recover."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from federation.model import ServiceRef, TrafficPolicy
from federation.sim import echo
from federation.sim.world import ClusterSpec, World

NS = "demo"
REPLICAS = 2
HOLD_DOWN = 3.0
INTERVAL = 0.02
SPECS = (
    ClusterSpec("east1", "us-east", ("us-east-a",)),
    ClusterSpec("east2", "us-east", ("us-east-b",)),
    ClusterSpec("west", "us-west", ("us-west-a",)),
)


@dataclass
class Sample:
    at: float
    served_by: str | None  # None: the request failed


@dataclass
class Traffic:
    """A client in one cluster: one request every INTERVAL to echo-global."""

    host: str
    port: int
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                status, body = await echo.request(self.host, self.port, timeout=1.0)
                served = str(json.loads(body)["cluster"]) if status == 200 else None
            except (OSError, TimeoutError, ValueError, KeyError):
                served = None
            self.samples.append(Sample(started, served))
            await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))


@dataclass
class Phase:
    name: str
    expect: str  # the cluster that should serve once traffic settles
    started: float
    samples: list[Sample]

    def recovered_after(self) -> float | None:
        """Seconds from the phase's start until every later request was
        served by ``expect``; None if it never settled."""
        last_other = None
        for sample in self.samples:
            if sample.served_by != self.expect:
                last_other = sample
        if last_other is None:
            return 0.0
        if last_other is self.samples[-1]:
            return None
        later = self.samples[self.samples.index(last_other) + 1]
        return later.at - self.started


def table(phase: Phase) -> str:
    served = Counter(s.served_by or "FAILED" for s in phase.samples)
    recovered = phase.recovered_after()
    lines = [
        f"== {phase.name} (expect {phase.expect})",
        f"   {'served by':<12}{'requests':>9}",
    ]
    for who in sorted(served, key=lambda w: (w == "FAILED", w)):
        lines.append(f"   {who:<12}{served[who]:>9}")
    lines.append(f"   requests failed: {served.get('FAILED', 0)} of {len(phase.samples)}")
    lines.append(
        "   time to recover: "
        + ("did not settle" if recovered is None else f"{recovered * 1000:.0f} ms")
    )
    return "\n".join(lines)


async def run_demo(out: TextIO, keep_running: bool = False, base: Path | None = None) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="federation-demo-") as tmp:
        root = base or Path(tmp)
        say = _say(out)
        say("Starting a registry (SQLite) and three SIMULATED clusters:")
        say("  east1 and east2 in region us-east, west in us-west; the Kubernetes API")
        say("  servers, kubelets and kube-proxies are simulated in this process; the echo")
        say("  backends are real processes, the traffic is real TCP, the agents and the")
        say("  registry are the production code.")
        async with World(root, SPECS, process_pods=True, lease_seconds=2.0) as world:
            for name in world.members:
                world.sim(name).run_echo(NS, "echo", replicas=REPLICAS)
                await world.export(name, NS, "echo")
            await _apply_policy(world)
            await _wait(lambda: _routed(world, "east1"), 60.0, "echo-global in east1")
            host, port = world.sim("east1").service_address(NS, "echo-global")
            say(f"\nA client in east1 sends a request every {INTERVAL * 1000:.0f} ms to "
                f"echo-global ({host}:{port}); failback hold-down {HOLD_DOWN:g}s.\n")  # fmt: skip
            traffic = Traffic(host, port)
            client = asyncio.create_task(traffic.run())
            try:
                steps: list[tuple[str, str, Callable[[], Awaitable[None]], float]] = [
                    ("steady state", "east1", _nothing, 1.5),
                    ("east1's backends down", "east2", lambda: _kill(world, "east1"), 3.0),
                    ("east2's backends down too", "west", lambda: _kill(world, "east2"), 3.0),
                    ("east1's backends back", "east1", lambda: _revive(world, "east1"),
                     HOLD_DOWN + 3.0),
                ]  # fmt: skip
                for name, expect, action, length in steps:
                    begin = time.monotonic()
                    mark = len(traffic.samples)
                    await action()
                    await asyncio.sleep(length)
                    phase = Phase(name, expect, begin, traffic.samples[mark:])
                    say(table(phase))
            finally:
                client.cancel()
                await asyncio.gather(client, return_exceptions=True)
            say(f"\nDone in {time.monotonic() - started:.1f}s. The clusters were simulated.")
            if keep_running:
                await _keep_running(world, say)
    return 0


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
    policy = TrafficPolicy(
        service=ServiceRef(namespace=NS, name="echo"), failback_hold_down_seconds=HOLD_DOWN
    )
    async with world.admin() as admin:
        await admin.request("PUT", f"/v1/policies/{NS}/echo", policy.to_wire())


def _routed(world: World, cluster: str) -> bool:
    try:
        world.sim(cluster).service_address(NS, "echo-global")
    except LookupError:
        return False
    agent = world.members[cluster].agent
    choice = agent.choices.get(ServiceRef(namespace=NS, name="echo")) if agent else None
    return choice is not None and choice.priority == 0


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
    say("  e.g. fedctl --config <admin config> services")
    say("       kubectl --kubeconfig <kubeconfig> get endpointslices -n demo")
    await asyncio.Event().wait()


__all__ = ["run_demo"]
