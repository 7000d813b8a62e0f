"""Field ownership and server-side apply, as kube-apiserver tracks them.

Every write records which manager set which fields, in
``metadata.managedFields`` (FieldsV1, as structured-merge-diff writes it):

- an update (create, PUT, the three patches) gives its manager the fields it
  changed and takes them from everyone else, without conflicts;
- an apply (``application/apply-patch+yaml``) declares the manager's whole
  intent: fields it no longer sets are removed unless someone else owns
  them, and setting a field another manager owns to a different value is a
  409 naming that manager, unless ``force=true`` takes it.

The schema says how to merge: lists are atomic, sets or maps by key
(``x-kubernetes-list-type``/``-list-map-keys``, or a built-in kind's patch
merge key); objects and maps are granular unless ``x-kubernetes-map-type:
atomic``.  Status is the status subresource's business and is not tracked.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import Obj, ResourceType, now_rfc3339
from federation.sim.kube.openapi import resolve

Path = tuple[str, ...]  # FieldsV1 keys: "f:spec", 'k:{"port":80,"protocol":"TCP"}', "v:1", "."
ITEM = "."
_UNTRACKED_META = {
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
}  # fmt: skip
_KEY_DEFAULTS = {"protocol": "TCP"}  # a list-map key kube defaults before keying


# -- field sets ---------------------------------------------------------------


def fields_of(obj: Obj, schema: dict[str, Any]) -> set[Path]:
    """The fields an object sets, as paths."""
    out: set[Path] = set()
    props = resolve(schema).get("properties") or {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata" and isinstance(value, dict):
            meta = {k: v for k, v in value.items() if k not in _UNTRACKED_META}
            if meta:
                _walk(meta, props.get("metadata", {}), ("f:metadata",), out)
        else:
            _walk(value, props.get(key, {}), (f"f:{key}",), out)
    return out


def _walk(value: Any, schema: Any, path: Path, out: set[Path]) -> None:
    schema = resolve(schema)
    if isinstance(value, dict) and value and schema.get("x-kubernetes-map-type") != "atomic":
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = props.get(key) if key in props else extra if isinstance(extra, dict) else {}
            _walk(item, child, (*path, f"f:{key}"), out)
        return
    if isinstance(value, list) and value:
        kind, keys = list_type(schema)
        if kind == "map":
            for item in value:
                item_path = (*path, item_key(item, keys))
                out.add((*item_path, ITEM))
                _walk(item, schema.get("items", {}), item_path, out)
            return
        if kind == "set":
            out.update((*path, "v:" + _canonical(item)) for item in value)
            return
    out.add(path)  # a leaf: a scalar, an atomic list or map, or an empty one


def list_type(schema: dict[str, Any]) -> tuple[str, list[str]]:
    """How a list merges: ("map", keys), ("set", []) or ("atomic", [])."""
    kind = schema.get("x-kubernetes-list-type")
    if kind == "map":
        return "map", list(schema.get("x-kubernetes-list-map-keys") or [])
    if kind in ("set", "atomic"):
        return kind, []
    merge_key = schema.get("x-kubernetes-patch-merge-key")
    if merge_key and schema.get("x-kubernetes-patch-strategy", "").startswith("merge"):
        return "map", [merge_key]
    return "atomic", []


def item_key(item: Any, keys: list[str]) -> str:
    if not isinstance(item, dict):
        return "v:" + _canonical(item)
    found = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + _canonical({k: v for k, v in found.items() if v is not None})


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in (tree or {}).items():
        path = (*prefix, key)
        if child:
            out |= from_fields_v1(child, path)
        else:
            out.add(path)
    return out


# -- reading and changing objects by path -------------------------------------


_MISSING = object()


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for part in path:
        if part == ITEM:
            return node
        node = _child(node, part)
        if node is _MISSING:
            return _MISSING
    return node


def _child(node: Any, part: str) -> Any:
    if part.startswith("f:") and isinstance(node, dict):
        return node.get(part[2:], _MISSING)
    if isinstance(node, list):
        for item in node:
            if _matches(item, part):
                return item
    return _MISSING


def _matches(item: Any, part: str) -> bool:
    if part.startswith("v:"):
        return _canonical(item) == part[2:]
    if part.startswith("k:") and isinstance(item, dict):
        wanted = json.loads(part[2:])
        return all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in wanted.items())
    return False


def remove_at(obj: Any, path: Path) -> None:
    """Remove one field (or list item, for a path ending in ".")."""
    if path and path[-1] == ITEM:
        path = path[:-1]
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        parent[:] = [item for item in parent if not _matches(item, last)]


def merge(live: Any, applied: Any, schema: Any) -> Any:
    """``applied`` laid over ``live`` as the schema merges."""
    schema = resolve(schema)
    if isinstance(applied, dict) and isinstance(live, dict):
        if schema.get("x-kubernetes-map-type") == "atomic":
            return copy.deepcopy(applied)
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = copy.deepcopy(live)
        for key, value in applied.items():
            child = props.get(key) if key in props else extra if isinstance(extra, dict) else {}
            out[key] = merge(live.get(key), value, child)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = list_type(schema)
        if kind == "map":
            out_items = copy.deepcopy(live)
            for item in applied:
                key = item_key(item, keys)
                at = next((i for i, old in enumerate(out_items) if _matches(old, key)), None)
                if at is None:
                    out_items.append(copy.deepcopy(item))
                else:
                    out_items[at] = merge(out_items[at], item, schema.get("items", {}))
            return out_items
        if kind == "set":
            return copy.deepcopy(live) + [copy.deepcopy(v) for v in applied if v not in live]
    return copy.deepcopy(applied)


# -- managers -----------------------------------------------------------------


class Managed:
    """One object's managedFields: manager and operation to field set."""

    def __init__(self, obj: Obj) -> None:
        self.entries: list[dict[str, Any]] = []
        self.sets: list[set[Path]] = []
        for entry in (obj.get("metadata") or {}).get("managedFields") or []:
            if entry.get("subresource"):
                continue  # a status writer's: kept as it is
            self.entries.append(entry)
            self.sets.append(from_fields_v1(entry.get("fieldsV1")))
        self.kept = [
            e
            for e in (obj.get("metadata") or {}).get("managedFields") or []
            if e.get("subresource")
        ]

    def owners(self, path: Path, *, besides: tuple[str, str] | None = None) -> list[str]:
        return [
            e["manager"] for e, s in zip(self.entries, self.sets, strict=True)
            if path in s and (e["manager"], e["operation"]) != besides
        ]  # fmt: skip

    def take(self, manager: str, operation: str, api_version: str, paths: set[Path],
             *, apply: bool) -> None:  # fmt: skip
        """Give ``paths`` to (manager, operation).  An update takes them from
        everyone else; an apply makes them its whole set and shares them
        with whoever else holds the same values."""
        mine = None
        for i, entry in enumerate(self.entries):
            if (entry["manager"], entry["operation"]) == (manager, operation):
                mine = i
            elif not apply:
                self.sets[i] = self.sets[i] - paths
        if mine is None:
            self.entries.append({"manager": manager, "operation": operation})
            self.sets.append(set())
            mine = len(self.entries) - 1
        wanted = set(paths) if apply else self.sets[mine] | paths
        if wanted != self.sets[mine] or "time" not in self.entries[mine]:
            self.entries[mine] = {
                "manager": manager, "operation": operation, "apiVersion": api_version,
                "time": now_rfc3339(), "fieldsType": "FieldsV1",
            }  # fmt: skip
        self.sets[mine] = wanted

    def drop(self, paths: set[Path]) -> None:
        self.sets = [s - paths for s in self.sets]

    def write(self, obj: Obj) -> None:
        entries = []
        for entry, paths in zip(self.entries, self.sets, strict=True):
            if paths:
                entries.append(entry | {"fieldsV1": to_fields_v1(paths)})
        obj.setdefault("metadata", {})["managedFields"] = entries + self.kept


def track_update(rt: ResourceType, schema: dict[str, Any], live: Obj | None, new: Obj,
                 manager: str) -> None:  # fmt: skip
    """Record an update's fields in ``new``'s managedFields."""
    sent = (new.get("metadata") or {}).get("managedFields")
    base = live if live is not None and sent != [] else {}
    managed = Managed(base or {})
    before = fields_of(live, schema) if live is not None else set()
    after = fields_of(new, schema)
    changed = {
        p for p in after
        if p not in before or (p[-1] != ITEM and value_at(new, p) != value_at(live, p))
    }  # fmt: skip
    managed.drop(before - after)
    if changed or live is None:
        managed.take(manager, "Update", rt.api_version, changed, apply=False)
    managed.write(new)


def apply(rt: ResourceType, schema: dict[str, Any], live: Obj | None, applied: Obj,
          manager: str, *, force: bool) -> Obj:  # fmt: skip
    """The object after ``manager`` applies ``applied`` to ``live``."""
    if not manager:
        raise KubeError.bad_request(
            "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests"
        )
    if applied.get("apiVersion") != rt.api_version or applied.get("kind") != rt.kind:
        raise KubeError.bad_request(
            f"apply: the object must name apiVersion {rt.api_version!r} and kind {rt.kind!r}"
        )
    applied = {k: v for k, v in applied.items() if k != "status"}
    wanted = fields_of(applied, schema)
    if live is None:
        created = copy.deepcopy(applied)
        managed = Managed({})
        managed.take(manager, "Apply", rt.api_version, wanted, apply=True)
        managed.write(created)
        return created
    managed = Managed(live)
    me = (manager, "Apply")
    conflicts = [
        (owner, path) for path in sorted(wanted) if path[-1] != ITEM
        and value_at(live, path) is not _MISSING
        and value_at(live, path) != value_at(applied, path)
        for owner in managed.owners(path, besides=me)
    ]  # fmt: skip
    if conflicts and not force:
        raise _conflict(rt, live, conflicts)
    mine = next(
        (s for e, s in zip(managed.entries, managed.sets, strict=True)
         if (e["manager"], e["operation"]) == me), set(),
    )  # fmt: skip
    kept = copy.deepcopy(live)
    for path in sorted(mine - wanted, key=len, reverse=True):
        if not _owned_below(managed, path, me):
            remove_at(kept, path)
    result: Obj = merge(kept, applied, schema)
    managed.drop({path for _, path in conflicts})  # forced: theirs no more
    managed.take(manager, "Apply", rt.api_version, wanted, apply=True)
    managed.write(result)
    result["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    return result


def _owned_below(managed: Managed, path: Path, me: tuple[str, str]) -> bool:
    """Whether anyone besides ``me`` owns the field (or list item) or
    something inside it."""
    item = path[:-1] if path[-1] == ITEM else path
    return any(
        s_path[: len(item)] == item
        for e, s in zip(managed.entries, managed.sets, strict=True)
        if (e["manager"], e["operation"]) != me
        for s_path in s
    )


def _conflict(rt: ResourceType, live: Obj, conflicts: list[tuple[str, Path]]) -> KubeError:
    causes = [
        {"reason": "FieldManagerConflict", "message": f'conflict with "{owner}" using {rt.api_version}',
         "field": _readable(path)}
        for owner, path in conflicts
    ]  # fmt: skip
    lines = [f"{c['message']}: {c['field']}" for c in causes]
    count = f"{len(causes)} conflict" + ("s" if len(causes) > 1 else "")
    message = f"Apply failed with {count}: " + (
        lines[0] if len(lines) == 1 else "\n" + "\n".join(f"- {line}" for line in lines)
    )
    details = {"name": live["metadata"]["name"], "group": rt.group, "kind": rt.plural,
               "causes": causes}  # fmt: skip
    return KubeError(409, "Conflict", message, details)


def _readable(path: Path) -> str:
    """A path as kube prints it in conflicts: .spec.ports[port=80,protocol="TCP"].targetPort"""
    out = ""
    for part in path:
        if part.startswith("f:"):
            out += "." + part[2:]
        elif part.startswith("k:"):
            keys = json.loads(part[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif part.startswith("v:"):
            out += f"[={part[2:]}]"
    return out
