"""Writing what ``mcs`` decides onto our ServiceExport: its conditions,
through the status subresource (or the object, under an older CRD that
has none), and a Warning Event where a user looks first when the export
turns invalid or conflicted, once per transition."""

from __future__ import annotations

import logging

from agents.cluster.kube import (
    EVENTS,
    MCS_GROUP,
    SERVICE_EXPORTS,
    Kube,
    KubeError,
    NotFound,
    Obj,
)

log = logging.getLogger(__name__)

# The condition status that is bad news, per condition a user is told about.
_BAD = {"Valid": "False", "Conflict": "True"}


async def write_conditions(kube: Kube, export: Obj, wanted: list[Obj]) -> Obj:
    """``export`` with ``wanted`` as its conditions, as the apiserver holds it."""
    meta = export["metadata"]
    body = {**export, "status": {**(export.get("status") or {}), "conditions": wanted}}
    try:
        return await kube.replace_status(SERVICE_EXPORTS, meta["namespace"], meta["name"], body)
    except NotFound:
        pass
    # An older CRD without the status subresource: status is the object's.
    return await kube.replace(SERVICE_EXPORTS, meta["namespace"], meta["name"], body)


def turned_bad(before: Obj, wanted: list[Obj]) -> list[Obj]:
    """The conditions of ``wanted`` that are bad news and were not before."""
    held = {c.get("type"): c for c in (before.get("status") or {}).get("conditions") or []}
    out = []
    for condition in wanted:
        if _BAD.get(condition["type"]) != condition["status"]:
            continue
        old = held.get(condition["type"]) or {}
        if (old.get("status"), old.get("reason")) != (condition["status"], condition["reason"]):
            out.append(condition)
    return out


def warning(export: Obj, condition: Obj) -> Obj:
    meta = export["metadata"]
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{MCS_GROUP}/v1alpha1",
            "kind": "ServiceExport",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta.get("uid"),
        },
        "reason": condition["reason"],
        "message": condition["message"],
        "type": "Warning",
        "source": {"component": "federation-agent"},
        "reportingComponent": "federation-agent",
        "count": 1,
        "firstTimestamp": condition["lastTransitionTime"],
        "lastTimestamp": condition["lastTransitionTime"],
    }


async def record_events(kube: Kube, before: Obj, wanted: list[Obj]) -> None:
    """An Event per condition that turned bad; one the apiserver refuses is
    logged, never retried (the condition itself is written)."""
    for condition in turned_bad(before, wanted):
        try:
            await kube.create(EVENTS, before["metadata"]["namespace"], warning(before, condition))
        except KubeError as err:
            where = f"{before['metadata']['namespace']}/{before['metadata']['name']}"
            log.warning("cannot record an Event on ServiceExport %s: %s", where, err)


__all__ = ["record_events", "turned_bad", "warning", "write_conditions"]
