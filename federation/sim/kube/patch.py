"""The three patch types: JSON merge patch (RFC 7386), JSON patch (RFC
6902), and strategic merge patch for the list fields the project's objects
use (lists of objects merged by their ``name``, ``port`` or ``ip`` key)."""

from __future__ import annotations

import copy
from typing import Any

from federation.sim.kube.errors import KubeError

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

# The groups whose kinds take strategic merge patches (kube's compiled-in types).
STRATEGIC_GROUPS = frozenset(
    {
        "",
        "apps",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "rbac.authorization.k8s.io",
    }
)
_MERGE_KEYS = ("name", "port", "ip", "containerPort", "type")


def patched(current: Any, content_type: str, body: Any, *, strategic: bool) -> Any:
    """``current`` after a patch of one of the three types (``strategic``:
    whether the kind takes strategic merge patches, as built-in kinds do)."""
    if content_type == JSON:
        return json_patch(current, body)
    if content_type == MERGE:
        return merge_patch(current, body)
    if content_type == STRATEGIC:
        if not strategic:
            raise KubeError(
                415, "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                f"include: {JSON}, {MERGE}, {APPLY}",
            )  # fmt: skip
        return strategic_merge_patch(current, body)
    raise KubeError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if isinstance(patch, list) and isinstance(target, list):
        return _merge_lists(target, patch)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # directives such as $setElementOrder: order is not modelled
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_lists(target: list[Any], patch: list[Any]) -> list[Any]:
    key = _merge_key(target + patch)
    if key is None:
        return copy.deepcopy(patch)
    merged = {item[key]: item for item in copy.deepcopy(target)}
    for item in patch:
        if item.get("$patch") == "delete":
            merged.pop(item.get(key), None)
        else:
            merged[item[key]] = strategic_merge_patch(merged.get(item[key]), item)
    return list(merged.values())


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise KubeError.bad_request("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        doc = _apply_op(doc, op)
    return doc


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KubeError.bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _apply_op(doc: Any, op: Any) -> Any:
    try:
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "test":
            node = doc
            for part in parts:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if node != op["value"]:
                raise KubeError(422, "Invalid", f"test operation failed at {op['path']}")
            return doc
        if kind in {"move", "copy"}:
            source = _pointer(op["from"])
            value = _get(doc, source)
            if kind == "move":
                doc = _apply_op(doc, {"op": "remove", "path": op["from"]})
            return _apply_op(doc, {"op": "add", "path": op["path"], "value": value})
        if not parts:
            return copy.deepcopy(op["value"]) if kind in {"add", "replace"} else None
        parent, last = _parent(doc, parts), parts[-1]
        if kind == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            elif last in parent:
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise KeyError(last)
        else:
            raise KubeError.bad_request(f"unknown JSON patch operation {kind!r}")
        return doc
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise KubeError(422, "Invalid", f"JSON patch {op!r} cannot be applied: {err}") from None


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return copy.deepcopy(node)
