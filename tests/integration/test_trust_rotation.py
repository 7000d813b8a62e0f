"""One trust domain across simulated clusters: each agent writes Istio's
``cacerts`` and the bundle ConfigMap, and a root rotation runs to the end
while workloads of two clusters keep shaking hands and a watch keeps
streaming.  No handshake may fail and no watch event may be lost."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agents.client import Credentials, Event, RegistryError
from agents.cluster.kube import CONFIG_MAPS, SECRETS
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceKind,
    SourceRef,
)
from federation.model import Workload as VMRecord
from federation.sim.world import ClusterSpec, World
from federation.trust import ca as certs
from tests.support import eventually
from tests.tls import Workload, handshake, workload_from

SPECS = (ClusterSpec("east", "us-east", ("a",)), ClusterSpec("west", "us-west", ("b",)))
TD = "cluster.local"
MAX_HANDSHAKES = 5000
MAX_SECONDS = 60.0


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with World(tmp_path, SPECS, heartbeat_ttl=5, lease_seconds=1.0) as made:
        yield made


async def cacerts(world: World, cluster: str) -> dict[str, bytes] | None:
    kube = world.members[cluster].kube
    assert kube is not None
    secret = await kube.get(SECRETS, "istio-system", "cacerts")
    if secret is None:
        return None
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


async def workload(world: World, cluster: str, account: str) -> Workload:
    """What Istio in ``cluster`` would issue now from its ``cacerts``."""
    files = await cacerts(world, cluster)
    assert files is not None
    return workload_from(
        files["ca-cert.pem"],
        files["ca-key.pem"],
        files["cert-chain.pem"],
        files["root-cert.pem"],
        f"spiffe://{TD}/ns/shop/sa/{account}",
    )


async def status(world: World) -> dict[str, Any]:
    async with world.admin() as admin:
        return await admin.request("GET", "/v1/ca/status")


async def installed(world: World, version: int) -> bool:
    acks = (await status(world))["acks"]
    return all(acks.get(f"cluster/{name}", 0) >= version for name in world.members)


async def test_agents_write_istio_cacerts_and_the_bundle(world: World) -> None:
    await eventually(lambda: installed(world, 1), what="both clusters to install bundle 1")
    root = (await status(world))["roots"][0]
    for name in world.members:
        files = await cacerts(world, name)
        assert files is not None and set(files) == {
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        }
        inter = x509.load_pem_x509_certificate(files["ca-cert.pem"])
        key = serialization.load_pem_private_key(files["ca-key.pem"], None)
        assert key.public_key() == inter.public_key()
        assert certs.spiffe_ids(inter) == [f"spiffe://{TD}/federation/cluster/{name}"]
        chain = x509.load_pem_x509_certificates(files["cert-chain.pem"])
        assert chain[0] == inter and certs.fingerprint(chain[-1]) == root["sha256"]
        [anchor] = x509.load_pem_x509_certificates(files["root-cert.pem"])
        assert certs.fingerprint(anchor) == root["sha256"]
        kube = world.members[name].kube
        assert kube is not None
        bundle = await kube.get(CONFIG_MAPS, "federation-system", "federation-trust-bundle")
        assert bundle is not None and bundle["data"]["version"] == "1"
        assert bundle["data"]["root-cert.pem"].encode() == files["root-cert.pem"]
    cart, pay = await workload(world, "east", "cart"), await workload(world, "west", "pay")
    assert handshake(cart, pay) == [f"spiffe://{TD}/ns/shop/sa/pay"]


async def test_a_rotation_breaks_no_handshake_and_loses_no_watch_event(world: World) -> None:
    await eventually(lambda: installed(world, 1), what="both clusters to install bundle 1")
    first = await status(world)
    old_cart = await workload(world, "east", "cart")  # issued under the old root
    old_root = first["roots"][0]["sha256"]

    # A source that publishes all through the rotation, and a watcher of it.
    probe = SourceRef(kind=SourceKind.VM, name="probe")
    service = ServiceRef(namespace="shop", name="probe")
    record = VMRecord(
        name="probe",
        namespace="shop",
        service_account="probe",
        address="127.0.9.1",
        locality=Locality(region="us-east", zone="a"),
    )
    admin = world.admin()
    await admin.request("POST", "/v1/vms", {"record": record.to_wire()})
    seen: list[int] = []
    published: list[int] = []

    watcher = world.admin()

    def reload_admin() -> None:
        """fedctl's credential is rewritten by the registry at the switch."""
        fresh = Credentials.load(world.base / "registry" / "admin")
        admin.use(fresh)
        watcher.use(fresh)  # a broken watch resumes with it, from its last revision

    async def watch() -> None:
        async for change in watcher.changes():
            if isinstance(change, Event) and change.key.endswith(f"/{probe}/0"):
                assert change.object is not None
                seen.append(int(change.object["generation"]))

    done_publishing = asyncio.Event()

    async def publish() -> None:
        """Until told to stop, between publishes: a cancelled publish could
        be written without being counted, and the watcher would be ahead."""
        for generation in range(1, 10_000):
            if done_publishing.is_set():
                return
            endpoint = Endpoint(
                address="127.0.9.1",
                ports=(EndpointPort(name="tcp", port=9000),),
                locality=record.locality,
                ready=generation % 2 == 0,
            )
            while True:
                try:
                    await admin.publish(
                        EndpointSet(
                            service=service,
                            source=probe,
                            generation=generation,
                            endpoints=(endpoint,),
                        )
                    )
                    break
                except RegistryError as err:
                    assert err.status == 401, err
                    reload_admin()
            published.append(generation)
            await asyncio.sleep(0.01)

    failures: list[str] = []
    handshakes = 0
    rotation_over = asyncio.Event()

    async def shake() -> None:
        nonlocal handshakes
        started = time.monotonic()
        while not rotation_over.is_set():
            assert handshakes < MAX_HANDSHAKES and time.monotonic() - started < MAX_SECONDS
            cart, pay = await workload(world, "east", "cart"), await workload(world, "west", "pay")
            pairs = [(cart, pay), (pay, cart)]
            assert world.server is not None
            state = world.server.registry.trust.state
            phase = state.phase.value
            if old_root in state.published:
                pairs.append((old_cart, pay))  # the old root is still in force
            for client, server in pairs:
                try:
                    handshake(client, server)
                except ssl.SSLError as err:
                    failures.append(f"{phase}: {err}")
                handshakes += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(f()) for f in (watch, publish, shake)]
    try:
        await eventually(
            lambda: len(seen) >= 3 or any(t.done() for t in tasks), what="the watch to stream"
        )
        for task in tasks:
            if task.done():
                task.result()
        await eventually(lambda: handshakes >= 6, what="handshakes before the rotation")
        started = await admin.request("POST", "/v1/ca/rotate", {})
        assert started["phase"] == "Published"

        async def idle() -> bool:
            return (await status(world))["phase"] == "Idle"

        await eventually(idle, timeout=30, what="the rotation to finish")
        rotation_over.set()
        await tasks[2]
        done_publishing.set()
        await tasks[1]
        await eventually(lambda: seen[-1:] == published[-1:], what="the watcher to catch up")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await admin.close()
        await watcher.close()

    assert failures == [], failures[:3]
    assert handshakes > 30
    assert seen == sorted(set(seen)) and seen == list(range(seen[0], published[-1] + 1))

    done = await status(world)
    assert done["version"] == first["version"] + 3
    [new_root] = done["roots"]
    assert new_root["sha256"] != first["roots"][0]["sha256"]
    for name in world.members:
        files = await cacerts(world, name)
        assert files is not None
        [anchor] = x509.load_pem_x509_certificates(files["root-cert.pem"])
        assert certs.fingerprint(anchor) == new_root["sha256"]
        agent = world.members[name].agent
        assert agent is not None and agent.trust.intermediates >= 2
    # The retired root is gone from every cluster: its old chains are refused now.
    with pytest.raises(ssl.SSLError):
        handshake(old_cart, await workload(world, "west", "pay"))
