"""``events.k8s.io/v1`` Events: the same objects as core/v1 Events, seen
through the newer schema, as kube-apiserver stores one and serves both.

Reads and watches convert core to v1; writes convert v1 to core after
checking what events.k8s.io/v1 requires of a new Event."""

from __future__ import annotations

from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import Obj
from federation.sim.kube.resources import EVENTS_V1

# events.k8s.io/v1 field -> core/v1 field, where only the name differs.
_RENAMED = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "deprecatedSource": "source",
}
_SAME = ("metadata", "reason", "type", "action", "related", "eventTime", "reportingInstance")


def from_core(event: Obj) -> Obj:
    out: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
    for name in _SAME:
        if event.get(name) is not None:
            out[name] = event[name]
    for new, old in _RENAMED.items():
        if event.get(old) not in (None, "", {}):
            out[new] = event[old]
    series = event.get("series")
    if series:
        out["series"] = {
            "count": series.get("count"),
            "lastObservedTime": series.get("lastObservedTime"),
        }
    return out


def to_core(event: Any, *, creating: bool) -> Obj:
    if not isinstance(event, dict):
        raise KubeError.bad_request("the request body must be a JSON object")
    if creating:
        _check_new(event)
    out: Obj = {"apiVersion": "v1", "kind": "Event"}
    for name in _SAME:
        if name in event:
            out[name] = event[name]
    for new, old in _RENAMED.items():
        if new in event:
            out[old] = event[new]
    if event.get("series"):
        out["series"] = dict(event["series"])
    return out


def _check_new(event: Obj) -> None:
    """What events.k8s.io/v1 validation requires of a new Event."""
    name = str((event.get("metadata") or {}).get("name") or "")
    for field, message in (
        ("eventTime", "Required value"),
        ("reportingController", "Required value"),
        ("reportingInstance", "Required value"),
        ("action", "Required value"),
        ("reason", "Required value"),
    ):
        if not event.get(field):
            raise KubeError.invalid(EVENTS_V1, name, field, message)
    if event.get("type") not in ("Normal", "Warning"):
        raise KubeError.invalid(
            EVENTS_V1, name, "type", f'Unsupported value: "{event.get("type", "")}": '
            'supported values: "Normal", "Warning"'
        )  # fmt: skip


def convert_list(listed: Obj) -> Obj:
    return listed | {
        "apiVersion": "events.k8s.io/v1",
        "kind": "EventList",
        "items": [from_core(item) for item in listed.get("items") or []],
    }
