"""Registry replicas are interchangeable: two processes' worth of registry on
one etcd, a client given both URLs, one replica stopped mid-stream.  Every
acknowledged publish reaches the watcher exactly once, in order, with the
watch resumed on the other replica from its last revision."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from agents.client import Event, RegistryClient
from federation.shared.clock import Backoff
from federation.sim.etcd_process import EtcdProcess
from tests.contract.registry_http.conftest import Harness, clock, running
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

_prefixes = itertools.count()


async def test_a_watch_fails_over_to_the_other_replica_with_no_gap_and_no_repeat(
    etcd_server: EtcdProcess, tmp_path: Path
) -> None:
    prefix = f"/federation-replicas-{next(_prefixes)}-{time.time_ns()}/"
    url = "etcd://{}:{}".format(*etcd_server.endpoint)
    # Heartbeats outlive the test: only publishes write the watched set.
    first = Harness("etcd", tmp_path / "a", url, prefix, clock(), heartbeat_ttl=60)
    second = Harness("etcd", tmp_path / "b", url, prefix, clock(), heartbeat_ttl=60)
    async with running(first), running(second):
        both = f"{first.url},{second.url}"
        # An admin credential written by one replica is good at the other.
        status = await second.client(first.admin_credentials()).request("GET", "/v1/status")
        assert status["replica"] == second.registry.election.replica
        token = await first.add_cluster("east")
        credentials, _ = await RegistryClient.join(both, token)
        east = RegistryClient(both, credentials, retries=8, backoff=Backoff(0.05, 5.0))
        watcher = RegistryClient(both, credentials, backoff=Backoff(0.05, 5.0))
        seen: list[int] = []
        following: asyncio.Task[None] | None = None
        try:
            await east.heartbeat(endpoint_set("east").source)
            acked = [int((await east.publish(endpoint_set("east", 1)))["revision"])]
            stream = watcher.changes()

            async def follow() -> None:
                async for change in stream:
                    if isinstance(change, Event) and change.kind == "EndpointSet":
                        seen.append(change.revision)

            following = asyncio.create_task(follow())
            await eventually(lambda: seen == acked, what="the first publish watched")
            assert watcher.url == first.url  # the stream is on the first replica
            for generation in (2, 3):
                acked.append(
                    int((await east.publish(endpoint_set("east", generation)))["revision"])
                )
            await eventually(lambda: seen == acked, what="publishes before the failover")

            for client in first.clients:
                await client.close()
            first.clients.clear()
            await first.stop()
            for generation in range(4, 9):
                acked.append(
                    int((await east.publish(endpoint_set("east", generation)))["revision"])
                )
            await eventually(lambda: seen == acked, timeout=20, what="every publish, once")
            assert watcher.url == second.url and east.url == second.url
        finally:
            if following is not None:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            await east.close()
            await watcher.close()
