"""``clusterset.local`` DNS for a simulated cluster, from its ServiceImports.

What CoreDNS's ``multicluster`` plugin answers in a real cluster:

- ``<svc>.<ns>.svc.clusterset.local`` A/AAAA: the ServiceImport's
  ``spec.ips`` for a ClusterSetIP import; for a Headless one, every ready
  endpoint of its MCS EndpointSlices;
- ``_<port>._<proto>.<svc>.<ns>.svc.clusterset.local`` SRV: each named port,
  pointing at the service name;
- ``<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local``: a headless
  endpoint by the hostname its slice gives it.

The server itself is ``federation.shared.clusterset``."""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RR

from federation.shared.clusterset import ClusterSetServer, addresses, fqdn, service_records
from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import ResourceType
from federation.sim.kube.resources import ENDPOINT_SLICE
from federation.sim.local import LocalClient

MCS_SERVICE_NAME = "multicluster.kubernetes.io/service-name"
MCS_SOURCE_CLUSTER = "multicluster.kubernetes.io/source-cluster"


class ClusterSetDNS(ClusterSetServer):
    def __init__(self, client: LocalClient, host: str, port: int = 53) -> None:
        super().__init__(self._records, host, port)
        self.client = client

    def _records(self, name: tuple[str, ...], qtype: int) -> list[RR] | None:
        full = fqdn(*name)
        if len(name) == 2:
            service, namespace = name
            found = self._import(namespace, service)
            if found is None:
                return None
            return addresses(full, self._addresses(found, namespace, service), qtype)
        if len(name) == 4 and name[0].startswith("_") and name[1].startswith("_"):
            port_name, protocol, service, namespace = name[0][1:], name[1][1:], name[2], name[3]
            found = self._import(namespace, service)
            if found is None:
                return None
            ports = [
                p
                for p in found.get("spec", {}).get("ports") or []
                if (p.get("name") or "") == port_name
                and str(p.get("protocol") or "TCP").lower() == protocol
            ]
            if not ports:
                return None
            if qtype not in (QTYPE.SRV, QTYPE.ANY):
                return []  # the name exists; it has no records of that type
            target = fqdn(service, namespace)
            return [service_records(full, int(p["port"]), target) for p in ports]
        if len(name) == 4:
            hostname, cluster, service, namespace = name
            found = self._import(namespace, service)
            if found is None or found.get("spec", {}).get("type") != "Headless":
                return None
            ips = [
                ip
                for endpoint in self._endpoints(namespace, service, cluster)
                if (endpoint.get("hostname") or "").lower() == hostname
                for ip in endpoint.get("addresses") or []
            ]
            return addresses(full, ips, qtype) if ips else None
        return None

    def _import(self, namespace: str, name: str) -> dict[str, Any] | None:
        rt = self._service_imports()
        return None if rt is None else self.client.get(rt, namespace, name)

    def _service_imports(self) -> ResourceType | None:
        try:
            return self.client.api.types.find("multicluster.x-k8s.io", "v1alpha1", "serviceimports")
        except KubeError:
            return None  # the MCS CRDs are not installed: no imports

    def _addresses(self, found: dict[str, Any], namespace: str, service: str) -> list[str]:
        spec = found.get("spec", {})
        if spec.get("type") != "Headless":
            return [str(ip) for ip in spec.get("ips") or []]
        return sorted(
            {
                ip
                for endpoint in self._endpoints(namespace, service)
                if (endpoint.get("conditions") or {}).get("ready", True) is not False
                for ip in endpoint.get("addresses") or []
            }
        )

    def _endpoints(
        self, namespace: str, service: str, cluster: str | None = None
    ) -> list[dict[str, Any]]:
        selector = f"{MCS_SERVICE_NAME}={service}"
        if cluster is not None:
            selector += f",{MCS_SOURCE_CLUSTER}={cluster}"
        return [
            e
            for s in self.client.list(ENDPOINT_SLICE, namespace, selector)
            for e in s.get("endpoints") or []
        ]


__all__ = ["ClusterSetDNS"]
