"""Registry -> cluster: for every exported service of the federation, a
selector-less ``<name>-global`` Service, EndpointSlices holding what
``federation.shared.routing`` chooses for this cluster, and an MCS ServiceImport.

``materialize`` is pure: from the service's endpoint sets and the routing
choice it builds the objects this cluster should hold.  The ServiceImport
also carries every source's endpoint set in an annotation, so an agent
that restarts while the registry is unreachable starts from what is
materialized and can still fail over.  Everything created carries
``app.kubernetes.io/managed-by: federation-agent``; the agent deletes only
objects with that label, and only when the registry says a service is gone
(or, at start, after a successful snapshot).

Where Istio's CRDs are installed, ``istio.workload_entries`` adds an Istio
WorkloadEntry for each VM endpoint the same routing choice picked, carrying
the VM's service account, locality and labels, so the mesh knows the VM's
identity."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.cluster import mcs
from agents.cluster.exporter import AGENT, MANAGED_BY, SERVICE_NAME
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    SERVICE_IMPORTS,
    SERVICES,
    Kind,
    Obj,
)
from federation.model import (
    EndpointPort,
    EndpointSet,
    ServiceRef,
    SessionAffinity,
    SourceRef,
)
from federation.model.addresses import refused_by_kubernetes
from federation.shared.routing import Choice, Chosen

SERVICE_LABEL = "federation.io/service"
SOURCES_ANNOTATION = "federation.io/sources"
OMITTED_ANNOTATION = "federation.io/sources-omitted"
LEFT_OUT_ANNOTATION = "federation.io/left-out"
CHOICE_ANNOTATION = "federation.io/route"
# kube-proxy spreads connections evenly over a Service's endpoints: a weighted
# split is routed (the chosen sources) but not weighted in this cluster.
WEIGHTS_ANNOTATION = "federation.io/weights"
WEIGHTS_UNENFORCED = (
    "not enforced here: kube-proxy spreads connections evenly over the chosen endpoints; "
    "the VM agent's forwarder weights them"
)
SAVED_BUDGET = 192 * 1024  # of kube's 256 KiB for all of an object's annotations
LEFT_OUT_SHOWN = 20
SLICE_MANAGER = "cluster-agent.federation.io"
MCS_SERVICE_NAME = "multicluster.kubernetes.io/service-name"
MCS_SOURCE_CLUSTER = "multicluster.kubernetes.io/source-cluster"
MAX_PER_SLICE = 100


@dataclass(frozen=True, slots=True)
class Desired:
    kind: Kind
    namespace: str
    name: str
    body: Obj


def global_name(service: ServiceRef, suffix: str) -> str:
    return f"{service.name}{suffix}"[:63].rstrip("-")


def labels_of(service: ServiceRef) -> dict[str, str]:
    return {MANAGED_BY: AGENT, SERVICE_LABEL: service.name}


def _service_ports(sets: Iterable[EndpointSet]) -> tuple[EndpointPort, ...]:
    """The -global Service's ports: those of the first source (by name)
    that declares any, so every importing cluster agrees."""
    for endpoint_set in sorted(sets, key=lambda s: str(s.source)):
        if endpoint_set.ports:
            return endpoint_set.ports
    for endpoint_set in sorted(sets, key=lambda s: str(s.source)):
        for endpoint in endpoint_set.endpoints:
            if endpoint.ports:
                return endpoint.ports
    return ()


def service_ports(
    sets: list[EndpointSet], derived: mcs.Derived | None = None
) -> tuple[EndpointPort, ...]:
    """The import's ports: the MCS merge, else the first source's."""
    derived = derived if derived is not None else mcs.derive(sets)
    return derived.ports or _service_ports(sets)


@dataclass(frozen=True, slots=True)
class Materialized:
    """The objects a service needs here, and the chosen endpoints left out
    because Kubernetes cannot hold them (address -> why)."""

    objects: list[Desired]
    left_out: dict[str, str]
    saved: dict[str, str]  # the saved-view annotations written on the ServiceImport


def holdable(
    endpoints: Iterable[Chosen], refused: Mapping[str, str]
) -> tuple[list[Chosen], dict[str, str]]:
    """The chosen endpoints an EndpointSlice can hold, and the others with
    the reason: an address the apiserver refused here before, or one no
    kube-apiserver accepts (loopback is left to the apiserver to refuse:
    simulated clusters hold it)."""
    kept: list[Chosen] = []
    left_out: dict[str, str] = {}
    for chosen in endpoints:
        why = refused.get(chosen.address) or refused_by_kubernetes(
            chosen.address, loopback_allowed=True
        )
        if why is None:
            kept.append(chosen)
        else:
            left_out[chosen.address] = f"{chosen.source}: {why}"
    return kept, left_out


class Bodies:
    """The last body built per slice name and the members it was built from:
    an unchanged source's slices are the same objects as last time, so the
    writer skips them without comparing (at 255 sources, one source's
    change must not rebuild and compare 255 slices).  Bounded by the slices
    the agent manages; ``forget`` drops a service's.  Everything is kept per
    service, so what one reconcile touches is that service's entries only."""

    def __init__(self) -> None:
        self._by_name: dict[ServiceRef, dict[str, tuple[object, Obj]]] = {}
        self._wire: dict[ServiceRef, dict[str, tuple[EndpointSet, str]]] = {}
        self._sources: dict[
            ServiceRef,
            dict[str, tuple[tuple[Chosen, ...], int, tuple[list[Desired], dict[str, str]]]],
        ] = {}

    def body(
        self, service: ServiceRef, name: str, signature: object, build: Callable[[], Obj]
    ) -> Obj:
        bodies = self._by_name.setdefault(service, {})
        hit = bodies.get(name)
        if hit is not None and hit[0] == signature:
            return hit[1]
        built = build()
        bodies[name] = (signature, built)
        return built

    def wire(self, endpoint_set: EndpointSet) -> str:
        """A source's set as JSON for the saved view, encoded once per set
        object: the view keeps a source's object until that source changes
        (the cache holds it, so its identity cannot be reused)."""
        parts = self._wire.setdefault(endpoint_set.service, {})
        source = str(endpoint_set.source)
        hit = parts.get(source)
        if hit is not None and hit[0] is endpoint_set:
            return hit[1]
        text = json.dumps(endpoint_set.to_wire(), separators=(",", ":"))
        parts[source] = (endpoint_set, text)
        return text

    def source(
        self,
        service: ServiceRef,
        source: str,
        chosen: tuple[Chosen, ...],
        refused_version: int,
        build: Callable[[], tuple[list[Desired], dict[str, str]]],
    ) -> tuple[list[Desired], dict[str, str]]:
        """One source's slices, rebuilt only when routing handed a different
        tuple of its chosen endpoints (or the apiserver refused more)."""
        sources = self._sources.setdefault(service, {})
        hit = sources.get(source)
        if hit is not None and hit[0] is chosen and hit[1] == refused_version:
            return hit[2]
        built = build()
        sources[source] = (chosen, refused_version, built)
        return built

    def keep_only(self, service: ServiceRef, names: Iterable[str], sources: Iterable[str]) -> None:
        """After a reconcile: forget the service's slices not in ``names``
        and the sources not in ``sources``."""
        kept, present = set(names), set(sources)
        bodies = self._by_name.get(service, {})
        for name in [n for n in bodies if n not in kept]:
            del bodies[name]
        for cache in (self._sources.get(service, {}), self._wire.get(service, {})):
            for source in [s for s in cache if s not in present]:
                del cache[source]

    def forget(self, service: ServiceRef) -> None:
        """The service left: drop everything kept for it."""
        for cache in (self._by_name, self._sources, self._wire):
            cache.pop(service, None)


def by_source(choice: Choice) -> Mapping[str, tuple[Chosen, ...]]:
    """The chosen endpoints per source (routing's own grouping when it kept one)."""
    if choice.by_source:
        return choice.by_source
    grouped: dict[str, list[Chosen]] = {}
    for chosen in choice.endpoints:
        grouped.setdefault(chosen.source, []).append(chosen)
    return {source: tuple(members) for source, members in grouped.items()}


def source_slices(
    service: ServiceRef,
    name: str,
    source: str,
    chosen: tuple[Chosen, ...],
    refused: Mapping[str, str],
    bodies: Bodies,
    *,
    mcs_labels: bool = True,
) -> tuple[list[Desired], dict[str, str]]:
    """One source's slices for the Service ``name``, at most MAX_PER_SLICE
    endpoints each; ``mcs_labels``: labelled as the MCS API's slices of the
    import (the -global Service's are; a per-source Service's are not)."""
    kept, left_out = holdable(chosen, refused)
    groups: dict[tuple[str, tuple[EndpointPort, ...]], list[Chosen]] = {}
    for member in kept:
        family = "IPv6" if ":" in member.address else "IPv4"  # addresses are canonical
        groups.setdefault((family, member.endpoint.ports), []).append(member)
    out: list[Desired] = []
    for (family, endpoint_ports), members in sorted(groups.items(), key=_group_order):
        prefix = _slice_prefix(name, source, family, endpoint_ports)
        for index, start in enumerate(range(0, len(members), MAX_PER_SLICE)):
            slice_name = f"{prefix}-{index}"
            chunk = members[start : start + MAX_PER_SLICE]
            signature = (name, family, endpoint_ports, mcs_labels, _members(chunk))
            body = bodies.body(
                service,
                slice_name,
                signature,
                functools.partial(
                    _slice,
                    service,
                    name,
                    slice_name,
                    source,
                    family,
                    endpoint_ports,
                    chunk,
                    mcs_labels,
                ),
            )
            out.append(Desired(ENDPOINT_SLICES, service.namespace, slice_name, body))
    return out, left_out


def _members(chunk: list[Chosen]) -> tuple[tuple[str, int, str, str], ...]:
    return tuple(
        (c.address, c.weight, c.endpoint.locality.zone, c.endpoint.hostname) for c in chunk
    )


def weighted(choice: Choice) -> bool:
    """A weighted split between sources (routing's only choice with no
    level in use and endpoints chosen)."""
    return choice.priority is None and bool(choice.endpoints)


def materialize(
    service: ServiceRef,
    sets: list[EndpointSet],
    choice: Choice,
    suffix: str,
    refused: Mapping[str, str] | None = None,
    bodies: Bodies | None = None,
    saved_view: dict[str, str] | None = None,
    ips: tuple[str, ...] = (),
    weights_note: str | None = None,
) -> Materialized:
    """The objects of ``service`` here.  ``saved_view``: the saved-view
    annotations to write as they are (the agent refreshes them at most every
    few seconds: at 255 sources they are the largest thing it writes).
    ``ips``: the derived Service's cluster IPs, once the apiserver gave them
    (the ServiceImport's ``spec.ips``, as GKE's derived Services do).
    ``weights_note``: which data plane here honours a weighted split
    (``canary.objects``); without one, the ServiceImport says none does."""
    bodies = bodies if bodies is not None else Bodies()
    name = global_name(service, suffix)
    labels = labels_of(service)
    derived = mcs.derive(sets)
    ports = service_ports(sets, derived)
    affinity: dict[str, Any] = {}
    if derived.session_affinity is SessionAffinity.CLIENT_IP:
        affinity["sessionAffinity"] = "ClientIP"
        if derived.affinity_timeout:
            affinity["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": derived.affinity_timeout}
            }
    out = [
        Desired(
            SERVICES,
            service.namespace,
            name,
            {
                "metadata": {"name": name, "namespace": service.namespace, "labels": labels},
                "spec": {
                    "type": "ClusterIP",
                    "ports": [
                        {"name": p.name, "port": p.port, "protocol": p.protocol.value}
                        for p in ports
                    ]
                    or [{"name": "none", "port": 1, "protocol": "TCP"}],
                    **affinity,
                },
            },
        ),
    ]
    # One slice set per source (and address family and ports), named after
    # them: a change of one source rewrites only that source's slices, and
    # a source whose chosen endpoints are the very tuple routing gave last
    # time (its memo) is not looked at again.
    left_out: dict[str, str] = {}
    for source, chosen in sorted(by_source(choice).items()):
        slices, dropped = bodies.source(
            service, source, chosen, len(refused or {}),
            lambda: source_slices(service, name, source, chosen, refused or {}, bodies),  # noqa: B023 - called at once
        )  # fmt: skip
        out += slices
        left_out.update(dropped)
    saved = saved_view if saved_view is not None else _saved(sets, choice, bodies)
    annotations = {CHOICE_ANNOTATION: choice.reason, **saved}
    if weighted(choice):
        annotations[WEIGHTS_ANNOTATION] = weights_note or WEIGHTS_UNENFORCED
    if left_out:
        shown = [{"address": a, "reason": r} for a, r in sorted(left_out.items())[:LEFT_OUT_SHOWN]]
        annotations[LEFT_OUT_ANNOTATION] = json.dumps(
            {"count": len(left_out), "endpoints": shown}, separators=(",", ":")
        )
    out.append(
        Desired(
            SERVICE_IMPORTS,
            service.namespace,
            service.name,
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceImport",
                "metadata": {
                    "name": service.name,
                    "namespace": service.namespace,
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": {
                    "type": derived.type,
                    "ports": [
                        {"name": p.name, "port": p.port, "protocol": p.protocol.value}
                        for p in ports
                    ],
                    **({"ips": list(ips)} if ips and derived.type == mcs.CLUSTER_SET_IP else {}),
                    **affinity,
                },
                "status": {"clusters": [{"cluster": c} for c in derived.clusters]},
            },
        )
    )
    return Materialized(out, left_out, saved)


def _saved(sets: list[EndpointSet], choice: Choice, bodies: Bodies) -> dict[str, str]:
    """The sources' sets to save on the ServiceImport, for a restart during
    a registry outage: the sources of the best levels first, as many whole
    sources as fit the annotation budget; how many did not fit."""
    rank: dict[str, int] = {}
    for level in choice.levels:
        for source in level.sources:
            rank.setdefault(source, level.priority)
    ordered = sorted(sets, key=lambda s: (rank.get(str(s.source), 1 << 30), str(s.source)))
    parts: list[str] = []
    size = 2
    for endpoint_set in ordered:
        part = bodies.wire(endpoint_set)
        if size + len(part) + 1 > SAVED_BUDGET:
            break
        parts.append(part)
        size += len(part) + 1
    omitted = len(ordered) - len(parts)
    return {
        SOURCES_ANNOTATION: "[" + ",".join(parts) + "]",
        OMITTED_ANNOTATION: str(omitted),
    }


def _group_order(item: tuple[tuple[str, tuple[EndpointPort, ...]], list[Chosen]]) -> str:
    (family, ports), _ = item
    return family + ",".join(f"{p.name}:{p.port}" for p in ports)


def _slice_prefix(name: str, source: str, family: str, ports: tuple[EndpointPort, ...]) -> str:
    """``<global name>-<source name>-<hash of kind, family, ports>``: stable
    for as long as the source exports the service with those ports."""
    ref = SourceRef.parse(source)
    group = f"{source}|{family}|" + ",".join(f"{p.name}:{p.port}/{p.protocol.value}" for p in ports)
    digest = hashlib.sha256(group.encode()).hexdigest()[:6]
    return f"{name}-{ref.name}"[:200] + f"-{digest}"


def _slice(
    service: ServiceRef,
    name: str,
    slice_name: str,
    source: str,
    family: str,
    ports: tuple[EndpointPort, ...],
    members: list[Chosen],
    mcs_labels: bool,
) -> Obj:
    labels = {
        **labels_of(service),
        SERVICE_NAME: name,
        "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
    }
    if mcs_labels:
        labels[MCS_SERVICE_NAME] = service.name
        labels[MCS_SOURCE_CLUSTER] = SourceRef.parse(source).name
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": service.namespace, "labels": labels},
        "addressType": family,
        "endpoints": [
            {
                "addresses": [c.address],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "zone": c.endpoint.locality.zone,
                **({"hostname": c.endpoint.hostname} if c.endpoint.hostname else {}),
            }
            for c in members
        ],
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.value} for p in ports],
    }


def sets_from_import(obj: Obj) -> list[EndpointSet]:
    """The endpoint sets an agent wrote on a ServiceImport ([] if unreadable)."""
    raw = obj.get("metadata", {}).get("annotations", {}).get(SOURCES_ANNOTATION)
    if not raw:
        return []
    try:
        return [EndpointSet.from_wire(item) for item in json.loads(raw)]
    except (ValueError, TypeError):
        return []


__all__ = [
    "CHOICE_ANNOTATION",
    "LEFT_OUT_ANNOTATION",
    "SERVICE_LABEL",
    "SOURCES_ANNOTATION",
    "Desired",
    "Materialized",
    "by_source",
    "global_name",
    "holdable",
    "labels_of",
    "materialize",
    "service_ports",
    "sets_from_import",
    "source_slices",
    "weighted",
]
