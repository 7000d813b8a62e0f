"""Registry benchmark: publish->watch delivery to 1, 10 and 100 watchers, on a
SQLite and an etcd-backed registry, next to raw etcd put->watch with the same
number of watchers, plus publishes per second; then (``--ha``) two registry
replicas on a 3-member etcd with the watchers spread over both, next to raw
etcd with the watchers spread over the members.

The registry runs as its own process (``fedctl registry serve``), as in
production; the publisher and the watchers run in this process.  Latency is
from just before the publishing PUT is sent to the moment a watcher has
parsed the event, one publish at a time, over every (publish, watcher) pair.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aetcd
import aiohttp
from stats import percentile

from agents.client import Credentials, RegistryClient
from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from federation.sim.etcd_process import EtcdCluster, EtcdProcess, free_port

SOURCE = SourceRef.parse("cluster:east")


def endpoint_set(generation: int, service: str = "cart") -> EndpointSet:
    return EndpointSet(
        service=ServiceRef(namespace="shop", name=service),
        source=SOURCE,
        generation=generation,
        endpoints=tuple(
            Endpoint(
                address=f"127.0.1.{i + 2}",
                ports=(EndpointPort(name="http", port=8080),),
                locality=Locality(region="eu", zone="eu-1a", cluster="east"),
            )
            for i in range(3)
        ),
    )


@contextlib.asynccontextmanager
async def registry_process(
    store_url: str,
    data_dir: Path,
    on_start: Callable[[int], None] = lambda pid: None,
    log: Path | None = None,
) -> AsyncIterator[str]:
    """Run ``fedctl registry serve``; yield its admin config path (and give
    ``on_start`` its process id, for RSS and CPU readings)."""
    port = free_port()
    key = data_dir / "key"
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(key.write_text, "bench-encryption-key")
    stderr = log.open("wb") if log is not None else asyncio.subprocess.DEVNULL
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "registry", "serve",
        "--store", store_url, "--listen", f"127.0.0.1:{port}",
        "--data-dir", str(data_dir), "--encryption-key-file", str(key),
        "--bookmark-interval", "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )  # fmt: skip
    on_start(child.pid)
    try:
        assert child.stdout is not None
        lines = [(await child.stdout.readline()).decode() for _ in range(4)]
        yield lines[3].strip().split("=", 1)[1]
    finally:
        child.terminate()
        await child.wait()
        if log is not None and not isinstance(stderr, int):
            stderr.close()


async def admin_client(config_path: str) -> RegistryClient:
    """The admin client of the config ``registry_process`` yielded."""
    config = json.loads(await asyncio.to_thread(Path(config_path).read_text))
    return RegistryClient(
        config["registry"],
        Credentials.from_files(Path(config["cert"]), Path(config["key"]), Path(config["ca"])),
    )


PUBLISH_ROUTE = "/v1/services/{namespace}/{name}/sources/{source}"
PUBLISH_BUCKET = re.compile(
    r'^federation_http_request_duration_seconds_bucket\{le="([^"]+)",method="PATCH",'
    rf'route="{re.escape(PUBLISH_ROUTE)}"\}} ([0-9.e+]+)$',
    re.MULTILINE,
)


async def publish_buckets(admin: RegistryClient) -> list[tuple[float, float]]:
    """The registry's own histogram of delta publishes (PATCH): cumulative
    (upper bound, count) pairs."""
    async with admin._http().get(f"{admin.url}/metrics") as answer:
        text = await answer.text()
    return sorted((float(le), float(count)) for le, count in PUBLISH_BUCKET.findall(text))


async def enrol(config_path: str) -> tuple[RegistryClient, RegistryClient]:
    admin = await admin_client(config_path)
    record = {"name": "east", "locality": {"region": "eu", "zone": "eu-1a"}}
    answer = await admin.request("POST", "/v1/clusters", {"record": record})
    credentials, _ = await RegistryClient.join(admin.url, answer["token"])
    agent = RegistryClient(admin.url, credentials)
    await agent.heartbeat(SOURCE)
    return admin, agent


class Arrivals:
    """One write at a time, seen by ``watchers`` streams: the time from just
    before the write until each stream holds it."""

    def __init__(self, watchers: int) -> None:
        self.watchers = watchers
        self._key: object = None
        self._started = 0.0
        self._seen: list[float] = []
        self._done: asyncio.Future[None] | None = None

    def expect(self, key: object) -> None:
        self._key, self._seen = key, []
        self._done = asyncio.get_running_loop().create_future()
        self._started = time.perf_counter()

    def seen(self, key: object) -> None:
        if key != self._key or self._done is None:
            return
        self._seen.append(time.perf_counter() - self._started)
        if len(self._seen) == self.watchers and not self._done.done():
            self._done.set_result(None)

    async def wait(self) -> list[float]:
        assert self._done is not None
        await asyncio.wait_for(self._done, 30)
        return self._seen


async def registry_latency(
    agent: RegistryClient,
    watchers: int,
    count: int,
    first_generation: int,
    urls: list[str] | None = None,
) -> list[float]:
    """Watchers spread round-robin over ``urls`` (default: the agent's)."""
    arrivals = Arrivals(watchers)
    since, _ = await agent.collect_snapshot()
    connected: list[None] = []
    all_connected = asyncio.Event()
    spread = urls or [agent.url]

    async def watch(session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(f"{url}/v1/watch?since={since}") as answer:
            connected.append(None)
            if len(connected) == watchers:
                all_connected.set()
            async for raw in answer.content:
                line = json.loads(raw)
                if line["type"] == "PUT":
                    arrivals.seen(line["object"]["generation"])

    connector = aiohttp.TCPConnector(ssl=agent._ssl, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            asyncio.create_task(watch(session, spread[i % len(spread)])) for i in range(watchers)
        ]
        try:
            await asyncio.wait_for(all_connected.wait(), 60)
            samples: list[float] = []
            for generation in range(first_generation, first_generation + count):
                record = endpoint_set(generation)
                arrivals.expect(generation)
                await agent.publish(record)
                samples += await arrivals.wait()
            return samples
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def publish_rate(agent: RegistryClient, total: int, in_flight: int) -> float:
    queue = iter(range(total))
    generations: dict[str, int] = {}

    async def worker(worker_id: int) -> None:
        for _ in queue:
            name = f"svc{worker_id}"
            generations[name] = generations.get(name, 0) + 1
            await agent.publish(endpoint_set(generations[name], name))

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    return total / (time.perf_counter() - started)


async def raw_etcd_latency(members: list[EtcdProcess], watchers: int, count: int) -> list[float]:
    """Put through the first member; watchers spread round-robin over all."""
    clients = [aetcd.Client(host=m.host, port=m.client_port) for m in members]
    client = clients[0]
    prefix = f"/raw-bench/{time.time_ns()}/"
    arrivals = Arrivals(watchers)
    value = json.dumps(endpoint_set(1).to_wire()).encode()

    async def watch(watching: aetcd.Client) -> None:
        stream = await watching.watch_prefix(prefix.encode())
        try:
            async for event in stream:
                json.loads(event.kv.value)  # parse, as a registry watcher does
                arrivals.seen(event.kv.key.decode())
        finally:
            await stream.cancel()

    tasks = [asyncio.create_task(watch(clients[i % len(clients)])) for i in range(watchers)]
    try:
        await asyncio.sleep(0.5)  # let every watch be created
        samples: list[float] = []
        for i in range(count):
            key = f"{prefix}{i}"
            arrivals.expect(key)
            await client.put(key.encode(), value)
            samples += await arrivals.wait()
        return samples
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for each in clients:
            await each.close()


def ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 0.5) * 1000, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 3),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, EtcdProcess() as etcd:
        stores = {
            "sqlite": f"sqlite:///{tmp}/registry.db",
            "etcd": f"etcd://{etcd.host}:{etcd.client_port}",
        }
        for name, url in stores.items():
            async with registry_process(url, Path(tmp) / name) as config:
                admin, agent = await enrol(config)
                try:
                    generation = 1
                    for watchers in args.watchers:
                        samples = await registry_latency(agent, watchers, args.count, generation)
                        generation += args.count
                        results[f"{name}_{watchers}w"] = ms(samples)
                        print(f"{name:6} {watchers:3} watchers  {ms(samples)}", flush=True)
                    rate = await publish_rate(agent, args.publishes, args.in_flight)
                    results[f"{name}_publishes_per_s"] = round(rate)
                    print(f"{name:6} publishes/s {rate:,.0f}", flush=True)
                finally:
                    await agent.close()
                    await admin.close()
        for watchers in args.watchers:
            samples = await raw_etcd_latency([etcd], watchers, args.count)
            results[f"raw_etcd_{watchers}w"] = ms(samples)
            print(f"raw    {watchers:3} watchers  {ms(samples)}", flush=True)
    if args.ha:
        await highly_available(args, results)
    return results


async def highly_available(args: argparse.Namespace, results: dict[str, object]) -> None:
    """Two registry replicas on a 3-member etcd: publish through one, watchers
    spread over both; raw etcd with as many watchers spread over the members."""
    with tempfile.TemporaryDirectory() as tmp, EtcdCluster(3) as cluster:
        async with (
            registry_process(cluster.url, Path(tmp) / "a") as first,
            registry_process(cluster.url, Path(tmp) / "b") as second,
        ):
            admin, agent = await enrol(first)
            other = json.loads(await asyncio.to_thread(Path(second).read_text))["registry"]
            try:
                generation = 1
                for watchers in args.watchers:
                    samples = await registry_latency(
                        agent, watchers, args.count, generation, [agent.url, other]
                    )
                    generation += args.count
                    results[f"ha_{watchers}w"] = ms(samples)
                    print(f"ha     {watchers:3} watchers  {ms(samples)}", flush=True)
            finally:
                await agent.close()
                await admin.close()
        for watchers in args.watchers:
            samples = await raw_etcd_latency(cluster.members, watchers, args.count)
            results[f"ha_raw_etcd_{watchers}w"] = ms(samples)
            print(f"ha raw {watchers:3} watchers  {ms(samples)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="publishes per latency run")
    parser.add_argument("--watchers", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--publishes", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument(
        "--ha",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also 2 replicas on a 3-member etcd (default on)",
    )
    args = parser.parse_args()
    results = asyncio.run(run(args))
    most = max(args.watchers)
    summary = {
        "clusters": 1,
        "endpoints": 3,
        "watchers": most,
        "p50_ms": results[f"sqlite_{most}w"]["p50_ms"],  # type: ignore[index]
        "p99_ms": results[f"sqlite_{most}w"]["p99_ms"],  # type: ignore[index]
        "etcd_backed_p50_ms": results[f"etcd_{most}w"]["p50_ms"],  # type: ignore[index]
        "etcd_backed_p99_ms": results[f"etcd_{most}w"]["p99_ms"],  # type: ignore[index]
        "etcd_p50_ms": results[f"raw_etcd_{most}w"]["p50_ms"],  # type: ignore[index]
        "etcd_p99_ms": results[f"raw_etcd_{most}w"]["p99_ms"],  # type: ignore[index]
        "updates_per_s": results["sqlite_publishes_per_s"],
        "etcd_backed_updates_per_s": results["etcd_publishes_per_s"],
        **(
            {
                "ha_p50_ms": results[f"ha_{most}w"]["p50_ms"],  # type: ignore[index]
                "ha_p99_ms": results[f"ha_{most}w"]["p99_ms"],  # type: ignore[index]
                "ha_etcd_p50_ms": results[f"ha_raw_etcd_{most}w"]["p50_ms"],  # type: ignore[index]
                "ha_etcd_p99_ms": results[f"ha_raw_etcd_{most}w"]["p99_ms"],  # type: ignore[index]
            }
            if args.ha
            else {}
        ),
        "detail": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
