"""Propagation through the whole federation: N simulated clusters, each with
its real cluster agent, and one SQLite registry, on this machine's cores.

By default the federation is spread over processes as a deployment spreads
it over machines, as far as two cores allow: the registry in this process,
the two source clusters (c1, c2) with their agents in one worker, and the
other clusters in two workers of ~N/2 clusters and agents each (their
simulated API servers, kubelets and proxies included).  ``--one-process``
runs everything in this process instead: 50 agents then share one thread,
which measures Python's single-thread throughput more than the design.

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
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
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
        self.last: dict[str, Any] = {}
        self.done = asyncio.Event()
        self.expected: set[str] = set()

    def arm(self, want: Any, expected: set[str]) -> None:
        self.want, self.seen, self.expected = want, {}, expected
        self.done.clear()

    def settled(self) -> None:
        """Count clusters already in the wanted state (for the first round)."""
        for cluster in self.expected:
            if self.last.get(cluster) == self.want:
                self.saw(cluster, self.want, 0.0)

    def saw(self, cluster: str, state: Any, at: float | None = None) -> None:
        self.last[cluster] = state
        if cluster in self.expected and cluster not in self.seen and state == self.want:
            self.seen[cluster] = time.perf_counter() if at is None else at
            if self.seen.keys() >= self.expected:
                self.done.set()


Report = Callable[[str, Any], None]


async def follow_imports(world: World, name: str, report: Report) -> None:
    """Report cluster ``name``'s view of FLIP, as its ServiceImport says."""
    sim = world.sim(name)
    kind = sim.api.types.find("multicluster.x-k8s.io", "v1alpha1", "serviceimports")

    async def handle(_: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "bench":
            report(name, flip_state(obj))

    await sim.client.follow(kind, handle)


async def follow_slices(world: World, report: Report) -> None:
    """Report whether c1's bench-global slices hold c2's endpoints (slices
    are per source: c2's endpoints come and go with a slice of their own)."""
    sim = world.sim("c1")
    holding: set[str] = set()  # slices that hold c2's endpoints now

    async def handle(kind: str, obj: dict[str, Any]) -> None:
        labels = obj["metadata"].get("labels", {})
        if labels.get("kubernetes.io/service-name") != "bench-global":
            return
        addresses = {a for e in obj.get("endpoints") or [] for a in e["addresses"]}
        name = obj["metadata"]["name"]
        if kind != "DELETED" and any(a.startswith("127.2.200.") for a in addresses):
            holding.add(name)
        else:
            holding.discard(name)
        report("c1", bool(holding))

    await sim.client.follow(ENDPOINT_SLICE, handle)


async def export_bench(world: World, index: int) -> None:
    """Cluster ``index`` exports ``bench`` with two endpoints of its own."""
    sim = world.sim(f"c{index}")
    sim.ensure_namespace(NS)
    sim.client.create(SERVICE, NS, {
        "metadata": {"name": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    sim.client.create(ENDPOINT_SLICE, NS, manual_slice(index, (True, True)))
    await world.export(f"c{index}", NS, "bench")


Flip = Callable[[tuple[bool, bool]], Awaitable[float]]  # set c1's readiness; when it started


async def measure_one_process(n: int, rounds: int) -> dict[str, Any]:
    specs = [ClusterSpec(f"c{i}", "r1", (f"z{i}",)) for i in range(1, n + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        async with World(Path(tmp), specs, window=0.05, heartbeat_ttl=30) as world:
            for index in (1, 2):
                await export_bench(world, index)
            arrivals, failover = Arrivals(), Arrivals()
            others = {f"c{i}" for i in range(2, n + 1)}
            tasks = [asyncio.create_task(follow_imports(world, c, arrivals.saw)) for c in others]
            tasks.append(asyncio.create_task(follow_slices(world, failover.saw)))

            async def flip(ready: tuple[bool, bool]) -> float:
                started = time.perf_counter()
                set_ready(world, 1, ready)
                return started

            try:
                return await _rounds(flip, arrivals, failover, others, rounds)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


async def _rounds(
    flip: Flip, arrivals: Arrivals, failover: Arrivals, others: set[str], rounds: int
) -> dict[str, Any]:
    arrivals.arm(True, others)  # settle: everyone sees FLIP ready
    arrivals.settled()
    await asyncio.wait_for(arrivals.done.wait(), 180)
    propagation: list[float] = []
    state = True
    for _ in range(rounds):
        state = not state
        arrivals.arm(state, others)
        started = await flip((state, True))
        await asyncio.wait_for(arrivals.done.wait(), 30)
        propagation += [t - started for t in arrivals.seen.values()]
        await asyncio.sleep(0.06)  # past the coalescing window: each flip is a first change
    share: list[float] = []
    for _ in range(rounds):
        failover.arm(True, {"c1"})
        started = await flip((False, False))
        await asyncio.wait_for(failover.done.wait(), 30)
        share.append(failover.seen["c1"] - started)
        failover.arm(False, {"c1"})
        await flip((True, True))
        await asyncio.wait_for(failover.done.wait(), 30)
        await asyncio.sleep(0.06)
    return {"propagation": propagation, "failover": share}


# -- spread over processes -------------------------------------------------------


def worker_main(conn: Connection, url: str, admin: str, base: str, names: list[str]) -> None:
    """A worker process: clusters ``names`` (contiguous, c<i>) with their agents."""
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_worker(conn, url, Path(admin), Path(base), names))


async def _worker(conn: Connection, url: str, admin: Path, base: Path, names: list[str]) -> None:
    specs = [ClusterSpec(name, "r1", (f"z{name[1:]}",)) for name in names]
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    reported: dict[tuple[str, str], Any] = {}

    def reporter(what: str) -> Report:
        def report(cluster: str, state: Any) -> None:
            if reported.get((what, cluster), "?") != state:
                reported[(what, cluster)] = state
                conn.send(("state", what, cluster, state, time.perf_counter()))

        return report

    first = int(names[0][1:])
    world = World(
        base, specs, window=0.05, heartbeat_ttl=30, remote=(url, admin), first_index=first
    )
    async with world:
        for name in names:
            if name in ("c1", "c2"):
                await export_bench(world, int(name[1:]))
        tasks = [
            asyncio.create_task(follow_imports(world, name, reporter("import")))
            for name in names
            if name != "c1"
        ]
        if "c1" in names:
            tasks.append(asyncio.create_task(follow_slices(world, reporter("slice"))))
        conn.send(("ready",))
        try:
            while (message := await inbox.get())[0] != "stop":
                started = time.perf_counter()
                set_ready(world, 1, message[1])
                conn.send(("flipped", started))
        finally:
            loop.remove_reader(conn.fileno())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def measure_spread(n: int, rounds: int) -> dict[str, Any]:
    names = [f"c{i}" for i in range(1, n + 1)]
    consumers = names[2:]
    half = (len(consumers) + 1) // 2
    groups = [g for g in (names[:2], consumers[:half], consumers[half:]) if g]
    context = multiprocessing.get_context("spawn")
    arrivals, failover = Arrivals(), Arrivals()
    ready = 0
    flipped: asyncio.Queue[float] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_message(conn: Connection) -> None:
        nonlocal ready
        message = conn.recv()
        if message[0] == "ready":
            ready += 1
        elif message[0] == "flipped":
            flipped.put_nowait(message[1])
        else:
            _, what, cluster, state, at = message
            (arrivals if what == "import" else failover).saw(cluster, state, at)

    with tempfile.TemporaryDirectory() as tmp:
        async with World(Path(tmp) / "registry", [], heartbeat_ttl=30) as registry:
            workers: list[tuple[Any, Connection]] = []
            try:
                for group in groups:
                    mine, theirs = context.Pipe()
                    base = str(Path(tmp) / group[0])
                    process = context.Process(
                        target=worker_main,
                        args=(theirs, registry.url, str(registry.admin_dir), base, group),
                        daemon=True,
                    )
                    process.start()
                    workers.append((process, mine))
                    loop.add_reader(mine.fileno(), on_message, mine)
                deadline = time.monotonic() + 300
                while ready < len(groups):
                    if time.monotonic() > deadline or not all(p.is_alive() for p, _ in workers):
                        raise RuntimeError("a benchmark worker did not start")
                    await asyncio.sleep(0.1)
                sources = workers[0][1]

                async def flip(state: tuple[bool, bool]) -> float:
                    sources.send(("flip", state))
                    return await asyncio.wait_for(flipped.get(), 30)

                others = set(names[1:])
                return await _rounds(flip, arrivals, failover, others, rounds)
            finally:
                for process, conn in workers:
                    loop.remove_reader(conn.fileno())
                    if process.is_alive():
                        conn.send(("stop",))
                for process, _ in workers:
                    await asyncio.to_thread(process.join, 30)
                    if process.is_alive():
                        process.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with EtcdProcess() as etcd:
        for n in args.clusters:
            if args.one_process:
                measured = await measure_one_process(n, args.rounds)
            else:
                measured = await measure_spread(n, args.rounds)
            measured["etcd"] = await raw_etcd_latency([etcd], max(1, n - 1), args.rounds * 5)
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
    parser.add_argument(
        "--one-process", action="store_true", help="every cluster and agent in this process"
    )
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
        "processes": "one" if args.one_process else "spread",
        "updates_per_s": round(1000 / max(results[last]["propagation"]["p50_ms"], 0.001), 1),
        "detail": results,
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
