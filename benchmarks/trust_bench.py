"""Trust benchmark: certificate issuance, and a full root rotation with 100
simulated agents, next to raw etcd put->watch measured in the same run.

- issuance: signing alone (``ca.issue_identity``), then what the registry
  does per certificate on SQLite and on etcd (refresh the trust state,
  sign, check its own output, record it for the expiry metric), then a
  renewal over HTTPS end to end;
- rotation: a registry (SQLite, then etcd) with N joined clusters, each a
  simulated agent that follows the watch as the cluster agent does: on
  every TrustBundle it renews its own certificate and its intermediate when
  the issuer changed, then acknowledges.  Time from ``POST /v1/ca/rotate``
  to the bundle that says Idle.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from registry_bench import ms, raw_etcd_latency

from agents.client import Credentials, Event, RegistryClient, RegistryError
from agents.cluster.trust import request_intermediate
from agents.credentials import CredentialKeeper
from federation.api.server import RegistryServer
from federation.model import Cluster, Locality
from federation.registry import Registry
from federation.shared.clock import SystemClock
from federation.sim.etcd_process import EtcdProcess
from federation.store import open_store
from federation.trust import ca as certs
from federation.trust.bundle import TrustBundle
from federation.trust.identity import Identity, Role

PASSPHRASE = b"bench-encryption-key"


def signing_only(count: int) -> list[float]:
    authority = certs.new_root("cluster.local", time.time())
    csr = x509.load_pem_x509_csr(certs.make_csr(certs.new_key()))
    identity = Identity(Role.CLUSTER, "east")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        certs.issue_identity(authority, csr, identity, "cluster.local", time.time())
        samples.append(time.perf_counter() - started)
    return samples


async def registry_issuance(registry: Registry, count: int) -> list[float]:
    csr = x509.load_pem_x509_csr(certs.make_csr(certs.new_key()))
    identity = Identity(Role.CLUSTER, "east")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await registry.trust.issue_client(identity, csr)
        samples.append(time.perf_counter() - started)
    return samples


class SimAgent:
    """A cluster agent's trust behaviour without a Kubernetes cluster."""

    def __init__(self, name: str, client: RegistryClient) -> None:
        self.name = name
        self.client = client
        self.keeper = CredentialKeeper(client, SystemClock())
        self.intermediate_issuer = b""

    async def run(self) -> None:
        async for change in self.client.changes():
            if isinstance(change, Event) and isinstance(change.record, TrustBundle):
                await self.install(change.record)

    async def install(self, bundle: TrustBundle) -> None:
        self.keeper.observe(bundle)
        await self.keeper.step()
        root = bundle.issuing_root()
        if root != self.intermediate_issuer:
            await request_intermediate(self.client, self.name)
            self.intermediate_issuer = root
        await self.client.request("POST", "/v1/trust/acks", {"version": bundle.version})


async def rotation(server: RegistryServer, agents: int) -> float:
    admin = RegistryClient(server.url, Credentials.load(server.data_dir / "admin"))
    clients: list[RegistryClient] = []
    tasks: list[asyncio.Task[None]] = []
    try:

        async def enrol(i: int) -> None:
            name = f"c{i}"
            record = Cluster(name=name, locality=Locality(region="r", zone="z", cluster=name))
            answer = await admin.request("POST", "/v1/clusters", {"record": record.to_wire()})
            credentials, _ = await RegistryClient.join(server.url, answer["token"])
            client = RegistryClient(server.url, credentials)
            clients.append(client)
            tasks.append(asyncio.create_task(SimAgent(name, client).run()))

        await asyncio.gather(*(enrol(i) for i in range(agents)))

        async def status() -> dict[str, Any]:
            try:
                return await admin.request("GET", "/v1/ca/status")
            except RegistryError as err:  # the registry rewrote fedctl's credential
                assert err.status == 401, err
                admin.use(Credentials.load(server.data_dir / "admin"))
                return await admin.request("GET", "/v1/ca/status")

        async def until(holds: Callable[[dict[str, Any]], bool], what: str) -> None:
            for _ in range(6000):  # a minute at most
                if holds(await status()):
                    return
                await asyncio.sleep(0.01)
            raise TimeoutError(f"no {what} within a minute")

        await until(lambda s: len(s["acks"]) >= agents, "acknowledgement of bundle 1 by all")
        started = time.perf_counter()
        await admin.request("POST", "/v1/ca/rotate", {})
        await until(lambda s: s["phase"] == "Idle", "end of the rotation")
        return time.perf_counter() - started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (*clients, admin):
            await client.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    signing = signing_only(args.count)
    results["sign_only"] = ms(signing)
    print(f"sign only              {ms(signing)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, EtcdProcess() as etcd:
        stores = {
            "sqlite": f"sqlite:///{tmp}/registry.db",
            "etcd": f"etcd://{etcd.host}:{etcd.client_port}",
        }
        for name, url in stores.items():
            store = await open_store(url)
            registry = Registry(store, passphrase=PASSPHRASE, prefix=f"/bench-{time.time_ns()}/")
            server = RegistryServer(registry, Path(tmp) / name, passphrase=PASSPHRASE)
            await server.start()
            try:
                samples = await registry_issuance(registry, args.count)
                results[f"{name}_issue"] = ms(samples)
                print(f"{name:6} registry issue   {ms(samples)}", flush=True)
                seconds = await rotation(server, args.agents)
                results[f"{name}_rotation_s"] = round(seconds, 3)
                print(f"{name:6} rotation, {args.agents} agents: {seconds:.2f} s", flush=True)
            finally:
                await server.stop()
                await store.close()
        raw = await raw_etcd_latency([etcd], 1, args.raw_count)
        results["raw_etcd_1w"] = ms(raw)
        print(f"raw etcd put->watch    {ms(raw)}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="certificates per issuance run")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--raw-count", type=int, default=200)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    summary = {
        "clusters": args.agents,
        "endpoints": 0,
        "p50_ms": results["sqlite_issue"]["p50_ms"],
        "p99_ms": results["sqlite_issue"]["p99_ms"],
        "sign_only_p50_ms": results["sign_only"]["p50_ms"],
        "sign_only_p99_ms": results["sign_only"]["p99_ms"],
        "rotation_s": results["sqlite_rotation_s"],
        "etcd_backed_rotation_s": results["etcd_rotation_s"],
        "etcd_p50_ms": results["raw_etcd_1w"]["p50_ms"],
        "etcd_p99_ms": results["raw_etcd_1w"]["p99_ms"],
        "updates_per_s": round(1000 / results["sqlite_issue"]["p50_ms"]),
        "detail": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
