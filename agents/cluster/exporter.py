"""Cluster -> registry: a Service with a same-named ServiceExport is
published as this cluster's endpoint set of that service.

``endpoint_set_of`` is pure: from the Service, its EndpointSlices and the
Nodes it builds the endpoints (pod IPs in flat mode; node address x
NodePort in gateway mode) with locality from the node topology labels.
``Exporter`` decides what to send when: the first change of a service at
once, later changes within the window coalesced, no-op publishes skipped,
and a withdraw when the ServiceExport goes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agents.cluster import shards
from agents.cluster.kube import Obj
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    NetworkMode,
    Protocol,
    ServiceRef,
    SessionAffinity,
    SourceRef,
)
from federation.model.validation import DNS1123_LABEL

log = logging.getLogger(__name__)

SERVICE_NAME = "kubernetes.io/service-name"
REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
MANAGED_BY = "app.kubernetes.io/managed-by"
AGENT = "federation-agent"
GATEWAY_SUFFIX = "-federation-gw"


@dataclass(frozen=True, slots=True)
class Shape:
    """What the MCS API derives an import from, beside endpoints and ports:
    headless or not, session affinity, and when the export was made."""

    headless: bool = False
    session_affinity: SessionAffinity = SessionAffinity.NONE
    affinity_timeout: int = 0
    exported_at: float = 0.0

    def fields(self) -> dict[str, Any]:
        """The EndpointSet fields this shape sets."""
        return {
            "headless": self.headless,
            "session_affinity": self.session_affinity,
            "affinity_timeout": self.affinity_timeout,
            "exported_at": self.exported_at,
        }

    @classmethod
    def of_set(cls, endpoint_set: EndpointSet) -> Shape:
        return cls(
            endpoint_set.headless,
            endpoint_set.session_affinity,
            endpoint_set.affinity_timeout,
            endpoint_set.exported_at,
        )


def shape_of(service: Obj, export: Obj | None) -> Shape:
    """The Shape of an exported Service and its ServiceExport."""
    spec = service.get("spec", {})
    affinity = (
        SessionAffinity.CLIENT_IP
        if spec.get("sessionAffinity") == "ClientIP"
        else (SessionAffinity.NONE)
    )
    timeout = (spec.get("sessionAffinityConfig") or {}).get("clientIP", {}).get("timeoutSeconds")
    created = (export or {}).get("metadata", {}).get("creationTimestamp")
    return Shape(
        headless=spec.get("clusterIP") == "None",
        session_affinity=affinity,
        affinity_timeout=int(timeout) if affinity is SessionAffinity.CLIENT_IP and timeout else 0,
        exported_at=_timestamp(created),
    )


def _timestamp(text: object) -> float:
    if not isinstance(text, str):
        return 0.0
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# endpoints, service ports, shape
Local = tuple[tuple[Endpoint, ...], tuple[EndpointPort, ...], Shape]


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


def _hostname(value: object) -> str:
    """A slice endpoint's hostname, if it is one DNS can carry."""
    text = value if isinstance(value, str) else ""
    return text if len(text) <= 63 and DNS1123_LABEL.fullmatch(text) else ""


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


def managed(obj: Obj) -> bool:
    """True for objects this agent made (and only those it may delete)."""
    return bool(obj["metadata"].get("labels", {}).get(MANAGED_BY) == AGENT)


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


def local_set(source: SourceRef, service: ServiceRef, local: Local) -> EndpointSet:
    """This cluster's own set of ``service`` as it is here now (generation
    0: not what was published, what routing and ``mcs`` compare)."""
    endpoints, ports, shape = local
    return EndpointSet(
        service=service, source=source, generation=0, endpoints=endpoints, ports=ports,
        **shape.fields(),
    )  # fmt: skip


def endpoint_set_of(
    site: Site,
    service: Obj,
    slices: Iterable[Obj],
    nodes: dict[str, Obj],
    node_ports_from: Obj | None = None,
    export: Obj | None = None,
) -> Local:
    """(endpoints, service ports, shape) of an exported Service, sorted."""
    shape = shape_of(service, export)
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
                    hostname=_hostname(raw.get("hostname")),
                )
                found[address] = (endpoint, node_name)
    if site.mode is NetworkMode.FLAT:
        return tuple(sorted((e for e, _ in found.values()), key=_order)), service_ports, shape
    ported = _gateway(site, list(found.values()), nodes, node_ports_from or service)
    return ported, service_ports, shape


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
    """What the registry holds of one exported service from us, per shard."""

    shards: dict[int, tuple[tuple[Endpoint, ...], tuple[EndpointPort, ...], int]]
    at: float = 0.0  # monotonic time of the last publish
    shape: Shape = Shape()

    def members(self) -> dict[int, tuple[Endpoint, ...]]:
        return {n: endpoints for n, (endpoints, _, _) in self.shards.items()}


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one exported service now."""

    publish: tuple[EndpointSet, ...] = ()
    drop: tuple[int, ...] = ()  # shards to withdraw
    withdraw: bool = False  # the whole service: its export is gone
    wake: float | None = None  # look again after this many seconds (coalescing)


@dataclass
class Exporter:
    """What to publish when, one service at a time.  ``plan`` takes the
    desired endpoints of one service (None: not exported) and answers the
    shards to publish, the shards to drop, or a withdraw; the first change
    goes at once and later ones within ``window`` are coalesced.  Shards
    are stable (``shards.assign``), so a change rewrites only the shards it
    touches."""

    site: Site
    window: float = 0.1
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sent: dict[ServiceRef, _Sent] = field(default_factory=dict)

    def adopt(self, service: ServiceRef, stored: Iterable[EndpointSet]) -> None:
        """What the registry holds of ``service`` from this cluster (at
        start, or after a relist): later generations continue from it, and
        a service no longer exported is withdrawn."""
        own = [s for s in stored if s.source == self.site.source]
        if not own:
            return
        last = self.sent.get(service)
        shards = {
            s.shard: (s.endpoints, s.ports, s.generation) for s in own
        }  # the registry's shards, no others: a shard it lacks is published again
        self.sent[service] = _Sent(
            shards, last.at if last is not None else 0.0, Shape.of_set(own[0])
        )

    def plan(self, service: ServiceRef, desired: Local | None) -> Plan:
        last = self.sent.get(service)
        if desired is None:
            return Plan(withdraw=last is not None)
        endpoints, ports, shape = desired
        wanted = shards.assign(endpoints, last.members() if last is not None else {}) or {0: ()}
        held = last.shards if last is not None else {}
        reshaped = last is not None and last.shape != shape
        changed = [
            n
            for n, members in sorted(wanted.items())
            if reshaped or n not in held or held[n][0] != members or held[n][1] != ports
        ]
        drop = tuple(sorted(set(held) - set(wanted)))
        if not changed and not drop:
            return Plan()
        now = self.monotonic()
        if last is not None and now - last.at < self.window:
            return Plan(wake=last.at + self.window - now)
        generation = int(self.wall() * 1000)
        publish = tuple(
            EndpointSet(
                service=service,
                source=self.site.source,
                generation=max(held[n][2] + 1 if n in held else 1, generation),
                shard=n,
                endpoints=wanted[n],
                ports=ports,
                changed_at=self.wall(),
                **shape.fields(),
            )
            for n in changed
        )
        return Plan(publish=publish, drop=drop)

    def published(self, endpoint_set: EndpointSet) -> None:
        last = self.sent.setdefault(endpoint_set.service, _Sent({}))
        last.shards[endpoint_set.shard] = (
            endpoint_set.endpoints,
            endpoint_set.ports,
            endpoint_set.generation,
        )
        last.shape = Shape.of_set(endpoint_set)
        last.at = self.monotonic()

    def dropped(self, service: ServiceRef, shard: int) -> None:
        last = self.sent.get(service)
        if last is not None:
            last.shards.pop(shard, None)

    def withdrawn(self, service: ServiceRef) -> None:
        self.sent.pop(service, None)

    def exported(self) -> list[ServiceRef]:
        """Every service the registry holds from us, as far as we know."""
        return sorted(self.sent, key=str)


__all__ = [
    "AGENT",
    "GATEWAY_SUFFIX",
    "MANAGED_BY",
    "SERVICE_NAME",
    "Exporter",
    "Local",
    "Plan",
    "Shape",
    "Site",
    "companion_service",
    "endpoint_set_of",
    "has_node_ports",
    "local_set",
    "managed",
    "shape_of",
]
