"""Kubernetes API emulator benchmark: writes/s and watch delivery latency.

Over real HTTPS with the bearer token, as an agent would talk to it: the
latency is from just before a ConfigMap PATCH to the moment a separate watch
stream holds the MODIFIED event.  The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import time

import aiohttp
from stats import percentile

from federation.sim.kube.app import SimKubeServer


async def run(args: argparse.Namespace) -> dict[str, float]:
    async with SimKubeServer("bench") as server:
        context = ssl.create_default_context(cadata=server._certs.ca_pem.decode())
        headers = {"Authorization": f"Bearer {server.api.token}"}
        base = f"{server.url}/api/v1/namespaces/default/configmaps"
        connector = aiohttp.TCPConnector(ssl=context, limit=args.in_flight + 2)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
            async with http.post(base, json={"metadata": {"name": "lat"}, "data": {"i": "0"}}) as r:
                since = (await r.json())["metadata"]["resourceVersion"]
            latency = await _latency(http, base, since, args.count)
            rate = await _writes(http, base, args.writes, args.in_flight)
    result = {
        "kubeapi_writes_per_s": round(rate, 1),
        "kubeapi_watch_p50_ms": round(statistics.median(latency), 3),
        "kubeapi_watch_p99_ms": round(percentile(latency, 0.99), 3),
    }
    return result


async def _latency(http: aiohttp.ClientSession, base: str, since: str, count: int) -> list[float]:
    arrived: asyncio.Queue[float] = asyncio.Queue()
    url = f"{base}?watch=true&resourceVersion={since}&fieldSelector=metadata.name%3Dlat"

    async def follow() -> None:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as stream:
            async for _ in stream.content:
                arrived.put_nowait(time.perf_counter())

    samples = []
    patch_headers = {"Content-Type": "application/merge-patch+json"}
    async with asyncio.TaskGroup() as group:
        follower = group.create_task(follow())
        for i in range(count):
            started = time.perf_counter()
            body = json.dumps({"data": {"i": str(i + 1)}})
            async with http.patch(f"{base}/lat", data=body, headers=patch_headers) as response:
                response.raise_for_status()
            seen = await asyncio.wait_for(arrived.get(), 10)
            samples.append((seen - started) * 1000)
        follower.cancel()
    return samples


async def _writes(http: aiohttp.ClientSession, base: str, count: int, in_flight: int) -> float:
    names = iter(range(count))

    async def worker() -> None:
        for i in names:
            async with http.post(
                base, json={"metadata": {"name": f"w-{i}"}, "data": {"k": "v"}}
            ) as r:
                r.raise_for_status()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(worker())
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="latency samples")
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    writes, p50, p99 = (
        result[k] for k in ("kubeapi_writes_per_s", "kubeapi_watch_p50_ms", "kubeapi_watch_p99_ms")
    )
    print(f"writes/s {writes}  watch p50 {p50} ms  p99 {p99} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
