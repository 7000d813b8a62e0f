"""Agent scale benchmark: one cluster agent importing one service that 255
sources export with 100 endpoints each.

Three processes, as deployed: the registry (``fedctl registry serve``, on
SQLite), one SIMULATED cluster (``fedctl sim cluster``) and its agent
(``fedctl agent cluster``).  This process fakes the 255 sources at the
registry protocol (real joins, mTLS, publishes) and watches the simulated
cluster's EndpointSlices through its Kubernetes API.  Measured:

- the time until all 25,500 endpoints are materialized, in how many slices,
  the largest slice (at most 100 endpoints, as kube's controller keeps);
- change -> slice: a source flips one endpoint's readiness, and the time
  until the agent's slice shows it, p50/p99 over ``--changes`` changes;
- how many slices each change rewrote (one source's slices only);
- the agent's peak RSS (VmHWM).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from registry_bench import admin_client, registry_process
from scale import Process, raw_etcd, until
from stats import percentile

from agents.client import RegistryClient
from agents.cluster.kube import ENDPOINT_SLICES, Kube, KubeError
from agents.view import keep_alive
from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from federation.shared.clock import SystemClock
from federation.sim.etcd_process import EtcdProcess, free_port

SERVICE = ServiceRef(namespace="bench", name="svc")
SELECTOR = "kubernetes.io/service-name=svc-global"
TARGETS = {"p99_ms": 100.0, "agent_rss_mib": 256.0}


def source_set(index: int, endpoints: int, generation: int = 1) -> EndpointSet:
    return EndpointSet(
        service=SERVICE,
        source=SourceRef.parse(f"cluster:s{index}"),
        generation=generation,
        ports=(EndpointPort(name="http", port=80),),
        endpoints=tuple(
            Endpoint(
                address=f"10.{index}.{j // 250}.{j % 250 + 1}",
                ports=(EndpointPort(name="http", port=8080),),
                locality=Locality(region="far", zone=f"far-{index % 3}", cluster=f"s{index}"),
            )
            for j in range(endpoints)
        ),
    )


@contextlib.asynccontextmanager
async def child(*argv: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "federation.cli", *argv, stdout=out, stderr=out
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


class Slices:
    """The agent's slices as a watch of the simulated cluster shows them."""

    def __init__(self) -> None:
        self.held: dict[str, set[str]] = {}
        self.count: dict[str, int] = {}  # address -> slices holding it
        self.largest = 0
        self.writes: dict[str, int] = {}
        self.changed = asyncio.Event()

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        for address in self.held.pop(name, set()):
            self.count[address] -= 1
            if not self.count[address]:
                del self.count[address]
        if kind in ("ADDED", "MODIFIED"):
            addresses = {a for e in obj.get("endpoints") or [] for a in e["addresses"]}
            self.held[name] = addresses
            for address in addresses:
                self.count[address] = self.count.get(address, 0) + 1
            self.largest = max(self.largest, len(addresses))
            self.writes[name] = self.writes.get(name, 0) + 1
        self.changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        """Until ``condition`` holds, woken by each slice event."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def addresses(self) -> set[str]:
        return set(self.count)

    def holds(self, address: str) -> bool:
        return address in self.count


async def follow(kube: Kube, slices: Slices) -> None:
    items, version = await kube.list(ENDPOINT_SLICES, "bench", label_selector=SELECTOR)
    for obj in items:
        slices.apply("ADDED", obj)
    while True:
        try:
            async for kind, obj in kube.watch(ENDPOINT_SLICES, version, label_selector=SELECTOR):
                version = str(obj["metadata"].get("resourceVersion", version))
                if kind != "BOOKMARK":
                    slices.apply(kind, obj)
        except KubeError:
            items, version = await kube.list(ENDPOINT_SLICES, "bench", label_selector=SELECTOR)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pids: list[int] = []
        async with registry_process(
            f"sqlite:///{tmp}/registry.db", base / "registry", pids.append
        ) as config_path:
            admin = await admin_client(config_path)
            url = admin.url
            kubeconfig = base / "home.kubeconfig"
            sim_port = free_port()
            async with child(
                "sim", "cluster", "home", "--listen", f"127.0.0.1:{sim_port}",
                "--kubeconfig", str(kubeconfig), "--index", "3", "--region", "home",
                log=base / "sim.log",
            ):  # fmt: skip
                await until(kubeconfig.exists, 30.0)
                record = {"name": "home", "locality": {"region": "home", "zone": "a"}}
                answer = await admin.request("POST", "/v1/clusters", {"record": record})
                async with child(
                    "agent", "cluster", "--kubeconfig", str(kubeconfig), "--registry", url,
                    "--join-token", answer["token"], "--state-dir", str(base / "agent"),
                    "--listen", f"127.0.0.1:{free_port()}", log=base / "agent.log",
                ) as agent:  # fmt: skip
                    return await measure(args, admin, url, kubeconfig, Process(agent.pid))


async def measure(
    args: argparse.Namespace, admin: RegistryClient, url: str, kubeconfig: Path, agent: Process
) -> dict[str, Any]:
    sources: list[tuple[RegistryClient, EndpointSet]] = []
    background: list[asyncio.Task[None]] = []
    kube: Kube | None = None
    try:
        for i in range(args.sources):
            record = {"name": f"s{i}", "locality": {"region": "far", "zone": f"far-{i % 3}"}}
            answer = await admin.request("POST", "/v1/clusters", {"record": record})
            credentials, _ = await RegistryClient.join(url, answer["token"])
            client = RegistryClient(url, credentials)
            sources.append((client, source_set(i, args.endpoints)))
            await client.heartbeat(SourceRef.parse(f"cluster:s{i}"))
            background.append(asyncio.create_task(heartbeats(client, i)))
        kube = await Kube.from_kubeconfig(kubeconfig)
        slices = Slices()
        background.append(asyncio.create_task(follow(kube, slices)))
        started = time.perf_counter()
        gate = asyncio.Semaphore(16)

        async def publish(client: RegistryClient, endpoint_set: EndpointSet) -> None:
            async with gate:
                await client.publish(endpoint_set)

        await asyncio.gather(*(publish(c, s) for c, s in sources))
        wanted = {e.address for _, s in sources for e in s.endpoints}
        await until(lambda: len(slices.count) == len(wanted), 120.0)
        materialized = time.perf_counter() - started
        complete = slices.addresses() == wanted
        changing = time.perf_counter()
        latencies, rewritten = await changes(args, sources, slices)
        rate = len(latencies) / (time.perf_counter() - changing)
        return {
            "clusters": args.sources + 1,
            "sources": args.sources,
            "endpoints": len(wanted),
            "updates_per_s": round(rate, 1),
            "materialized_s": round(materialized, 2),
            "complete": complete,
            "slices": len(slices.held),
            "largest_slice": slices.largest,
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
            "changes": len(latencies),
            "max_slices_rewritten_per_change": max(rewritten, default=0),
            "agent_rss_mib": round(agent_peak(agent), 1),
        }
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if kube is not None:
            await kube.close()
        for client, _ in sources:
            await client.close()
        await admin.close()


async def heartbeats(client: RegistryClient, index: int) -> None:
    """A source renews its liveness lease with the agents' own loop (a
    third of the TTL, jittered) from its join on: a source that went stale
    while the others joined, or mid-run, would have the agent rewrite its
    slices, which is not what is measured."""
    await keep_alive(client, SourceRef.parse(f"cluster:s{index}"), SystemClock())


async def changes(
    args: argparse.Namespace, sources: list[tuple[RegistryClient, EndpointSet]], slices: Slices
) -> tuple[list[float], list[int]]:
    rng = random.Random(11)
    latencies: list[float] = []
    rewritten: list[int] = []
    for _ in range(args.changes):
        index = rng.randrange(len(sources))
        client, current = sources[index]
        flipped = replace(current.endpoints[0], ready=not current.endpoints[0].ready)
        changed = replace(
            current,
            generation=current.generation + 1,
            endpoints=(flipped, *current.endpoints[1:]),
        )
        sources[index] = (client, changed)
        present = flipped.ready
        before = dict(slices.writes)
        started = time.perf_counter()
        await client.publish(changed)
        await slices.wait_for(shown(slices, flipped.address, present), 10.0)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(1.0 / args.rate)
        rewritten.append(sum(1 for k, v in slices.writes.items() if before.get(k) != v))
    return latencies, rewritten


def shown(slices: Slices, address: str, present: bool) -> Callable[[], bool]:
    return lambda: slices.holds(address) == present


def agent_peak(agent: Process) -> float:
    text = Path(f"/proc/{agent.pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM"))) / 1024
    )


async def baseline(args: argparse.Namespace) -> tuple[float, float]:
    """Raw etcd put -> watch, one watcher, the same rate and value size."""
    value = json.dumps(source_set(1, args.endpoints).to_wire()).encode()
    with EtcdProcess() as etcd:
        samples = await raw_etcd(etcd, 1, args.rate, 5.0, value)
    return round(percentile(samples, 0.5) * 1000, 2), round(percentile(samples, 0.99) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=255)
    parser.add_argument("--endpoints", type=int, default=100, help="per source")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="changes per second, at most")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result["etcd_p50_ms"], result["etcd_p99_ms"] = asyncio.run(baseline(args))
    result["targets_met"] = bool(result["complete"]) and all(
        result[k] is not None and result[k] <= v for k, v in TARGETS.items()
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
