"""Events, as the real kubelet and scheduler record them: core/v1 Events
about an object (``involvedObject``), with a reason, a message, a type and
the component that saw it."""

from __future__ import annotations

import secrets
from typing import Any

from federation.sim.kube.objects import Obj, now_rfc3339
from federation.sim.kube.resources import EVENT
from federation.sim.local import LocalClient


def event_for(
    obj: Obj, api_version: str, kind: str, reason: str, message: str, *,
    type_: str = "Normal", component: str, host: str = "",
) -> dict[str, Any]:  # fmt: skip
    """A core/v1 Event about ``obj``, named as kube names them."""
    meta = obj.get("metadata", {})
    now = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', 'object')}.{secrets.token_hex(8)}",
            "namespace": meta.get("namespace", "default"),
        },
        "involvedObject": {
            "apiVersion": api_version, "kind": kind, "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""), "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component, **({"host": host} if host else {})},
        "reportingComponent": component,
        "reportingInstance": host,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": None,
        "count": 1,
    }  # fmt: skip


def record(client: LocalClient, pod: Obj, reason: str, message: str, *, type_: str = "Normal",
           component: str = "kubelet") -> None:  # fmt: skip
    """Record an Event about a Pod (what the simulated kubelet sees)."""
    host = str(pod.get("spec", {}).get("nodeName") or "")
    body = event_for(pod, "v1", "Pod", reason, message, type_=type_, component=component,
                     host=host)  # fmt: skip
    client.create(EVENT, body["metadata"]["namespace"], body)


__all__ = ["event_for", "record"]
