"""The emulator's OpenAPI, as kube-apiserver 1.26 serves it.

Built-in kinds get kube 1.26's own schemas, loaded from the copy of the
upstream definitions that ``kubernetes-validate`` (a maintained package)
ships, not written here; each CRD version gets its ``openAPIV3Schema``.
The same schemas serve three purposes:

- ``/openapi/v2`` and ``/openapi/v3`` (the root and one document per
  group/version), so kubectl validates, explains and patches as it does
  against a real server;
- field validation (``fieldValidation=Strict|Warn|Ignore``, Warn when the
  request says nothing, as since 1.23): fields a schema does not declare are
  errors, warnings or silently dropped;
- pruning: what a schema does not declare is never stored, as the real
  server's decoding (built-in kinds) and structural pruning (CRDs) drop it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.resources
import json
from collections.abc import Callable, Iterable
from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import Obj, ResourceType

KUBE_VERSION = "v1.26.0"
_SCHEMAS = f"kubernetes-json-schema/{KUBE_VERSION}-local/_definitions.json"
_V2_REF = "#/definitions/"
_V3_REF = "#/components/schemas/"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
VALIDATION_MODES = ("Ignore", "Warn", "Strict")


# -- kube's own definitions ---------------------------------------------------


@functools.cache
def upstream() -> dict[str, Any]:
    """kube 1.26's definitions, as OpenAPI v2 schemas (refs to #/definitions/)."""
    source = importlib.resources.files("kubernetes_validate").joinpath(_SCHEMAS)
    return {
        name: _from_json_schema(schema)
        for name, schema in json.loads(source.read_text())["$defs"].items()
    }


def _from_json_schema(node: Any) -> Any:
    """One JSON Schema (2020-12, as converted upstream) back to OpenAPI: no
    type lists, no "null", int-or-string as kube writes it, refs to
    #/definitions/, and no enums the converter added to apiVersion/kind."""
    if isinstance(node, list):
        return [_from_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "oneOf" in node and all(set(o) == {"type"} for o in node["oneOf"]):
        kinds = {t for o in node["oneOf"] for t in _types(o["type"])}
        if "integer" in kinds:
            return {"type": "string", "format": "int-or-string"}
        return {"type": "string"}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = _V2_REF + value.rsplit("/", 1)[-1]
        elif key == "type":
            out[key] = _types(value)[0]
        elif key == "properties":
            out[key] = {
                name: _strip_enum(name, _from_json_schema(schema)) for name, schema in value.items()
            }
        else:
            out[key] = _from_json_schema(value)
    return out


def _types(value: Any) -> list[str]:
    kinds = value if isinstance(value, list) else [value]
    return [t for t in kinds if t != "null"] or ["object"]


def _strip_enum(name: str, schema: Any) -> Any:
    if name in ("apiVersion", "kind") and isinstance(schema, dict):
        schema.pop("enum", None)
    return schema


@functools.cache
def _by_kind() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for name, schema in upstream().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            found.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return found


def builtin_name(rt: ResourceType, kind: str | None = None) -> str | None:
    """The definition kube names for a built-in kind (or its List)."""
    return _by_kind().get((rt.group, rt.version, kind or rt.kind))


def crd_name(rt: ResourceType, kind: str | None = None) -> str:
    """A CRD kind's definition name, as kube builds it: the group reversed."""
    group = ".".join(reversed(rt.group.split(".")))
    return f"{group}.{rt.version}.{kind or rt.kind}"


def crd_schema(rt: ResourceType, crd: Obj) -> dict[str, Any]:
    """A CRD version's schema as kube publishes it: its openAPIV3Schema with
    apiVersion, kind and metadata (kube's ObjectMeta) filled in."""
    versions: list[dict[str, Any]] = crd.get("spec", {}).get("versions") or []
    version = next((v for v in versions if v.get("name") == rt.version), {})
    schema = copy.deepcopy((version.get("schema") or {}).get("openAPIV3Schema") or {})
    schema.setdefault("type", "object")
    props = schema.setdefault("properties", {})
    status = upstream()[_META + "Status"]["properties"]  # its apiVersion and kind are kube's own
    props["apiVersion"] = copy.deepcopy(status["apiVersion"])
    props["kind"] = copy.deepcopy(status["kind"])
    props["metadata"] = {"$ref": _V2_REF + _OBJECT_META}
    schema["x-kubernetes-group-version-kind"] = [_gvk(rt)]
    return schema


def _gvk(rt: ResourceType, kind: str | None = None) -> dict[str, str]:
    return {"group": rt.group, "version": rt.version, "kind": kind or rt.kind}


# -- documents ---------------------------------------------------------------


class Documents:
    """The OpenAPI documents for what is served now: built-in kinds and the
    CRDs established.  ``crd_of`` gives a CRD kind's CRD object (None for
    a built-in kind)."""

    def __init__(self, types: Iterable[ResourceType], crd_of: Callable[[ResourceType], Obj | None]):
        self.definitions: dict[str, Any] = {}
        self.paths: dict[str, dict[str, Any]] = {}  # group/version -> path -> item
        for rt in types:
            crd = crd_of(rt)
            if crd is None:
                name = builtin_name(rt)
                if name is None:
                    continue
                self._include(name)
                list_name = builtin_name(rt, rt.kind + "List")
                if list_name:
                    self._include(list_name)
            else:
                name = crd_name(rt)
                self.definitions[name] = crd_schema(rt, crd)
                list_name = crd_name(rt, rt.kind + "List")
                self.definitions[list_name] = _list_schema(rt, name)
                self._include(_OBJECT_META)
            self.paths.setdefault(_gv_path(rt), {}).update(_paths(rt, name, list_name))
        for name in ("Status", "DeleteOptions", "WatchEvent", "Patch", "APIResourceList"):
            self._include(_META + name)

    def _include(self, name: str) -> None:
        """A definition and everything it refers to."""
        pending = [name]
        while pending:
            current = pending.pop()
            if current in self.definitions or current not in upstream():
                continue
            schema = upstream()[current]
            self.definitions[current] = schema
            pending.extend(_refs(schema))

    def v2(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for items in self.paths.values():
            paths.update(items)
        return {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": KUBE_VERSION},
            "paths": paths,
            "definitions": self.definitions,
            "securityDefinitions": {
                "BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}
            },
            "security": [{"BearerToken": []}],
        }

    def v3_root(self) -> dict[str, Any]:
        return {
            "paths": {
                gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_hash(self.v3(gv))}"}
                for gv in sorted(self.paths)
            }
        }

    def v3(self, gv: str) -> dict[str, Any]:
        """The OpenAPI v3 document of one group/version ("api/v1", "apis/g/v")."""
        items = self.paths.get(gv)
        if items is None:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        wanted: set[str] = set()
        for item in items.values():
            wanted.update(_refs(item))
        closure: dict[str, Any] = {}
        pending = list(wanted)
        while pending:
            name = pending.pop()
            if name in closure or name not in self.definitions:
                continue
            closure[name] = self.definitions[name]
            pending.extend(_refs(closure[name]))
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBE_VERSION},
            "paths": {path: _v3_item(item) for path, item in items.items()},
            "components": {
                "schemas": {name: _v3_refs(s) for name, s in sorted(closure.items())},
                "securitySchemes": {
                    "BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}
                },
            },
        }


def _hash(doc: Any) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()[:128]


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _v3_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace(_V2_REF, _V3_REF) if k == "$ref" and isinstance(v, str) else _v3_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_v3_refs(n) for n in node]
    return node


def _list_schema(rt: ResourceType, item: str) -> dict[str, Any]:
    return {
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": _V2_REF + item}},
            "metadata": {"$ref": _V2_REF + _META + "ListMeta"},
        },
        "x-kubernetes-group-version-kind": [_gvk(rt, rt.kind + "List")],
    }


def _gv_path(rt: ResourceType) -> str:
    return f"apis/{rt.group}/{rt.version}" if rt.group else "api/v1"


def _paths(rt: ResourceType, name: str, list_name: str | None) -> dict[str, Any]:
    """kube's paths for one kind: the collection, the object and its status,
    each operation with its action, group/version/kind and query parameters."""
    base = "/" + _gv_path(rt)
    scope = f"{base}/namespaces/{{namespace}}" if rt.namespaced else base
    ref, list_ref = _V2_REF + name, _V2_REF + (list_name or name)
    ns = [{"name": "namespace", "in": "path", "required": True, "type": "string"}] * rt.namespaced
    named = [*ns, {"name": "name", "in": "path", "required": True, "type": "string"}]

    def op(action: str, verb: str, schema: str, *, params: tuple[str, ...] = ()) -> dict[str, Any]:
        return {
            "operationId": f"{verb}{rt.kind}",
            "consumes": ["*/*"] if verb == "patch" else ["application/json"],
            "produces": ["application/json"],
            "parameters": [_query(p) for p in params],
            "responses": {"200": {"description": "OK", "schema": {"$ref": schema}}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": _gvk(rt),
        }

    def body(operation: dict[str, Any]) -> dict[str, Any]:
        schema = (
            {"$ref": _V2_REF + _META + "Patch"} if operation["x-kubernetes-action"] == "patch"
            else {"$ref": ref}
        )  # fmt: skip
        operation["parameters"].insert(
            0, {"name": "body", "in": "body", "required": True, "schema": schema}
        )
        return operation

    collection = {
        "get": op("list", "list", list_ref, params=("labelSelector", "fieldSelector", "limit",
                                                     "continue", "resourceVersion", "watch")),
        "post": body(op("post", "create", ref, params=_WRITE_PARAMS)),
        "parameters": ns,
    }  # fmt: skip
    item = {
        "get": op("get", "read", ref),
        "put": body(op("put", "replace", ref, params=_WRITE_PARAMS)),
        "patch": body(op("patch", "patch", ref, params=(*_WRITE_PARAMS, "force"))),
        "delete": op("delete", "delete", _V2_REF + _META + "Status", params=("dryRun",)),
        "parameters": named,
    }
    out = {f"{scope}/{rt.plural}": collection, f"{scope}/{rt.plural}/{{name}}": item}
    if rt.status_subresource is not False:
        status = {k: v for k, v in item.items() if k in ("get", "put", "patch", "parameters")}
        out[f"{scope}/{rt.plural}/{{name}}/status"] = copy.deepcopy(status)
    return out


def _query(name: str) -> dict[str, Any]:
    kind = {"limit": "integer", "watch": "boolean", "force": "boolean"}.get(name, "string")
    return {"name": name, "in": "query", "type": kind, "uniqueItems": True}


def _v3_item(item: dict[str, Any]) -> dict[str, Any]:
    """A v2 path item in v3's shape: parameters with schemas, bodies and
    responses with content."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key == "parameters":
            out[key] = [_v3_param(p) for p in value]
            continue
        operation = {k: v for k, v in value.items() if k not in ("consumes", "produces")}
        params = [p for p in value["parameters"] if p["in"] != "body"]
        bodies = [p for p in value["parameters"] if p["in"] == "body"]
        operation["parameters"] = [_v3_param(p) for p in params]
        if bodies:
            media = value["consumes"] if key != "patch" else [
                "application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml",
            ]  # fmt: skip
            schema = _v3_refs(bodies[0]["schema"])
            operation["requestBody"] = {
                "content": {m: {"schema": schema} for m in media},
                "required": True,
            }
        operation["responses"] = {
            code: {
                "description": r["description"],
                "content": {"application/json": {"schema": _v3_refs(r["schema"])}},
            }
            for code, r in value["responses"].items()
        }
        out[key] = operation
    return out


def _v3_param(param: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in param.items() if k not in ("type",)}
    out["schema"] = {"type": param.get("type", "string"), "uniqueItems": True}
    return out


# -- field validation and pruning --------------------------------------------


def resolve(schema: Any) -> dict[str, Any]:
    """A schema with its $refs (to kube's definitions) followed."""
    while isinstance(schema, dict) and "$ref" in schema:
        schema = upstream().get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema if isinstance(schema, dict) else {}


class Fields:
    """What one object holds that its schema does not declare."""

    def __init__(self, schema: dict[str, Any], *, structural: bool) -> None:
        self.schema = schema
        self.structural = structural  # a CRD's: undeclared fields are pruned

    def prune(self, obj: Obj) -> tuple[Obj, list[str]]:
        """The object without undeclared fields, and their paths."""
        unknown: list[str] = []
        pruned = self._walk(obj, self.schema, "", unknown, self.structural)
        return pruned, unknown

    def _walk(
        self, value: Any, schema: Any, path: str, unknown: list[str], structural: bool
    ) -> Any:
        while isinstance(schema, dict) and "$ref" in schema:
            schema = upstream().get(schema["$ref"].rsplit("/", 1)[-1], {})
            structural = False  # kube's own types, such as ObjectMeta inside a CRD
        if not isinstance(schema, dict):
            return value
        if isinstance(value, list):
            items = schema.get("items")
            return [
                self._walk(v, items, f"{path}[{i}]", unknown, structural)
                for i, v in enumerate(value)
            ]
        if not isinstance(value, dict):
            return value
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        if props is None and extra is None and not structural:
            return value  # a free-form object of kube's (FieldsV1, RawExtension, JSON)
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if props and key in props:
                out[key] = self._walk(item, props[key], where, unknown, structural)
            elif isinstance(extra, dict):
                out[key] = self._walk(item, extra, where, unknown, structural)
            elif keep:
                out[key] = item
            else:
                unknown.append(where)
        return out


def check_fields(
    rt: ResourceType, obj: Obj, fields: Fields | None, mode: str
) -> tuple[Obj, list[str]]:
    """Apply ``fieldValidation``: the object to store and the warnings to
    send, or a 400 in Strict mode naming every undeclared field."""
    if mode not in VALIDATION_MODES:
        raise KubeError.bad_request(
            f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Strict", "Warn"'
        )
    if fields is None:
        return obj, []
    pruned, unknown = fields.prune(obj)
    found = [f'unknown field "{path}"' for path in unknown]
    if found and mode == "Strict":
        raise KubeError.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {', '.join(found)}"
        )
    return pruned, found if mode == "Warn" else []
