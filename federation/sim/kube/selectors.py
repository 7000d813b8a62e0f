"""Label and field selectors, parsed as the apiserver parses them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from federation.sim.kube.errors import KubeError

_SET = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !exists
    values: frozenset[str]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value in self.values
        if self.op == "!=":
            return not present or value not in self.values
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _parse_label(term: str) -> _Requirement:
    eq = _EQ.match(term)
    if eq:
        key, op, value = eq.groups()
        return _Requirement(key, "!=" if op == "!=" else "=", frozenset({value}))
    found = _SET.match(term)
    if not found:
        raise KubeError.bad_request(f"unable to parse requirement: {term.strip()!r}")
    negated, key, op, values = found.groups()
    if op:
        if negated:
            raise KubeError.bad_request(f"unable to parse requirement: {term.strip()!r}")
        items = frozenset(v.strip() for v in values.split(",") if v.strip())
        return _Requirement(key, op, items)
    return _Requirement(key, "!exists" if negated else "exists", frozenset())


@dataclass(frozen=True, slots=True)
class Selector:
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[_Requirement, ...] = ()

    @classmethod
    def parse(cls, label_selector: str = "", field_selector: str = "") -> Selector:
        labels = tuple(_parse_label(t) for t in _split(label_selector))
        fields = []
        for term in _split(field_selector):
            eq = _EQ.match(term)
            if not eq:
                raise KubeError.bad_request(f"invalid field selector: {term.strip()!r}")
            key, op, value = eq.groups()
            if key not in {"metadata.name", "metadata.namespace"}:
                raise KubeError.bad_request(f'field label not supported: "{key}"')
            fields.append(_Requirement(key, "!=" if op == "!=" else "=", frozenset({value})))
        return cls(labels, tuple(fields))

    def matches(self, meta: dict[str, Any]) -> bool:
        labels = meta.get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        values = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": meta.get("namespace", ""),
        }
        return all(r.matches(values) for r in self.fields)
