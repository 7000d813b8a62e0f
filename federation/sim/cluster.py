"""A simulated cluster: the API emulator plus what kubelet, the EndpointSlice
controller and kube-proxy would do, on loopback addresses.

Cluster number ``index`` (1-250) owns 127.<index>.0.0/16, claimed for the
process's lifetime (``blocks``; a block another federation holds moves it
to the next free one):

- nodes at 127.<index>.0.<k>, labelled with topology.kubernetes.io/region
  and zone (and ``federation.io/simulated=true``);
- pods of node k at 127.<index>.<k>.<n> (real echo backends listening there);
- Service cluster IPs from 127.<index>.240.0/20, where kube-proxy listens.

Everything it logs is prefixed ``[sim-<name>]``.  It is a simulation, not a
Kubernetes cluster, and says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from federation.shared.clock import Clock, SystemClock
from federation.shared.tasks import stop_tasks
from federation.sim.blocks import claim
from federation.sim.dns import ClusterSetDNS
from federation.sim.endpointslices import EndpointSliceController
from federation.sim.kube.app import SimKubeServer
from federation.sim.kube.objects import Obj
from federation.sim.kube.rbac import Grant
from federation.sim.kube.resources import NODE, POD, SERVICE
from federation.sim.kubelet import ECHO_IMAGE, Backend, Kubelet, ProcessBackend, TaskBackend
from federation.sim.local import LocalClient
from federation.sim.proxy import KubeProxy

log = logging.getLogger("federation.sim")
REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
SIMULATED = "federation.io/simulated"


class SimCluster:
    def __init__(
        self,
        name: str,
        *,
        index: int,
        region: str,
        zones: Sequence[str] = ("a",),
        nodes_per_zone: int = 1,
        clock: Clock | None = None,
        probe_period: float = 0.2,
        failure_threshold: int = 2,
        process_pods: bool = False,
        api_host: str = "127.0.0.1",
        api_port: int = 0,
    ) -> None:
        if not 1 <= index <= 250:
            raise ValueError(f"cluster index {index} is outside 1-250")
        # Another federation on this host may hold the block: take the next.
        self._block = claim(index)
        index = self._block.index
        self.name, self.index, self.region = name, index, region
        self.server = SimKubeServer(
            name,
            host=api_host,
            port=api_port,
            service_cidr=f"127.{index}.240.0/20",
            loopback_endpoints=True,  # the pods run on 127.N/16
        )
        self.api = self.server.api
        self.nodes: list[tuple[str, str, str]] = []  # (name, zone, ip)
        for z, zone in enumerate(zones):
            for i in range(nodes_per_zone):
                k = z * nodes_per_zone + i + 1
                self.nodes.append((f"{name}-{zone}-{i}", zone, f"127.{index}.0.{k}"))
        self._next_pod_ip = {node: 2 for node, _, _ in self.nodes}
        adapter = logging.LoggerAdapter(log, {"cluster": name})
        adapter.process = lambda msg, kwargs: (f"[sim-{name}] {msg}", kwargs)  # type: ignore[method-assign]
        self.client = LocalClient(self.api, adapter)
        backend = ProcessBackend if process_pods else TaskBackend

        def make_backend(host: str, port: int, pod: str, cluster: str) -> Backend:
            return backend(host, port, pod, cluster)

        self.kubelet = Kubelet(
            self.client,
            cluster=name,
            clock=clock or SystemClock(),
            pod_ip=self._pod_ip,
            make_backend=make_backend,
            probe_period=probe_period,
            failure_threshold=failure_threshold,
        )
        self.endpointslices = EndpointSliceController(self.client)
        self.proxy = KubeProxy(self.client, [ip for _, _, ip in self.nodes])
        # clusterset.local, from this cluster's ServiceImports (CoreDNS's
        # multicluster plugin in a real one), on this cluster's block.
        self.dns = ClusterSetDNS(self.client, f"127.{index}.0.53")
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return self.server.url

    def zone_of(self, node: str) -> str:
        return next(zone for name, zone, _ in self.nodes if name == node)

    async def start(self) -> None:
        await self.server.start()
        await self.dns.start()
        for node, zone, ip in self.nodes:
            self.client.create(NODE, "", _node(node, self.region, zone, ip))
        for loop in (self.kubelet.run, self.endpointslices.run, self.proxy.run):
            self._tasks.append(asyncio.create_task(loop()))
        self.client.log.info("simulated cluster up: api %s, region %s", self.url, self.region)

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks), []
        await stop_tasks(*tasks)
        await self.dns.stop()
        await self.server.stop()
        self._block.release()

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: Path, grant: Grant | None = None) -> Path:
        return self.server.write_kubeconfig(path, grant)

    def _pod_ip(self, node: str) -> str:
        k = next(i for i, (name, _, _) in enumerate(self.nodes, start=1) if name == node)
        n = self._next_pod_ip[node]
        self._next_pod_ip[node] = n + 1 if n < 254 else 2
        return f"127.{self.index}.{k}.{n}"

    # -- conveniences for tests, the demo and benchmarks -----------------------

    def ensure_namespace(self, namespace: str) -> None:
        from federation.sim.kube.resources import NAMESPACE

        if self.client.get(NAMESPACE, "", namespace) is None:
            self.client.create(NAMESPACE, "", {"metadata": {"name": namespace}})

    def run_echo(
        self,
        namespace: str,
        app: str,
        replicas: int = 1,
        *,
        port: int = 8080,
        service_port: int = 80,
        zone: str | None = None,
    ) -> Obj:
        """An echo Service and ``replicas`` pods behind it (spread over the
        nodes of ``zone``, or of all zones).  Returns the Service."""
        self.ensure_namespace(namespace)
        nodes = [name for name, z, _ in self.nodes if zone in (None, z)]
        for i in range(replicas):
            self.client.create(POD, namespace, _pod(f"{app}-{i}", app, nodes[i % len(nodes)], port))
        service = self.client.get(SERVICE, namespace, app)
        if service is None:
            service = self.client.create(
                SERVICE,
                namespace,
                {
                    "metadata": {"name": app, "labels": {"app": app}},
                    "spec": {
                        "selector": {"app": app},
                        "ports": [{"name": "http", "port": service_port, "targetPort": "http"}],
                    },
                },
            )
        return service

    def delete_pod(self, namespace: str, name: str) -> None:
        self.client.delete(POD, namespace, name)

    async def kill_backend(self, namespace: str, pod: str) -> None:
        await self.kubelet.kill(namespace, pod)

    async def revive_backend(self, namespace: str, pod: str) -> None:
        await self.kubelet.revive(namespace, pod)

    def service_address(
        self, namespace: str, name: str, port_name: str = "http"
    ) -> tuple[str, int]:
        """The cluster IP and port a client in this cluster connects to."""
        service = self.client.get(SERVICE, namespace, name)
        if service is None:
            raise LookupError(f"no Service {namespace}/{name} in sim-{self.name}")
        spec = service["spec"]
        port = next((p for p in spec["ports"] if p.get("name", "") == port_name), spec["ports"][0])
        return spec["clusterIP"], int(port["port"])


def _node(name: str, region: str, zone: str, ip: str) -> Obj:
    return {
        "metadata": {
            "name": name,
            "labels": {
                REGION: region,
                ZONE: zone,
                "kubernetes.io/hostname": name,
                SIMULATED: "true",
            },
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "SimulatedKubeletReady"}],
        },
    }


def _pod(name: str, app: str, node: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "echo",
                    "image": ECHO_IMAGE,
                    "ports": [{"name": "http", "containerPort": port}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}},
                }
            ],
        },
    }
