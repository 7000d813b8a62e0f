"""Propagation through the whole federation: N simulated clusters, each with
its real cluster agent, one SQLite registry, all in one process on the
same cores.

Clusters 1 and 2 export ``bench`` with two endpoints each (an EndpointSlice
the benchmark writes, as an endpoint controller would). Every cluster
imports it.

- propagation: flip the readiness of one endpoint in cluster 1 and time
  until every other cluster has materialized the change (its ServiceImport,
  written in the same pass as its -global EndpointSlices, shows it);
- failover share: make both of cluster 1's endpoints unready and time until
  cluster 1's ``bench-global`` slice holds cluster 2's endpoints: the
  control plane's part of a failover, without the kubelet's probe time;
- raw etcd: put->watch with N-1 watchers on the same machine, same run.

The last line is one JSON object (DESIGN section 10)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from registry_bench import ms, raw_etcd_latency

from federation.sim.etcd_process import EtcdProcess
from federation.sim.kube.resources import ENDPOINT_SLICE, SERVICE
from federation.sim.world import ClusterSpec, World

NS = "bench"
FLIP = "127.1.200.1"


def manual_slice(index: int, ready: tuple[bool, bool]) -> dict[str, Any]:
    return {
        "metadata": {"name": "bench-manual", "labels": {"kubernetes.io/service-name": "bench"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [f"127.{index}.200.{i + 1}"], "conditions": {"ready": ok}}
            for i, ok in enumerate(ready)
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def set_ready(world: World, index: int, ready: tuple[bool, bool]) -> None:
    sim = world.sim(f"c{index}")
    current = sim.client.get(ENDPOINT_SLICE, NS, "bench-manual")
    assert current is not None
    body = manual_slice(index, ready)
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    body["metadata"]["namespace"] = NS
    sim.client.update(ENDPOINT_SLICE, body)


def flip_state(obj: dict[str, Any]) -> bool | None:
    """Cluster 1's FLIP endpoint readiness as a ServiceImport records it."""
    raw = obj.get("metadata", {}).get("annotations", {}).get("federation.io/sources")
    for endpoint_set in json.loads(raw or "[]"):
        if endpoint_set["source"] == "cluster:c1":
            for endpoint in endpoint_set["endpoints"]:
                if endpoint["address"] == FLIP:
                    return bool(endpoint["ready"])
    return None


class Arrivals:
    """Per cluster, when the wanted state was first seen."""

    def __init__(self) -> None:
        self.want: Any = None
        self.seen: dict[str, float] = {}
        self.done = asyncio.Event()
        self.expected: set[str] = set()

    def arm(self, want: Any, expected: set[str]) -> None:
        self.want, self.seen, self.expected = want, {}, expected
        self.done.clear()

    def saw(self, cluster: str, state: Any) -> None:
        if cluster in self.expected and cluster not in self.seen and state == self.want:
            self.seen[cluster] = time.perf_counter()
            if self.seen.keys() >= self.expected:
                self.done.set()


async def follow_imports(world: World, name: str, arrivals: Arrivals) -> None:
    sim = world.sim(name)
    kind = sim.api.types.find("multicluster.x-k8s.io", "v1alpha1", "serviceimports")

    async def handle(_: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "bench":
            arrivals.saw(name, flip_state(obj))

    await sim.client.follow(kind, handle)


async def follow_slices(world: World, arrivals: Arrivals) -> None:
    sim = world.sim("c1")

    async def handle(_: str, obj: dict[str, Any]) -> None:
        labels = obj["metadata"].get("labels", {})
        if labels.get("kubernetes.io/service-name") == "bench-global":
            addresses = {a for e in obj.get("endpoints") or [] for a in e["addresses"]}
            arrivals.saw("c1", any(a.startswith("127.2.200.") for a in addresses))

    await sim.client.follow(ENDPOINT_SLICE, handle)


async def measure(n: int, rounds: int, etcd: EtcdProcess) -> dict[str, Any]:
    specs = [ClusterSpec(f"c{i}", "r1", (f"z{i}",)) for i in range(1, n + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        async with World(Path(tmp), specs, window=0.05, heartbeat_ttl=30) as world:
            for index in (1, 2):
                sim = world.sim(f"c{index}")
                sim.ensure_namespace(NS)
                sim.client.create(SERVICE, NS, {
                    "metadata": {"name": "bench"},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                })  # fmt: skip
                sim.client.create(ENDPOINT_SLICE, NS, manual_slice(index, (True, True)))
                await world.export(f"c{index}", NS, "bench")
            arrivals = Arrivals()
            others = {f"c{i}" for i in range(2, n + 1)}
            tasks = [asyncio.create_task(follow_imports(world, c, arrivals)) for c in others]
            failover = Arrivals()
            tasks.append(asyncio.create_task(follow_slices(world, failover)))
            try:
                propagation = await _propagation(world, arrivals, others, rounds)
                share = await _failover(world, failover, rounds)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    etcd_samples = await raw_etcd_latency(etcd, max(1, n - 1), rounds * 5)
    return {"propagation": propagation, "failover": share, "etcd": etcd_samples}


async def _propagation(
    world: World, arrivals: Arrivals, others: set[str], rounds: int
) -> list[float]:
    arrivals.arm(True, others)  # settle: everyone sees FLIP ready
    for name in others:
        arrivals.saw(name, _current(world, name))
    await asyncio.wait_for(arrivals.done.wait(), 120)
    samples: list[float] = []
    state = True
    for _ in range(rounds):
        state = not state
        arrivals.arm(state, others)
        started = time.perf_counter()
        set_ready(world, 1, (state, True))
        await asyncio.wait_for(arrivals.done.wait(), 30)
        samples += [t - started for t in arrivals.seen.values()]
        await asyncio.sleep(0.06)  # past the coalescing window: each flip is a first change
    return samples


def _current(world: World, name: str) -> bool | None:
    sim = world.sim(name)
    kind = sim.api.types.find("multicluster.x-k8s.io", "v1alpha1", "serviceimports")
    obj = sim.client.get(kind, NS, "bench")
    return None if obj is None else flip_state(obj)


async def _failover(world: World, arrivals: Arrivals, rounds: int) -> list[float]:
    samples: list[float] = []
    for _ in range(rounds):
        arrivals.arm(True, {"c1"})
        started = time.perf_counter()
        set_ready(world, 1, (False, False))
        await asyncio.wait_for(arrivals.done.wait(), 30)
        samples.append(arrivals.seen["c1"] - started)
        arrivals.arm(False, {"c1"})
        set_ready(world, 1, (True, True))
        await asyncio.wait_for(arrivals.done.wait(), 30)
        await asyncio.sleep(0.06)
    return samples


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with EtcdProcess() as etcd:
        for n in args.clusters:
            measured = await measure(n, args.rounds, etcd)
            row = {
                "propagation": ms(measured["propagation"]),
                "failover_share": ms(measured["failover"]),
                "raw_etcd": ms(measured["etcd"]),
            }
            results[f"n{n}"] = row
            print(f"N={n:<3} {json.dumps(row)}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(run(args))
    last = f"n{args.clusters[-1]}"
    summary = {
        "clusters": args.clusters[-1],
        "endpoints": 4,
        "p50_ms": results[last]["propagation"]["p50_ms"],
        "p99_ms": results[last]["propagation"]["p99_ms"],
        "etcd_p50_ms": results[last]["raw_etcd"]["p50_ms"],
        "etcd_p99_ms": results[last]["raw_etcd"]["p99_ms"],
        "failover_share_p99_ms": results[last]["failover_share"]["p99_ms"],
        "updates_per_s": round(1000 / max(results[last]["propagation"]["p50_ms"], 0.001), 1),
        "detail": results,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
