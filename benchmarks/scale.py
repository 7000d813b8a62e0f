"""Scale benchmark: N clusters faked at the registry protocol, as Cilium's
mock clustermesh apiserver fakes them.

Every cluster is real to the registry: registered, joined with its own token
and CSR, publishing over its own mTLS connection, watching over its own
stream.  No emulator runs; the registry is its own process (``fedctl
registry serve``), on SQLite and on etcd in one run.  Measured per backend:

- bootstrap: every cluster publishes every service (``--in-flight`` at once);
- the registry's RSS and CPU after the load;
- a streamed relist through ``RegistryClient.snapshot``: its time, that it
  is complete, and the registry's peak RSS while it runs;
- churn: ``--rate`` updates/s for ``--seconds`` (each flips one endpoint of
  one cluster's service, sent by the client as a delta, the registry
  rewriting the whole shard), delivered to one watch
  stream per cluster that asks for PATCH deltas as agents do (``--whole``:
  whole sets): publish -> every-watcher p50/p99, the publish round trip's
  p50/p99, what fraction arrived,
  and the registry's cores;
- raw etcd put -> watch with the same watchers, rate and values, as the
  baseline.

The last line is one JSON object (DESIGN section 10's fields, plus
``rss_mib``, ``relist_s``, ``bootstrap_s`` and ``registry_cores``; the
etcd-backed registry's figures under ``etcd_backed``).  ``--quick`` is the
smoke test ``make test`` runs: small, and it asserts only correctness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aetcd
from registry_bench import admin_client, publish_buckets, registry_process
from stats import bucket_quantile, percentile
from watchers import Arrivals, registry_watch

from agents.client import Event, RegistryClient, Relist, Synced
from agents.view import keep_alive
from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from federation.model.keys import ShardKey
from federation.shared.clock import SystemClock
from federation.shared.heap import freeze_startup
from federation.shared.loop import run as run_loop
from federation.sim.etcd_process import EtcdProcess

TARGETS = {"bootstrap_s": 60.0, "rss_mib": 512.0, "relist_s": 3.0, "registry_cores": 1.0,
           "p99_ms": 100.0}  # fmt: skip


@dataclass
class Fake:
    """One faked cluster: its client and what it last published."""

    name: str
    client: RegistryClient
    sets: dict[str, EndpointSet] = field(default_factory=dict)

    @property
    def source(self) -> SourceRef:
        return SourceRef.parse(f"cluster:{self.name}")


def endpoint_set(cluster: int, service: int, endpoints: int) -> EndpointSet:
    locality = Locality(region=f"r{cluster % 5}", zone=f"z{cluster % 15}", cluster=f"c{cluster}")
    return EndpointSet(
        service=ServiceRef(namespace="bench", name=f"svc{service}"),
        source=SourceRef.parse(f"cluster:c{cluster}"),
        generation=1,
        ports=(EndpointPort(name="http", port=80),),
        endpoints=tuple(
            Endpoint(
                address=f"10.{cluster}.{service + 16 * (i // 250)}.{i % 250 + 1}",
                ports=(EndpointPort(name="http", port=8080),),
                locality=locality,
            )
            for i in range(endpoints)
        ),
    )


class Process:
    """RSS and CPU of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0

    def rss_mib(self) -> float:
        text = Path(f"/proc/{self.pid}/status").read_text()
        kib = int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS")))
        self.peak = max(self.peak, kib / 1024)
        return kib / 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def join_all(
    admin: RegistryClient, clusters: int, fakes: list[Fake], joined: Callable[[Fake], None]
) -> None:
    """Register and join ``clusters`` clusters into ``fakes``, one after
    another; each is handed to ``joined`` once its first heartbeat is in."""
    for i in range(clusters):
        record = {"name": f"c{i}", "locality": {"region": f"r{i % 5}", "zone": f"z{i % 15}"}}
        answer = await admin.request("POST", "/v1/clusters", {"record": record})
        credentials, _ = await RegistryClient.join(admin.url, answer["token"])
        fake = Fake(f"c{i}", RegistryClient(admin.url, credentials, timeout=60.0))
        fakes.append(fake)
        await fake.client.heartbeat(fake.source)
        joined(fake)


async def heartbeats(fake: Fake) -> None:
    """A cluster renews its liveness lease with the agents' own loop (a
    third of the TTL, jittered) from its join on, so no source goes stale
    while the others join or mid-run, and the fleet's beats stay spread
    out as real agents' are."""
    await keep_alive(fake.client, fake.source, SystemClock())


async def bootstrap(fakes: list[Fake], services: int, endpoints: int, in_flight: int) -> float:
    work = [(f, s) for s in range(services) for f in fakes]
    gate = asyncio.Semaphore(in_flight)

    async def publish(fake: Fake, service: int) -> None:
        endpoint_set_ = endpoint_set(int(fake.name[1:]), service, endpoints)
        async with gate:
            await fake.client.publish(endpoint_set_)
        fake.sets[endpoint_set_.service.name] = endpoint_set_

    started = time.perf_counter()
    await asyncio.gather(*(publish(f, s) for f, s in work))
    return time.perf_counter() - started


async def relist(client: RegistryClient, registry: Process) -> tuple[float, int, int]:
    """(seconds, endpoint sets, endpoints) of one streamed snapshot."""
    sets = endpoints = 0

    async def sample() -> None:
        while True:
            registry.rss_mib()
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    complete = False
    try:
        async for change in client.snapshot():
            if isinstance(change, Relist):
                sets = endpoints = 0
            elif isinstance(change, Event) and change.kind == "EndpointSet" and change.object:
                sets += 1
                endpoints += len(change.object["endpoints"])
            elif isinstance(change, Synced):
                complete = True
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    elapsed = time.perf_counter() - started
    assert complete, "the snapshot ended without its END line"
    return elapsed, sets, endpoints


async def churn(
    fakes: list[Fake],
    rate: float,
    seconds: float,
    in_flight: int,
    rng: random.Random,
    patches: bool = True,
) -> tuple[Arrivals, float]:
    """Flip one endpoint of a random (cluster, service) ``rate`` times a
    second; returns the arrivals at every watcher and the publishes/s."""
    since = max(int((await fakes[0].client.request("GET", "/v1/status"))["revision"]), 0)
    arrivals = Arrivals()
    ready: list[None] = []
    watchers = [
        asyncio.create_task(registry_watch(f.client, since, arrivals, ready, patches))
        for f in fakes
    ]
    gate = asyncio.Semaphore(in_flight)

    async def update(fake: Fake) -> None:
        name = rng.choice(sorted(fake.sets))
        current = fake.sets[name]
        flipped = tuple(
            replace(e, ready=not e.ready) if i == 0 else e for i, e in enumerate(current.endpoints)
        )
        changed = replace(current, generation=current.generation + 1, endpoints=flipped)
        fake.sets[name] = changed
        async with gate:
            started = time.perf_counter()
            answer = await fake.client.publish(changed)
        arrivals.publishes.append(time.perf_counter() - started)
        shard = ShardKey(service=changed.service, source=changed.source, shard=changed.shard)
        arrivals.sent[str(answer["revision"]).encode(), shard.key.encode()] = started

    try:
        await until(lambda: len(ready) == len(fakes), 60.0)
        # Each watch stream took the connection its client had pooled: open
        # every publisher's own before measuring, as a running agent holds
        # it (otherwise the first second of churn measures 255 TLS
        # handshakes at once).
        await asyncio.gather(*(f.client.heartbeat(f.source) for f in fakes))
        await asyncio.sleep(1.0)  # the registry drains that burst before the clock starts
        total = int(rate * seconds)
        started = time.perf_counter()
        pending: list[asyncio.Task[None]] = []
        busy: set[str] = set()
        for i in range(total):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            fake = pick_free(fakes, busy, rng)
            if fake is None:  # every cluster still waits on its last publish
                arrivals.skipped += 1
                continue
            task = asyncio.create_task(update(fake))
            busy.add(fake.name)
            task.add_done_callback(lambda _, n=fake.name: busy.discard(n))
            pending.append(task)
        await asyncio.gather(*pending)
        achieved = len(arrivals.sent) / (time.perf_counter() - started)
        last = max(arrivals.sent, key=lambda change: int(change[0]))
        await until(lambda: len(arrivals.seen.get(last, ())) >= len(fakes), 30.0)
        await asyncio.sleep(0.2)
        return arrivals, achieved
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


def pick_free(fakes: list[Fake], busy: set[str], rng: random.Random) -> Fake | None:
    """A cluster drawn uniformly from those not waiting on a publish, None
    when all are; by rejection while few are busy (a list of the free ones
    per update was 5% of the fakes' CPU)."""
    if len(busy) * 2 < len(fakes):
        while (fake := rng.choice(fakes)).name in busy:
            pass
        return fake
    free = [f for f in fakes if f.name not in busy]
    return rng.choice(free) if free else None


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def raw_etcd(
    server: EtcdProcess, watchers: int, rate: float, seconds: float, value: bytes
) -> list[float]:
    """The same watchers, rate and value size, straight on etcd."""
    client = aetcd.Client(host=server.host, port=server.client_port)
    prefix = f"/raw-scale/{time.time_ns()}/"
    sent: dict[str, float] = {}
    seen: list[tuple[str, float]] = []

    async def watch() -> None:
        stream = await client.watch_prefix(prefix.encode())
        try:
            async for event in stream:
                seen.append((event.kv.key.decode(), time.perf_counter()))
        finally:
            await stream.cancel()

    tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
    try:
        await asyncio.sleep(1.0)  # every watch created
        total = int(rate * seconds)
        started = time.perf_counter()
        for i in range(total):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            key = f"{prefix}{i % 500}/{i}"
            sent[key] = time.perf_counter()
            await client.put(key.encode(), value)
        await asyncio.sleep(1.0)
        return [t - sent[k] for k, t in seen if k in sent]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


def ms(samples: list[float], q: float) -> float:
    return round(percentile(samples, q) * 1000, 2) if samples else float("nan")


async def backend(name: str, url: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    pids: list[int] = []
    async with registry_process(
        url, tmp / name, pids.append, log=args.log_dir / f"{name}.log" if args.log_dir else None
    ) as config:
        registry = Process(pids[0])
        admin = await admin_client(config)
        fakes: list[Fake] = []
        beating: list[asyncio.Task[None]] = []
        try:
            await join_all(
                admin,
                args.clusters,
                fakes,
                lambda f: beating.append(asyncio.create_task(heartbeats(f))),
            )
            boot = await bootstrap(fakes, args.services, args.endpoints, args.in_flight)
            print(f"{name:6} bootstrap {boot:.1f}s", flush=True)
            rss = registry.rss_mib()
            registry.peak = rss
            relist_s, sets, endpoints = await relist(fakes[0].client, registry)
            expected = args.clusters * args.services
            print(
                f"{name:6} relist {relist_s:.2f}s ({sets} sets, {endpoints} endpoints)", flush=True
            )
            # The fakes stand in for remote machines: their heap, built by
            # now, is frozen out of the collector's walks as the registry's
            # is, or a full collection stops every fake (and the stamps of
            # what they receive) for a quarter of a second mid-churn.
            freeze_startup()
            cpu = registry.cpu_seconds()
            wall = time.perf_counter()
            buckets = await publish_buckets(admin)
            arrivals, achieved = await churn(
                fakes, args.rate, args.seconds, args.in_flight, random.Random(7), not args.whole
            )
            cores = (registry.cpu_seconds() - cpu) / (time.perf_counter() - wall)
            answered = await publish_buckets(admin)
            latencies = arrivals.latencies()
            result = {
                "bootstrap_s": round(boot, 2),
                "rss_mib": round(rss, 1),
                "relist_s": round(relist_s, 2),
                "relist_peak_rss_mib": round(registry.peak, 1),
                "relist_complete": sets == expected and endpoints == expected * args.endpoints,
                "p50_ms": ms(latencies, 0.5),
                "p99_ms": ms(latencies, 0.99),
                "publish_p50_ms": ms(arrivals.publishes, 0.5),
                "publish_p99_ms": ms(arrivals.publishes, 0.99),
                # The same publishes as the registry timed them (its
                # histogram's buckets): what the fakes' own loop adds is
                # the difference.
                "registry_publish_p50_ms": bucket_quantile(buckets, answered, 0.5),
                "registry_publish_p99_ms": bucket_quantile(buckets, answered, 0.99),
                "delivered": round(arrivals.delivered(len(fakes)), 4),
                "skipped_updates": arrivals.skipped,
                "updates_per_s": round(achieved, 1),
                "registry_cores": round(cores, 2),
                "rss_after_churn_mib": round(registry.rss_mib(), 1),
            }
            print(f"{name:6} {json.dumps(result)}", flush=True)
            return result
        finally:
            for task in beating:
                task.cancel()
            await asyncio.gather(*beating, return_exceptions=True)
            for fake in fakes:
                await fake.client.close()
            await admin.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "clusters": args.clusters,
        "services": args.services,
        "endpoints": args.clusters * args.services * args.endpoints,
        "watch": "whole sets" if args.whole else "patches",
    }
    value = json.dumps(endpoint_set(1, 1, args.endpoints).to_wire()).encode()
    with tempfile.TemporaryDirectory() as tmp, EtcdProcess() as etcd:
        urls = {
            "sqlite": f"sqlite:///{tmp}/registry.db",
            "etcd": f"etcd://{etcd.host}:{etcd.client_port}",
        }
        results = {}
        for name in args.backends:
            results[name] = await backend(name, urls[name], Path(tmp), args)
            await asyncio.to_thread(settle_disk, Path(tmp), name)
        raw = await raw_etcd(etcd, args.clusters, args.rate, min(args.seconds, 10.0), value)
    out["etcd_p50_ms"], out["etcd_p99_ms"] = ms(raw, 0.5), ms(raw, 0.99)
    first = args.backends[0]
    out.update(results[first])
    out["backend"] = first
    for name in args.backends[1:]:
        out[f"{name}_backed" if name == "etcd" else name] = results[name]
    out["targets_met"] = {
        name: all((r[k] <= limit) for k, limit in TARGETS.items() if isinstance(r.get(k), float))
        and r["delivered"] == 1.0
        and r["skipped_updates"] == 0
        and r["updates_per_s"] >= 0.95 * args.rate
        for name, r in results.items()
    }
    return out


def settle_disk(tmp: Path, name: str) -> None:
    """Remove a measured backend's files and flush the disk, so the next
    backend's etcd or SQLite does not sync behind the writeback of the
    last one's (the SQLite run leaves some hundreds of MB dirty, and the
    kernel writes them out during the etcd run that follows)."""
    shutil.rmtree(tmp / name, ignore_errors=True)
    if name == "sqlite":
        for path in tmp.glob("registry.db*"):
            path.unlink()
    os.sync()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", type=int, default=255)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--endpoints", type=int, default=100, help="per cluster and service")
    p.add_argument("--rate", type=float, default=325.0, help="churn updates per second")
    p.add_argument("--seconds", type=float, default=20.0, help="churn duration")
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--backends", nargs="+", default=["sqlite", "etcd"])
    p.add_argument("--quick", action="store_true", help="a small run for make test")
    p.add_argument("--log-dir", type=Path, help="keep each registry's stderr here")
    p.add_argument(
        "--whole", action="store_true", help="watchers take whole sets, not PATCH deltas"
    )
    return p


def main() -> None:
    args = parser().parse_args()
    if args.quick:
        args.clusters, args.services, args.endpoints = 20, 3, 20
        args.rate, args.seconds = 40.0, 2.0
    print(json.dumps(run_loop(run(args))))


if __name__ == "__main__":
    main()
