"""A real registry over TLS on a loopback port, on a real SQLite file or a
real etcd, with helpers to enrol clusters and VMs through join tokens."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.client import Credentials, RegistryClient
from federation.api.http import Settings
from federation.api.listener import Limits
from federation.api.server import RegistryServer
from federation.model import Cluster, Locality, Workload
from federation.registry import Registry
from federation.shared.clock import ManualClock
from federation.sim.etcd_process import EtcdProcess
from federation.store import Store, open_store

PASSPHRASE = b"test-encryption-key"
_prefixes = itertools.count()


@dataclass
class Harness:
    backend: str
    data_dir: Path
    store_url: str
    prefix: str
    clock: ManualClock
    heartbeat_ttl: int = 2
    leader_ttl: int = 10
    limits: Limits | None = None
    server: RegistryServer | None = None
    store: Store | None = None
    clients: list[RegistryClient] = field(default_factory=list)

    async def start(self, port: int = 0) -> RegistryServer:
        self.store = await open_store(self.store_url, clock=self.clock)
        registry = Registry(
            self.store,
            passphrase=PASSPHRASE,
            clock=self.clock,
            heartbeat_ttl=self.heartbeat_ttl,
            prefix=self.prefix,
            leader_ttl=self.leader_ttl,
        )
        self.server = RegistryServer(
            registry,
            self.data_dir,
            port=port,
            passphrase=PASSPHRASE,
            settings=Settings(bookmark_interval=0.1),
            limits=self.limits,
        )
        await self.server.start()
        return self.server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def restart(self) -> None:
        assert self.server is not None
        port = self.server.port
        await self.stop()
        await self.start(port)

    @property
    def registry(self) -> Registry:
        assert self.server is not None
        return self.server.registry

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def admin_credentials(self) -> Credentials:
        admin = self.data_dir / "admin"
        return Credentials.load(admin)

    def client(
        self, credentials: Credentials | None, ca_pem: bytes | None = None, **kwargs: object
    ) -> RegistryClient:
        """A client trusting ``ca_pem`` (default: the roots in force now)."""
        ca = ca_pem or self.registry.trust.state.bundle_pem
        made = RegistryClient(self.url, credentials, ca_pem=ca, retries=1, **kwargs)  # type: ignore[arg-type]
        self.clients.append(made)
        return made

    def admin(self) -> RegistryClient:
        return self.client(self.admin_credentials())

    async def add_cluster(self, name: str, region: str = "eu", zone: str = "eu-1a") -> str:
        record = Cluster(name=name, locality=Locality(region=region, zone=zone, cluster=name))
        answer = await self.admin().request("POST", "/v1/clusters", {"record": record.to_wire()})
        return str(answer["token"])

    async def add_vm(self, name: str, namespace: str = "shop", address: str = "127.0.5.1") -> str:
        record = Workload(
            name=name,
            namespace=namespace,
            service_account="default",
            address=address,
            locality=Locality(region="eu", zone="eu-1a"),
        )
        answer = await self.admin().request("POST", "/v1/vms", {"record": record.to_wire()})
        return str(answer["token"])

    async def enrol_cluster(self, name: str, **kwargs: str) -> RegistryClient:
        token = await self.add_cluster(name, **kwargs)
        credentials, _ = await RegistryClient.join(self.url, token)
        return self.client(credentials)

    async def enrol_vm(self, name: str) -> RegistryClient:
        token = await self.add_vm(name)
        credentials, _ = await RegistryClient.join(self.url, token)
        return self.client(credentials)


def clock() -> ManualClock:
    """Manual, but starting now: certificates are checked by real TLS too."""
    return ManualClock(time.time())


@contextlib.asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Harness]:
    await harness.start()
    try:
        yield harness
    finally:
        for client in harness.clients:
            await client.close()
        await harness.stop()


@pytest.fixture(params=["sqlite", "etcd"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    prefix = f"/federation-test-{next(_prefixes)}-{time.time_ns()}/"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        etcd: EtcdProcess = request.getfixturevalue("etcd_server")
        host, port = etcd.endpoint
        url = f"etcd://{host}:{port}"
    async with running(Harness(request.param, tmp_path / "data", url, prefix, clock())) as made:
        yield made


@pytest.fixture
async def sqlite_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    async with running(
        Harness("sqlite", tmp_path / "data", url, "/federation/v1/", clock())
    ) as made:
        yield made
