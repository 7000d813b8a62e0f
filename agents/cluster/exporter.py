"""Cluster -> registry: a Service with a same-named ServiceExport is
published as this cluster's endpoint set of that service.

``endpoint_set_of`` is pure: from the Service, its EndpointSlices and the
Nodes it builds the endpoints (pod IPs in flat mode; node address x
NodePort in gateway mode) with locality from the node topology labels.
``Exporter`` decides what to send when: the first change of a service at
once, later changes within the window coalesced, no-op publishes skipped,
and a withdraw when the ServiceExport goes."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agents.cluster.kube import Obj
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    NetworkMode,
    Protocol,
    ServiceRef,
    SourceRef,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "kubernetes.io/service-name"
REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
MANAGED_BY = "app.kubernetes.io/managed-by"
AGENT = "federation-agent"
GATEWAY_SUFFIX = "-federation-gw"


Local = tuple[tuple[Endpoint, ...], tuple[EndpointPort, ...]]  # endpoints, service ports


@dataclass(frozen=True, slots=True)
class Site:
    """Where this cluster is: its name, default locality and network mode."""

    cluster: str
    locality: Locality
    mode: NetworkMode = NetworkMode.FLAT

    @property
    def source(self) -> SourceRef:
        return SourceRef.parse(f"cluster:{self.cluster}")


def _ports(raw: Iterable[Obj]) -> tuple[EndpointPort, ...]:
    return tuple(
        EndpointPort(
            name=str(p.get("name") or ""),
            port=int(p["port"]),
            protocol=Protocol(p.get("protocol") or "TCP"),
        )
        for p in raw
        if p.get("port")
    )


def _node_locality(site: Site, node: Obj | None, zone: str | None) -> Locality:
    labels = (node or {}).get("metadata", {}).get("labels", {})
    return Locality(
        region=labels.get(REGION) or site.locality.region,
        zone=zone or labels.get(ZONE) or site.locality.zone,
        cluster=site.cluster,
        network=site.locality.network,
    )


def _node_address(node: Obj) -> str | None:
    addresses = node.get("status", {}).get("addresses", [])
    for wanted in ("InternalIP", "ExternalIP"):
        for address in addresses:
            if address.get("type") == wanted:
                return str(address["address"])
    return None


def has_node_ports(service: Obj) -> bool:
    """True if the Service's own NodePorts can carry gateway traffic; else
    it needs a companion."""
    return service.get("spec", {}).get("type") in ("NodePort", "LoadBalancer")


def companion_service(service: Obj) -> Obj:
    """A NodePort Service beside ``service``, same selector and ports."""
    meta, spec = service["metadata"], service.get("spec", {})
    return {
        "metadata": {
            "name": meta["name"] + GATEWAY_SUFFIX,
            "namespace": meta["namespace"],
            "labels": {MANAGED_BY: AGENT, "federation.io/gateway-for": meta["name"]},
        },
        "spec": {
            "type": "NodePort",
            "selector": dict(spec.get("selector") or {}),
            "ports": [
                {k: p[k] for k in ("name", "port", "targetPort", "protocol") if k in p}
                for p in spec.get("ports", [])
            ],
        },
    }


def endpoint_set_of(
    site: Site,
    service: Obj,
    slices: Iterable[Obj],
    nodes: dict[str, Obj],
    node_ports_from: Obj | None = None,
) -> Local:
    """(endpoints, service ports) of an exported Service, sorted."""
    service_ports = _ports(service.get("spec", {}).get("ports", []))
    found: dict[str, tuple[Endpoint, str]] = {}  # address -> (endpoint, node name)
    for slice_ in slices:
        ports = _ports(slice_.get("ports") or [])
        for raw in slice_.get("endpoints") or []:
            conditions = raw.get("conditions") or {}
            node_name = str(raw.get("nodeName") or "")
            for address in raw.get("addresses") or []:
                if address in found:
                    continue
                endpoint = Endpoint(
                    address=address,
                    ports=ports,
                    locality=_node_locality(site, nodes.get(node_name), raw.get("zone")),
                    ready=conditions.get("ready") is not False,
                    serving=conditions.get("serving", conditions.get("ready")) is not False,
                    terminating=bool(conditions.get("terminating", False)),
                )
                found[address] = (endpoint, node_name)
    if site.mode is NetworkMode.FLAT:
        return tuple(sorted((e for e, _ in found.values()), key=_order)), service_ports
    return _gateway(site, list(found.values()), nodes, node_ports_from or service), service_ports


def _gateway(
    site: Site, found: list[tuple[Endpoint, str]], nodes: dict[str, Obj], ported: Obj
) -> tuple[Endpoint, ...]:
    """Node address x NodePort for every node that hosts endpoints; ready if
    one of them is."""
    node_ports = tuple(
        EndpointPort(name=str(p.get("name") or ""), port=int(p["nodePort"]),
                     protocol=Protocol(p.get("protocol") or "TCP"))
        for p in ported.get("spec", {}).get("ports", [])
        if p.get("nodePort")
    )  # fmt: skip
    if not node_ports:
        return ()
    by_node: dict[str, list[Endpoint]] = {}
    for endpoint, node_name in found:
        by_node.setdefault(node_name, []).append(endpoint)
    out = []
    for node_name, endpoints in by_node.items():
        node = nodes.get(node_name)
        address = _node_address(node) if node else None
        if address is None:
            continue
        out.append(
            Endpoint(
                address=address,
                ports=node_ports,
                locality=_node_locality(site, node, None),
                ready=any(e.ready for e in endpoints),
                serving=any(e.serving for e in endpoints),
                terminating=all(e.terminating for e in endpoints),
            )
        )
    return tuple(sorted(out, key=_order))


def _order(endpoint: Endpoint) -> tuple[int, int]:
    ip = ipaddress.ip_address(endpoint.address)
    return ip.version, int(ip)


@dataclass
class _Sent:
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]
    generation: int
    at: float  # monotonic time of the publish


@dataclass
class Exporter:
    """What to publish when.  ``plan`` is called with the desired sets of
    every exported service; it returns the sets to publish now, the
    services to withdraw, and when to look again for coalesced changes."""

    site: Site
    window: float = 0.1
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sent: dict[ServiceRef, _Sent] = field(default_factory=dict)
    known: set[ServiceRef] = field(default_factory=set)  # published by us, per the registry

    def adopt(self, published: Iterable[EndpointSet]) -> None:
        """What the registry holds from this cluster (at start, or after a
        relist): later generations continue from it, stale exports are
        withdrawn."""
        for endpoint_set in published:
            if endpoint_set.source != self.site.source:
                continue
            self.known.add(endpoint_set.service)
            previous = self.sent.get(endpoint_set.service)
            if previous is None or previous.generation < endpoint_set.generation:
                self.sent[endpoint_set.service] = _Sent(
                    endpoint_set.endpoints, endpoint_set.ports, endpoint_set.generation, 0.0
                )

    def plan(
        self, desired: dict[ServiceRef, Local]
    ) -> tuple[list[EndpointSet], list[ServiceRef], float | None]:
        now = self.monotonic()
        publish: list[EndpointSet] = []
        wake: float | None = None
        for service, (endpoints, ports) in sorted(desired.items(), key=lambda kv: str(kv[0])):
            last = self.sent.get(service)
            if last is not None and last.endpoints == endpoints and last.ports == ports:
                continue
            if last is not None and now - last.at < self.window:
                due = last.at + self.window - now
                wake = due if wake is None else min(wake, due)
                continue
            generation = max((last.generation + 1) if last else 1, int(self.wall() * 1000))
            publish.append(
                EndpointSet(
                    service=service,
                    source=self.site.source,
                    generation=generation,
                    endpoints=endpoints,
                    ports=ports,
                    changed_at=self.wall(),
                )
            )
        withdraw = sorted((self.known | set(self.sent)) - set(desired), key=str)
        return publish, withdraw, wake

    def published(self, endpoint_set: EndpointSet) -> None:
        self.sent[endpoint_set.service] = _Sent(
            endpoint_set.endpoints, endpoint_set.ports, endpoint_set.generation, self.monotonic()
        )
        self.known.add(endpoint_set.service)

    def withdrawn(self, service: ServiceRef) -> None:
        self.sent.pop(service, None)
        self.known.discard(service)


__all__ = [
    "AGENT",
    "GATEWAY_SUFFIX",
    "MANAGED_BY",
    "SERVICE_NAME",
    "Exporter",
    "Local",
    "Site",
    "companion_service",
    "endpoint_set_of",
    "has_node_ports",
]
