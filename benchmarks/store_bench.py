"""Store benchmark: put->watch latency and put throughput, three targets.

In one run: the SQLite store, our etcd store, and raw etcd through the bare
aetcd client (the baseline our etcd layer is judged against).  Latency is
measured one put at a time, from just before ``put`` to the moment the
watcher holds the event.  Throughput is puts/s with many puts in flight.

The last line printed is one JSON object (DESIGN section 10 style).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aetcd
from stats import percentile

from federation.sim.etcd_process import EtcdProcess
from federation.store.base import Store
from federation.store.etcd import EtcdStore
from federation.store.sqlite import SqliteStore

VALUE = b'{"endpoints":[{"address":"10.0.0.1","ports":[{"name":"http","port":8080}]}]}'


async def measure_latency(
    put: Callable[[str, bytes], Awaitable[object]],
    events: AsyncIterator[str],
    prefix: str,
    count: int,
    warmup: int,
) -> list[float]:
    """Put one key at a time and time until the watcher sees it."""
    arrived: dict[str, asyncio.Future[float]] = {}

    async def follow() -> None:
        async for key in events:
            future = arrived.get(key)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    samples: list[float] = []
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        follower = group.create_task(follow())
        await asyncio.sleep(0.2)  # the watch is established before we start
        for i in range(warmup + count):
            key = f"{prefix}lat/{i % 100}"
            arrived[key] = loop.create_future()
            started = time.perf_counter()
            await put(key, VALUE)
            seen = await asyncio.wait_for(arrived[key], 10)
            if i >= warmup:
                samples.append((seen - started) * 1000)
        follower.cancel()
    return samples


async def measure_throughput(
    put: Callable[[str, bytes], Awaitable[object]], prefix: str, count: int, in_flight: int
) -> float:
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await put(f"{prefix}tput/{i % 1000}", VALUE)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(worker())
    return count / (time.perf_counter() - started)


async def store_keys(store: Store, prefix: str) -> AsyncIterator[str]:
    start = (await store.range(prefix)).revision + 1
    async with contextlib.aclosing(store.watch(prefix, start)) as events:
        async for event in events:
            yield event.key


async def raw_keys(client: aetcd.Client, prefix: str) -> AsyncIterator[str]:
    watch = await client.watch_prefix(prefix.encode())
    try:
        async for event in watch:
            yield event.kv.key.decode()
    finally:
        await watch.cancel()


async def bench_store(store: Store, prefix: str, args: argparse.Namespace) -> dict[str, float]:
    async def put(key: str, value: bytes) -> object:
        return await store.put(key, value)

    latency = await measure_latency(put, store_keys(store, prefix), prefix, args.count, args.warmup)
    rate = await measure_throughput(put, prefix, args.puts, args.in_flight)
    return summary(latency, rate)


async def bench_raw_etcd(
    server: EtcdProcess, prefix: str, args: argparse.Namespace
) -> dict[str, float]:
    client = aetcd.Client(host=server.host, port=server.client_port)
    try:

        async def put(key: str, value: bytes) -> object:
            return await client.put(key.encode(), value)

        latency = await measure_latency(
            put, raw_keys(client, prefix), prefix, args.count, args.warmup
        )
        rate = await measure_throughput(put, prefix, args.puts, args.in_flight)
    finally:
        await client.close()
    return summary(latency, rate)


def summary(latency: list[float], rate: float) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(latency), 3),
        "p99_ms": round(percentile(latency, 0.99), 3),
        "puts_per_s": round(rate, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="federation-bench-") as tmp:
        sqlite = SqliteStore(Path(tmp) / "bench.db")
        await sqlite.start()
        try:
            results["sqlite"] = await bench_store(sqlite, "/bench/sqlite/", args)
        finally:
            await sqlite.close()
        with EtcdProcess() as server:
            # Alternate raw and ours so neither gets a warmer etcd.
            for round_ in range(args.rounds):
                raw = await bench_raw_etcd(server, f"/bench/raw{round_}/", args)
                etcd = EtcdStore([server.endpoint])
                await etcd.start()
                try:
                    ours = await bench_store(etcd, f"/bench/etcd{round_}/", args)
                finally:
                    await etcd.close()
                for name, result in (("raw_etcd", raw), ("etcd", ours)):
                    results.setdefault(name, result)
                    if result["p50_ms"] < results[name]["p50_ms"]:
                        results[name] = result
    for name, result in results.items():
        print(f"{name:9} p50 {result['p50_ms']:7.3f} ms  p99 {result['p99_ms']:7.3f} ms  "
              f"{result['puts_per_s']:9.1f} puts/s")  # fmt: skip
    return {
        "sqlite_p50_ms": results["sqlite"]["p50_ms"],
        "sqlite_p99_ms": results["sqlite"]["p99_ms"],
        "etcd_p50_ms": results["etcd"]["p50_ms"],
        "etcd_p99_ms": results["etcd"]["p99_ms"],
        "raw_etcd_p50_ms": results["raw_etcd"]["p50_ms"],
        "raw_etcd_p99_ms": results["raw_etcd"]["p99_ms"],
        "sqlite_puts_per_s": results["sqlite"]["puts_per_s"],
        "etcd_puts_per_s": results["etcd"]["puts_per_s"],
        "raw_etcd_puts_per_s": results["raw_etcd"]["puts_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="latency samples per target")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--puts", type=int, default=5000, help="puts for the throughput run")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating etcd rounds; best kept")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
