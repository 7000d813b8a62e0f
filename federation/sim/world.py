"""A local federation in one process: a registry on SQLite (or any store
URL), simulated clusters, and a real cluster agent per cluster talking to
its simulated API server through kubernetes_asyncio and to the registry
over mTLS.  The demo, the agent tests and the propagation benchmark use it.

Everything here is simulated except the registry, the agents, the TCP
traffic and the processes' code paths, which are the production ones."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.client import Credentials, RegistryClient
from agents.cluster.agent import ClusterAgent
from agents.cluster.crds import ensure_crds
from agents.cluster.exporter import Site
from agents.cluster.kube import CRDS, SERVICE_EXPORTS, Kube, ensure_namespace
from agents.credentials import keep_in
from agents.vm.agent import Probe, VMAgent
from federation.api.http import Settings
from federation.api.server import RegistryServer
from federation.model import Cluster, Locality, NetworkMode, ServiceRef, Workload
from federation.registry import Registry
from federation.shared.clock import Backoff
from federation.shared.tasks import cancel_and_wait
from federation.sim.cluster import SimCluster
from federation.sim.kube import thirdparty
from federation.sim.kube.rbac import Grant
from federation.store import Store, open_store

log = logging.getLogger(__name__)

PASSPHRASE = b"simulated-federation"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "cluster" / "base" / "rbac.yaml"
AGENT_NAMESPACES = ("federation-system", "istio-system")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    region: str
    zones: Sequence[str] = ("a",)
    nodes_per_zone: int = 1
    # Other projects' CRDs the cluster serves (federation.sim.kube.thirdparty
    # names), installed before its agent starts.
    serves: Sequence[str] = ()


@dataclass
class Member:
    spec: ClusterSpec
    sim: SimCluster
    kube: Kube | None = None  # the admin's, for setting up and looking
    agent_kube: Kube | None = None  # the agent's ServiceAccount, under deploy/'s RBAC
    client: RegistryClient | None = None
    agent: ClusterAgent | None = None
    task: asyncio.Task[None] | None = None
    kubeconfig: Path | None = None


@dataclass
class World:
    base: Path
    specs: Sequence[ClusterSpec]
    store_url: str | None = None
    mode: NetworkMode = NetworkMode.FLAT
    window: float = 0.05
    heartbeat_ttl: int = 15
    lease_seconds: float = 3.0
    process_pods: bool = False
    # Join a registry another process runs (its URL and admin credential
    # directory) instead of starting one; clusters are numbered from
    # ``first_index`` (cluster N owns 127.N.0.0/16).
    remote: tuple[str, Path] | None = None
    first_index: int = 1
    members: dict[str, Member] = field(default_factory=dict)
    vms: dict[str, tuple[VMAgent, asyncio.Task[None]]] = field(default_factory=dict)
    server: RegistryServer | None = None
    store: Store | None = None

    async def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.remote is None:
            url = self.store_url or f"sqlite:///{self.base / 'registry.db'}"
            self.store = await open_store(url)
            registry = Registry(self.store, passphrase=PASSPHRASE, heartbeat_ttl=self.heartbeat_ttl)
            self.server = RegistryServer(
                registry,
                self.base / "registry",
                passphrase=PASSPHRASE,
                settings=Settings(bookmark_interval=1.0),
            )
            await self.server.start()
        for index, spec in enumerate(self.specs, start=self.first_index):
            sim = SimCluster(
                spec.name,
                index=index,
                region=spec.region,
                zones=spec.zones,
                nodes_per_zone=spec.nodes_per_zone,
                process_pods=self.process_pods,
            )
            await sim.start()
            member = Member(spec, sim)
            self.members[spec.name] = member
            member.kubeconfig = sim.write_kubeconfig(self.base / f"{spec.name}.kubeconfig")
        await asyncio.gather(*(self._enrol(m) for m in self.members.values()))
        for member in self.members.values():
            self.start_agent(member.spec.name)

    async def _enrol(self, member: Member) -> None:
        spec = member.spec
        locality = Locality(region=spec.region, zone=spec.zones[0], cluster=spec.name)
        record = Cluster(
            name=spec.name, locality=locality, network_mode=self.mode, zones=tuple(spec.zones)
        )
        async with self.admin() as admin:
            answer = await admin.register(record, retry=True)
        credentials, _ = await RegistryClient.join(self.url, str(answer["token"]))
        credentials.save(self.base / spec.name / "certs")
        assert member.kubeconfig is not None
        member.kube = await Kube.from_kubeconfig(member.kubeconfig)
        await ensure_crds(member.kube)  # as deploy/crds does
        for name in spec.serves:
            await member.kube.create(CRDS, None, thirdparty.load(name))
        for namespace in AGENT_NAMESPACES:  # as deploy/cluster/base/namespaces.yaml does
            await ensure_namespace(member.kube, namespace)
        grant = agent_grant()
        if grant is None:
            member.agent_kube = member.kube
        else:
            path = member.sim.write_kubeconfig(self.base / f"{spec.name}-agent.kubeconfig", grant)
            member.agent_kube = await Kube.from_kubeconfig(path)

    def start_agent(self, name: str) -> ClusterAgent:
        member = self.members[name]
        assert member.agent_kube is not None
        credentials = Credentials.load(self.base / name / "certs")
        member.client = RegistryClient(self.url, credentials, backoff=Backoff(0.05, 1.0))
        spec = member.spec
        site = Site(
            spec.name,
            Locality(region=spec.region, zone=spec.zones[0], cluster=spec.name),
            self.mode,
        )
        member.agent = ClusterAgent(
            member.agent_kube,
            member.client,
            site,
            window=self.window,
            lease_seconds=self.lease_seconds,
            identity=f"agent-{name}",
            keep_credentials=keep_in(self.base / name / "certs"),
        )
        member.task = asyncio.create_task(member.agent.run(), name=f"agent-{name}")
        return member.agent

    async def stop_agent(self, name: str) -> None:
        member = self.members[name]
        if member.task is not None:
            await _cancel(member.task)
            member.task = None
        if member.client is not None:
            await member.client.close()
            member.client = None

    async def start_vm(
        self, record: Workload, pinned: dict[ServiceRef, tuple[str, int]] | None = None
    ) -> VMAgent:
        """Register a VM, join with its token and run its agent (TCP probe)."""
        async with self.admin() as admin:
            answer = await admin.register(record, retry=True)
        state = self.base / "vms" / record.name
        credentials, _ = await RegistryClient.join(self.url, str(answer["token"]))
        credentials.save(state / "certs")
        client = RegistryClient(self.url, credentials, backoff=Backoff(0.05, 1.0))
        agent = VMAgent(
            client,
            record,
            state,
            probe=Probe("tcp", timeout=0.5),
            probe_interval=0.2,
            pinned=pinned,
        )
        self.vms[record.name] = (agent, asyncio.create_task(agent.run(), name=f"vm-{record.name}"))
        return agent

    async def stop(self) -> None:
        for agent, task in self.vms.values():
            await _cancel(task)
            await agent.client.close()
        self.vms.clear()
        for name in list(self.members):
            await self.stop_agent(name)
        for member in self.members.values():
            for kube in {member.kube, member.agent_kube} - {None}:
                assert kube is not None
                await kube.close()
            await member.sim.stop()
        if self.server is not None:
            await self.server.stop()
        if self.store is not None:
            await self.store.close()

    async def __aenter__(self) -> World:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self.remote is not None:
            return self.remote[0]
        assert self.server is not None
        return self.server.url

    @property
    def admin_dir(self) -> Path:
        return self.remote[1] if self.remote is not None else self.base / "registry" / "admin"

    def admin(self) -> RegistryClient:
        return RegistryClient(self.url, Credentials.load(self.admin_dir))

    def sim(self, name: str) -> SimCluster:
        return self.members[name].sim

    async def export(self, cluster: str, namespace: str, name: str) -> None:
        kube = self.members[cluster].kube
        assert kube is not None
        body = {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": namespace},
        }
        await kube.create(SERVICE_EXPORTS, namespace, body)

    async def unexport(self, cluster: str, namespace: str, name: str) -> None:
        kube = self.members[cluster].kube
        assert kube is not None
        await kube.delete(SERVICE_EXPORTS, namespace, name)


@functools.cache
def agent_grant() -> Grant | None:
    """What deploy/ lets the cluster agent's ServiceAccount do; None (the
    admin's rights) where this is not a source checkout."""
    if not RBAC.exists():
        log.warning("%s not found: the simulated agents run as the admin", RBAC)
        return None
    return Grant.from_manifests([RBAC], "federation-system", "federation-agent")


async def _cancel(task: asyncio.Task[None]) -> None:
    for error in await cancel_and_wait(task):  # a member's agent: its crash is not the world's
        log.warning("%s ended with %s", task.get_name(), error)


__all__ = ["ClusterSpec", "Member", "World"]
