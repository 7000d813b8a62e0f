"""A weighted split between sources, enforced by the data planes that can
weight: kube-proxy spreads a Service's connections evenly over its
endpoints, so where Gateway API or Istio is served the agent hands the
weights to them.

- Gateway API (GAMMA): a per-source Service ``<name>-<cluster>`` (and
  ``<name>-vm-<vm>``) holding that source's chosen endpoints, and an
  HTTPRoute per TCP port, attached to the ``-global`` Service the clients
  call, whose weighted ``backendRefs`` name the per-source Services.
- Istio: a ServiceEntry for ``<name>.<namespace>.svc.clusterset.local``
  (MESH_INTERNAL, STATIC) whose inline endpoints carry each endpoint's
  weight, up to MAX_INLINE endpoints.

Weights are routing's (``Chosen.weight``, per endpoint), reduced by their
greatest common divisor so 90/10 reads 9/1.  ``objects`` also says which
of them honours the split, for the ServiceImport; None when neither does."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agents.cluster import importer, mcs
from agents.cluster.importer import Bodies, Desired, global_name, labels_of
from agents.cluster.kube import HTTP_ROUTES, SERVICE_ENTRIES, SERVICES, Obj
from federation.model import EndpointPort, EndpointSet, Protocol, ServiceRef, SourceKind, SourceRef
from federation.model.validation import DNS1123_LABEL
from federation.shared.routing import Choice, Chosen

SOURCE_LABEL = "federation.io/source"
MAX_INLINE = 4096  # endpoints in one ServiceEntry (kube's object limit is 1.5 MB)
MAX_ROUTE_WEIGHT = 1_000_000  # Gateway API's bound on a backendRef's weight


@dataclass(frozen=True, slots=True)
class Planes:
    """Which weighting data planes this cluster serves."""

    gateway: bool = False
    istio: bool = False


def source_service_name(service: ServiceRef, source: str) -> str:
    """``<name>-<cluster>`` or ``<name>-vm-<vm>``; a name over 63
    characters is cut and ends in a hash of the whole."""
    ref = SourceRef.parse(source)
    middle = "" if ref.kind is SourceKind.CLUSTER else "vm-"
    name = f"{service.name}-{middle}{ref.name}"
    if len(name) <= 63 and DNS1123_LABEL.fullmatch(name) and name[0].isalpha():
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def _reduced(weights: Mapping[str, int]) -> dict[str, int]:
    divisor = math.gcd(*weights.values()) or 1
    return {key: max(1, weight // divisor) for key, weight in weights.items()}


def _tcp(ports: Iterable[EndpointPort]) -> list[EndpointPort]:
    return [p for p in ports if p.protocol is Protocol.TCP]


def objects(
    service: ServiceRef,
    sets: list[EndpointSet],
    choice: Choice,
    planes: Planes,
    suffix: str,
    refused: Mapping[str, str],
    bodies: Bodies,
) -> tuple[list[Desired], str | None]:
    """The objects that weight ``service`` here, and what the ServiceImport
    says honours the split (None: nothing here does).  Only a weighted split
    of a service with a cluster IP: a headless import has no Service in
    front of its endpoints to weight."""
    if not (planes.gateway or planes.istio) or not importer.weighted(choice):
        return [], None
    derived = mcs.derive(sets)
    if derived.type != mcs.CLUSTER_SET_IP:
        return [], None
    ports = _tcp(importer.service_ports(sets, derived))
    if not ports:
        return [], None
    name = global_name(service, suffix)
    out: list[Desired] = []
    said: list[str] = []
    if planes.gateway:
        out += _gateway(service, importer.by_source(choice), ports, name, refused, bodies)
        said.append(f"Gateway API HTTPRoutes on {name}")
    if planes.istio and len(choice.endpoints) <= MAX_INLINE:
        out.append(_service_entry(service, choice.endpoints, ports, name))
        said.append(f"Istio ServiceEntry {name}")
    return out, ("enforced by " + " and ".join(said) if said else None)


def _gateway(
    service: ServiceRef,
    by_source: Mapping[str, tuple[Chosen, ...]],
    ports: list[EndpointPort],
    target: str,
    refused: Mapping[str, str],
    bodies: Bodies,
) -> list[Desired]:
    out: list[Desired] = []
    weights = _reduced({s: sum(c.weight for c in chosen) for s, chosen in by_source.items()})
    for source, chosen in sorted(by_source.items()):
        name = source_service_name(service, source)
        labels = {**labels_of(service), SOURCE_LABEL: SourceRef.parse(source).name}
        body: Obj = {
            "metadata": {"name": name, "namespace": service.namespace, "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "ports": [
                    {"name": p.name, "port": p.port, "protocol": p.protocol.value} for p in ports
                ],
            },
        }
        out.append(Desired(SERVICES, service.namespace, name, body))
        slices, _ = importer.source_slices(
            service, name, source, chosen, refused, bodies, mcs_labels=False
        )
        out += slices
    for port in ports:
        route = target if len(ports) == 1 else f"{target[:57].rstrip('-')}-{port.port}"
        backends = [
            {
                "group": "",
                "kind": "Service",
                "name": source_service_name(service, source),
                "port": port.port,
                "weight": min(weight, MAX_ROUTE_WEIGHT),
            }
            for source, weight in sorted(weights.items())
        ]
        out.append(
            Desired(
                HTTP_ROUTES,
                service.namespace,
                route,
                {
                    "apiVersion": f"{HTTP_ROUTES.group}/{HTTP_ROUTES.version}",
                    "kind": "HTTPRoute",
                    "metadata": {
                        "name": route,
                        "namespace": service.namespace,
                        "labels": labels_of(service),
                    },
                    "spec": {
                        # GAMMA: the route binds to the Service clients call
                        "parentRefs": [
                            {"group": "", "kind": "Service", "name": target, "port": port.port}
                        ],
                        "rules": [{"backendRefs": backends}],
                    },
                },
            )
        )
    return out


def _service_entry(
    service: ServiceRef, chosen: tuple[Chosen, ...], ports: list[EndpointPort], name: str
) -> Desired:
    weights = _reduced({f"{c.source}|{c.address}": c.weight for c in chosen})
    endpoints: list[Obj] = []
    for c in chosen:
        numbers = {p.name or f"port-{p.port}": p.port for p in c.endpoint.ports}
        locality = c.endpoint.locality
        entry: Obj = {
            "address": c.address,
            "labels": {SOURCE_LABEL: SourceRef.parse(c.source).name},
            "weight": weights[f"{c.source}|{c.address}"],
        }
        if numbers:
            entry["ports"] = numbers
        if locality.region:
            entry["locality"] = "/".join(x for x in (locality.region, locality.zone) if x)
        if locality.network:
            entry["network"] = locality.network
        endpoints.append(entry)
    body: Obj = {
        "apiVersion": f"{SERVICE_ENTRIES.group}/{SERVICE_ENTRIES.version}",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": service.namespace, "labels": labels_of(service)},
        "spec": {
            "hosts": [f"{service.name}.{service.namespace}.svc.clusterset.local"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [
                {"number": p.port, "name": p.name or f"port-{p.port}", "protocol": "TCP"}
                for p in ports
            ],
            "endpoints": endpoints,
        },
    }
    return Desired(SERVICE_ENTRIES, service.namespace, name, body)


__all__ = [
    "MAX_INLINE",
    "SOURCE_LABEL",
    "Planes",
    "objects",
    "source_service_name",
]
