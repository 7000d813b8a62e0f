"""The VM agent's forwarder honours a policy's weights: 1,000 connections
through it to two sources with a 90/10 policy split within 5 points."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agents.vm.forwarder import Forwarder
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    TrafficPolicy,
)
from federation.sim import echo
from federation.sim.echo import EchoServer

ECHO = ServiceRef(namespace="demo", name="echo")


def one(cluster: str, server: EchoServer) -> EndpointSet:
    return EndpointSet(
        service=ECHO,
        source=SourceRef.parse(f"cluster:{cluster}"),
        generation=1,
        ports=(EndpointPort(name="http", port=8080),),
        endpoints=(
            Endpoint(
                address=server.host,
                ports=(EndpointPort(name="http", port=server.port),),
                locality=Locality(region="r", zone=cluster, cluster=cluster),
            ),
        ),
    )


async def test_a_90_10_policy_splits_a_thousand_connections(tmp_path: Path) -> None:
    servers = {
        "east": EchoServer("127.0.0.1", 0, pod="e", cluster="east"),
        "west": EchoServer("127.0.0.1", 0, pod="w", cluster="west"),
    }
    for server in servers.values():
        await server.start()
    forwarder = Forwarder(Locality(region="r", zone="vm"), tmp_path, now=lambda: 0.0)
    policy = TrafficPolicy(service=ECHO, weights={"cluster:east": 90, "cluster:west": 10})
    try:
        await forwarder.update(
            {ECHO: [one(name, s) for name, s in servers.items()]}, {ECHO: policy}
        )
        host, port = forwarder.bound[(ECHO, 8080)]
        gate = asyncio.Semaphore(32)

        async def request() -> str:
            async with gate:
                status, body = await echo.request(host, port)
            assert status == 200
            return str(json.loads(body)["cluster"])

        answers = await asyncio.gather(*(request() for _ in range(1000)))
    finally:
        await forwarder.close()
        for server in servers.values():
            await server.stop()
    east = answers.count("east") / len(answers)
    assert 0.85 <= east <= 0.95, east
    assert servers["east"].served + servers["west"].served == 1000
