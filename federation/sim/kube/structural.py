"""A custom resource's values against its CRD's structural schema, as
kube-apiserver 1.26 checks them: defaults filled in (``default``), then
``type``, ``enum``, ``required``, bounds, lengths, item counts and
``pattern``, every failure a cause of one 422 with kube's field path and
message.  CEL rules (``x-kubernetes-validations``) and ``format`` are not
checked."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import ResourceType

Schema = dict[str, Any]
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}
_JSON_TYPES = {
    str: "string", int: "integer", float: "number", bool: "boolean",
    dict: "object", list: "array", type(None): "null",
}  # fmt: skip


def defaulted(value: Any, schema: Schema) -> Any:
    """``value`` with the schema's defaults filled in where a field is absent."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = defaulted(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [defaulted(item, schema["items"]) for item in value]
    return value


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool) else "{...}"


@functools.lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _of_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def causes(value: Any, schema: Schema, path: str = "") -> list[dict[str, str]]:
    """What kube would say about ``value`` (at ``path``), as Status causes."""
    found: list[dict[str, str]] = []

    def add(reason: str, message: str) -> None:
        found.append({"reason": reason, "message": f"{path}: {message}", "field": path})

    if schema.get("x-kubernetes-int-or-string") and isinstance(value, int | str):
        return found
    kind = schema.get("type")
    if kind and not _of_type(value, kind):
        got = _JSON_TYPES.get(type(value), "unknown")
        add("FieldValueTypeInvalid",
            f'Invalid value: "{got}": {path} in body must be of type {kind}: "{got}"')  # fmt: skip
        return found
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        add(
            "FieldValueNotSupported",
            f"Unsupported value: {_show(value)}: supported values: {supported}",
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "maximum" in schema and value > schema["maximum"]:
            add("FieldValueInvalid", f"Invalid value: {value}: {path} in body should be "
                f"less than or equal to {schema['maximum']}")  # fmt: skip
        if "minimum" in schema and value < schema["minimum"]:
            add("FieldValueInvalid", f"Invalid value: {value}: {path} in body should be "
                f"greater than or equal to {schema['minimum']}")  # fmt: skip
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            add("FieldValueTooLong", f"Too long: may not be longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            add("FieldValueInvalid", f"Invalid value: {_show(value)}: {path} in body should be "
                f"at least {schema['minLength']} chars long")  # fmt: skip
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            add("FieldValueInvalid", f"Invalid value: {_show(value)}: {path} in body should "
                f"match '{schema['pattern']}'")  # fmt: skip
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            add("FieldValueTooMany", f"Too many: {len(value)}: must have at most "
                f"{schema['maxItems']} items")  # fmt: skip
        if "minItems" in schema and len(value) < schema["minItems"]:
            add("FieldValueInvalid", f"Invalid value: {len(value)}: {path} in body should "
                f"have at least {schema['minItems']} items")  # fmt: skip
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                found += causes(item, items, f"{path}[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                where = f"{path}.{key}" if path else key
                found.append(
                    {
                        "reason": "FieldValueRequired",
                        "message": f"{where}: Required value",
                        "field": where,
                    }
                )
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None and not (path == "" and key in ("apiVersion", "kind", "metadata")):
                found += causes(item, sub, f"{path}.{key}" if path else key)
    return found


def check(rt: ResourceType, obj: Any, schema: Schema) -> Any:
    """The custom resource with its defaults, or the 422 kube answers."""
    obj = defaulted(obj, schema)
    found = causes(obj, schema)
    if found:
        name = str((obj.get("metadata") or {}).get("name", ""))
        what = f"{rt.kind}.{rt.group}"
        listed = [c["message"] for c in found]
        text = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
        raise KubeError(
            422,
            "Invalid",
            f'{what} "{name}" is invalid: {text}',
            {"name": name, "group": rt.group, "kind": rt.kind, "causes": found},
        )
    return obj


__all__ = ["causes", "check", "defaulted"]
