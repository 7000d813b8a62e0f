"""``as=Table`` answers, with the columns kube-apiserver 1.26 prints.

``kubectl get`` asks for ``application/json;as=Table;v=v1;g=meta.k8s.io``
and prints the columns the server gives (those with priority 1 only with
``-o wide``).  The built-in kinds the emulator serves get kube's own
printers' columns and cell formats; a custom resource gets NAME, its CRD's
``additionalPrinterColumns`` (a simple ``.a.b`` or ``.a[0].b`` path), or
NAME and AGE when it declares none, as kube-apiserver does."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from federation.sim.kube.objects import Obj, ResourceType

Cell = str | int | float | bool | None
Column = tuple[str, str, int, Callable[[Obj], Cell]]  # name, type, priority, cell


def wants_table(accept: str) -> bool:
    """Whether the first acceptable type asks for a meta.k8s.io Table."""
    for part in accept.split(","):
        params = {p.strip().split("=", 1)[0]: p.strip().split("=", 1)[-1]
                  for p in part.split(";")[1:] if "=" in p}  # fmt: skip
        if params.get("as") == "Table" and params.get("g", "meta.k8s.io") == "meta.k8s.io":
            return True
        if part.strip().split(";")[0] in ("application/json", "*/*"):
            return False
    return False


def age(obj: Obj, now: dt.datetime | None = None) -> str:
    """kube's ``translateTimestampSince``: "5m", "3h12m", "4d", "<unknown>"."""
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    seconds = int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds())
    return human_duration(max(seconds, 0))


def human_duration(seconds: int) -> str:
    """apimachinery's ``duration.HumanDuration``."""
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _name(obj: Obj) -> Cell:
    return str(obj.get("metadata", {}).get("name", ""))


def _service_ports(obj: Obj) -> Cell:
    ports = obj.get("spec", {}).get("ports") or []
    out = []
    for p in ports:
        text = str(p.get("port"))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol') or 'TCP'}")
    return ",".join(out) or "<none>"


def _external_ip(obj: Obj) -> Cell:
    spec = obj.get("spec", {})
    kind = spec.get("type") or "ClusterIP"
    ips = list(spec.get("externalIPs") or [])
    if kind == "LoadBalancer":
        ingress = (obj.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        ips += [i.get("ip") or i.get("hostname") for i in ingress]
        return ",".join(ips) or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "<none>")
    return ",".join(ips) or "<none>"


def _selector(obj: Obj) -> Cell:
    selector = obj.get("spec", {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


def _slice_ports(obj: Obj) -> Cell:
    ports = [str(p["port"]) for p in obj.get("ports") or [] if p.get("port") is not None]
    return ",".join(ports) or "<unset>"


def _slice_endpoints(obj: Obj) -> Cell:
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<unset>"
    shown = ",".join(addresses[:3])
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


def _pod_ready(obj: Obj) -> Cell:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    containers = obj.get("spec", {}).get("containers") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{len(containers) or len(statuses)}"


def _pod_status(obj: Obj) -> Cell:
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status", {})
    return str(status.get("reason") or status.get("phase") or "Unknown")


def _pod_restarts(obj: Obj) -> Cell:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def _node_status(obj: Obj) -> Cell:
    conditions = obj.get("status", {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if ready is None:
        text = "Unknown"
    if obj.get("spec", {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(obj: Obj) -> Cell:
    labels = obj.get("metadata", {}).get("labels") or {}
    roles = sorted(
        k.removeprefix("node-role.kubernetes.io/")
        for k in labels
        if k.startswith("node-role.kubernetes.io/")
    )
    return ",".join(roles) or "<none>"


def _node_address(kind: str) -> Callable[[Obj], Cell]:
    def cell(obj: Obj) -> Cell:
        for address in obj.get("status", {}).get("addresses") or []:
            if address.get("type") == kind:
                return str(address.get("address"))
        return "<none>"

    return cell


def _node_info(key: str) -> Callable[[Obj], Cell]:
    return lambda obj: str((obj.get("status", {}).get("nodeInfo") or {}).get(key) or "")


def _count(field: str) -> Callable[[Obj], Cell]:
    return lambda obj: (
        len(obj.get(field) or {}) + len(obj.get("binaryData") or {}) * (field == "data")
    )


def _created_at(obj: Obj) -> Cell:
    return str(obj.get("metadata", {}).get("creationTimestamp", ""))


def _since(stamp: object) -> Cell:
    return age({"metadata": {"creationTimestamp": stamp}}) if stamp else "<unknown>"


def _involved(obj: Obj) -> Cell:
    involved = obj.get("involvedObject") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def _source(obj: Obj) -> Cell:
    source = obj.get("source") or {}
    host = source.get("host")
    return f"{source.get('component', '')}, {host}" if host else str(source.get("component", ""))


NAME: Column = ("Name", "string", 0, _name)
AGE: Column = ("Age", "string", 0, age)
COLUMNS: dict[str, list[Column]] = {
    "/namespaces": [
        NAME, ("Status", "string", 0, lambda o: str(o.get("status", {}).get("phase", ""))), AGE,
    ],
    "/services": [
        NAME,
        ("Type", "string", 0, lambda o: str(o.get("spec", {}).get("type") or "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: str(o.get("spec", {}).get("clusterIP") or "<none>")),
        ("External-IP", "string", 0, _external_ip),
        ("Port(s)", "string", 0, _service_ports),
        AGE,
        ("Selector", "string", 1, _selector),
    ],
    "/nodes": [
        NAME, ("Status", "string", 0, _node_status), ("Roles", "string", 0, _node_roles), AGE,
        ("Version", "string", 0, _node_info("kubeletVersion")),
        ("Internal-IP", "string", 1, _node_address("InternalIP")),
        ("External-IP", "string", 1, _node_address("ExternalIP")),
        ("OS-Image", "string", 1, _node_info("osImage")),
        ("Kernel-Version", "string", 1, _node_info("kernelVersion")),
        ("Container-Runtime", "string", 1, _node_info("containerRuntimeVersion")),
    ],
    "/secrets": [
        NAME, ("Type", "string", 0, lambda o: str(o.get("type") or "Opaque")),
        ("Data", "string", 0, _count("data")), AGE,
    ],
    "/configmaps": [NAME, ("Data", "string", 0, _count("data")), AGE],
    "/pods": [
        NAME, ("Ready", "string", 0, _pod_ready), ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, _pod_restarts), AGE,
        ("IP", "string", 1, lambda o: str(o.get("status", {}).get("podIP") or "<none>")),
        ("Node", "string", 1, lambda o: str(o.get("spec", {}).get("nodeName") or "<none>")),
        ("Nominated Node", "string", 1, lambda o: "<none>"),
        ("Readiness Gates", "string", 1, lambda o: "<none>"),
    ],
    "discovery.k8s.io/endpointslices": [
        NAME, ("AddressType", "string", 0, lambda o: str(o.get("addressType", ""))),
        ("Ports", "string", 0, _slice_ports), ("Endpoints", "string", 0, _slice_endpoints), AGE,
    ],
    "coordination.k8s.io/leases": [
        NAME,
        ("Holder", "string", 0, lambda o: str(o.get("spec", {}).get("holderIdentity") or "")),
        AGE,
    ],
    "/events": [
        ("Last Seen", "string", 0, lambda o: _since(o.get("lastTimestamp"))),
        ("Type", "string", 0, lambda o: str(o.get("type") or "")),
        ("Reason", "string", 0, lambda o: str(o.get("reason") or "")),
        ("Object", "string", 0, _involved),
        ("Message", "string", 0, lambda o: str(o.get("message") or "")),
        ("Subobject", "string", 1, lambda o: str(o.get("involvedObject", {}).get("fieldPath") or "")),
        ("Source", "string", 1, _source),
        ("First Seen", "string", 1, lambda o: _since(o.get("firstTimestamp"))),
        ("Count", "string", 1, lambda o: int(o.get("count") or 1)),
        ("Name", "string", 1, _name),
    ],
    "apiextensions.k8s.io/customresourcedefinitions": [
        NAME, ("Created At", "date", 0, _created_at),
    ],
}  # fmt: skip


def _json_path(path: str) -> Callable[[Obj], Cell]:
    """``.spec.type`` or ``.status.conditions[0].type``: kube's printer
    columns are JSONPath; these simple forms cover what CRDs use."""
    steps = re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", path)

    def cell(obj: Obj) -> Cell:
        value: Any = obj
        for name, index in steps:
            if name:
                value = value.get(name) if isinstance(value, dict) else None
            else:
                i = int(index)
                value = value[i] if isinstance(value, list) and i < len(value) else None
            if value is None:
                return None
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return value  # type: ignore[no-any-return]

    return cell


def columns_of(rt: ResourceType) -> list[Column]:
    if rt.status_subresource is None:  # built in
        return COLUMNS.get(rt.key, [NAME, AGE])
    if not rt.printer_columns:
        return [NAME, AGE]
    # As kube-apiserver: the CRD's columns after the name, and no Age unless
    # it declares one (a ``date`` column, which kubectl shows as an age).
    return [NAME] + [
        (name, kind, priority, _json_path(path))
        for name, kind, priority, path in rt.printer_columns
    ]


def _definition(name: str, kind: str, priority: int) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": "name" if name == "Name" else "",
        "description": "",
        "priority": priority,
    }


def table(rt: ResourceType, objects: list[Obj], resource_version: str, include: str) -> Obj:
    """A meta.k8s.io/v1 Table of ``objects``; ``include`` is the request's
    ``includeObject`` (None, Metadata the default, or Object)."""
    columns = columns_of(rt)
    rows = []
    for obj in objects:
        row: Obj = {"cells": [cell(obj) for _, _, _, cell in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, kind, priority, _ in columns
        ],
        "rows": rows,
    }


__all__ = ["COLUMNS", "age", "columns_of", "human_duration", "table", "wants_table"]
