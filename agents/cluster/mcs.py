"""What the MCS API (KEP-1645, ``multicluster.x-k8s.io/v1alpha1``) derives
from the exports of one service, and the conditions an export carries.

Every exporting cluster's set says how its Service looks (ports, headless
or not, session affinity) and when its ServiceExport was made.  As the KEP
resolves conflicts, the oldest export wins (ties: the cluster name): its
type and session affinity are the import's; ports are the union by name,
the oldest definition of a name winning.  Every constituent export gets
the ``Conflict`` condition while any of them disagrees, naming the winner
and the clusters that disagree (upstream recommends all constituents, and
the conformance suite checks all).  We write the original condition types
(``Valid``, ``Conflict``) and their newer names (``Accepted``,
``Conflicted``) with the same reasons, so readers of either find them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from federation.model import EndpointPort, EndpointSet, SessionAffinity, SourceKind

CLUSTER_SET_IP, HEADLESS = "ClusterSetIP", "Headless"
PORT, TYPE = "PortConflict", "TypeConflict"
AFFINITY, AFFINITY_CONFIG = "SessionAffinityConflict", "SessionAffinityConfigConflict"


@dataclass(frozen=True, slots=True)
class Derived:
    """The import as the oldest export decides it, and what disagrees."""

    type: str
    ports: tuple[EndpointPort, ...]
    session_affinity: SessionAffinity
    affinity_timeout: int
    clusters: tuple[str, ...]  # the exporting clusters, by name
    winner: str | None  # the oldest export's cluster
    conflicts: tuple[str, ...]  # reasons, in upstream's order
    disagreeing: tuple[str, ...]  # clusters whose export differs from the winner's

    def message(self) -> str:
        if not self.conflicts:
            return "the exports of every cluster agree"
        return (
            f"{', '.join(self.conflicts)}: {', '.join(self.disagreeing)} "
            f"{'disagrees' if len(self.disagreeing) == 1 else 'disagree'} with the oldest "
            f"export, in {self.winner}, whose settings the import uses"
        )


def _age(endpoint_set: EndpointSet) -> tuple[float, str]:
    return (endpoint_set.exported_at or float("inf"), endpoint_set.source.name)


def derive(sets: Iterable[EndpointSet]) -> Derived:
    """What a ServiceImport says, from every source's (merged) set."""
    clusters = sorted((s for s in sets if s.source.kind is SourceKind.CLUSTER), key=_age)
    if not clusters:
        others = sorted(sets, key=lambda s: str(s.source))
        ports = next((s.ports for s in others if s.ports), ())
        return Derived(CLUSTER_SET_IP, ports, SessionAffinity.NONE, 0, (), None, (), ())
    oldest = clusters[0]
    merged: dict[str, EndpointPort] = {}
    disagree: dict[str, set[str]] = {}
    for each in clusters:
        for port in each.ports:
            held = merged.setdefault(port.name, port)
            if held != port:
                disagree.setdefault(PORT, set()).add(each.source.name)
        if each.headless != oldest.headless:
            disagree.setdefault(TYPE, set()).add(each.source.name)
        if each.session_affinity is not oldest.session_affinity:
            disagree.setdefault(AFFINITY, set()).add(each.source.name)
        elif each.affinity_timeout != oldest.affinity_timeout:
            disagree.setdefault(AFFINITY_CONFIG, set()).add(each.source.name)
    reasons = tuple(r for r in (PORT, TYPE, AFFINITY, AFFINITY_CONFIG) if r in disagree)
    return Derived(
        type=HEADLESS if oldest.headless else CLUSTER_SET_IP,
        ports=tuple(merged.values()),
        session_affinity=oldest.session_affinity,
        affinity_timeout=oldest.affinity_timeout,
        clusters=tuple(sorted(s.source.name for s in clusters)),
        winner=oldest.source.name,
        conflicts=reasons,
        disagreeing=tuple(sorted(set().union(*disagree.values()))) if disagree else (),
    )


def _condition(
    kind: str, true: bool, reason: str, message: str, generation: int, now: str
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if true else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    }


def export_conditions(
    export: dict[str, Any],
    service: dict[str, Any] | None,
    derived: Derived | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The conditions ``export`` should carry: valid (its Service exists and
    is not ExternalName) and in conflict or not.  A condition whose status
    and reason did not change keeps its ``lastTransitionTime``."""
    generation = int(export.get("metadata", {}).get("generation") or 1)
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = export.get("metadata", {}).get("name", "")
    if service is None:
        valid, reason, text = False, "NoService", f"Service {name} does not exist in this cluster"
    elif service.get("spec", {}).get("type") == "ExternalName":
        valid, reason = False, "InvalidServiceType"
        text = "a Service of type ExternalName cannot be exported"
    else:
        valid, reason, text = True, "Valid", "the Service is exported"
    conflicted = bool(valid and derived is not None and derived.conflicts)
    why = ",".join(derived.conflicts) if conflicted and derived else "NoConflicts"
    said = derived.message() if derived is not None and valid else "not exported"
    wanted = [
        _condition("Valid", valid, reason, text, generation, stamp),
        _condition("Accepted", valid, "Accepted" if valid else reason, text, generation, stamp),
        _condition("Conflict", conflicted, why, said, generation, stamp),
        _condition("Conflicted", conflicted, why, said, generation, stamp),
    ]
    held = {c.get("type"): c for c in (export.get("status") or {}).get("conditions") or []}
    for condition in wanted:
        before = held.get(condition["type"])
        if before and (before.get("status"), before.get("reason")) == (
            condition["status"],
            condition["reason"],
        ):
            condition["lastTransitionTime"] = before.get("lastTransitionTime", stamp)
    return wanted


def same_conditions(export: dict[str, Any], wanted: list[dict[str, Any]]) -> bool:
    """Whether ``export`` already carries exactly ``wanted``."""
    held = (export.get("status") or {}).get("conditions") or []
    return sorted(held, key=lambda c: str(c.get("type"))) == sorted(wanted, key=lambda c: c["type"])


__all__ = [
    "CLUSTER_SET_IP", "HEADLESS", "Derived", "derive", "export_conditions", "same_conditions",
]  # fmt: skip
