"""RBAC for the emulator, as kube-apiserver's RBAC authorizer decides it.

A ``Grant`` is what one ServiceAccount may do, read from manifests
(ClusterRole, Role, ClusterRoleBinding, RoleBinding): a ClusterRole bound
by a ClusterRoleBinding applies in every namespace and to cluster-scoped
objects; a Role (or a ClusterRole) bound by a RoleBinding applies in that
binding's namespace only.  The request's verb, API group, resource,
namespace and name come from its URL, before the resource is looked up,
so a forbidden request is 403 whether or not the resource exists.

The emulator gives such a grant to a second bearer token, so tests run the
agents under the exact permissions deploy/ gives them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from federation.sim.kube.errors import KubeError


@dataclass(frozen=True, slots=True)
class Rule:
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str]  # resourceNames; empty: any

    def allows(self, verb: str, group: str, resource: str, name: str | None) -> bool:
        return (
            (group in self.groups or "*" in self.groups)
            and (resource in self.resources or "*" in self.resources)
            and (verb in self.verbs or "*" in self.verbs)
            and (not self.names or (name is not None and name in self.names))
        )


@dataclass(frozen=True, slots=True)
class Request:
    verb: str
    group: str
    resource: str  # with "/subresource" if any
    namespace: str | None
    name: str | None

    @classmethod
    def of(cls, verb: str, path: str) -> Request | None:
        """None for paths that are not resources (discovery, /version)."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, rest = parts[1], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        return cls(verb, group, resource, namespace, rest[1] if len(rest) > 1 else None)


@dataclass(frozen=True, slots=True)
class Grant:
    user: str  # system:serviceaccount:NAMESPACE:NAME
    cluster_rules: tuple[Rule, ...]
    namespaced_rules: dict[str, tuple[Rule, ...]]

    @classmethod
    def from_manifests(cls, paths: Iterable[Path], namespace: str, account: str) -> Grant:
        documents = [
            d for p in paths for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)
        ]
        roles = {
            (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): tuple(
                _rule(r) for r in d.get("rules") or []
            )
            for d in documents
            if d.get("kind") in ("ClusterRole", "Role")
        }
        cluster: list[Rule] = []
        scoped: dict[str, list[Rule]] = {}
        for d in documents:
            kind = d.get("kind")
            if kind not in ("ClusterRoleBinding", "RoleBinding"):
                continue
            if not any(_is(s, namespace, account) for s in d.get("subjects") or []):
                continue
            ref = d["roleRef"]
            where = d["metadata"].get("namespace") if ref["kind"] == "Role" else None
            rules = roles.get((ref["kind"], where, ref["name"]), ())
            if kind == "ClusterRoleBinding":
                cluster += rules
            else:
                scoped.setdefault(d["metadata"]["namespace"], []).extend(rules)
        user = f"system:serviceaccount:{namespace}:{account}"
        return cls(user, tuple(cluster), {k: tuple(v) for k, v in scoped.items()})

    def allows(self, request: Request) -> bool:
        rules = self.cluster_rules
        if request.namespace is not None:
            rules += self.namespaced_rules.get(request.namespace, ())
        return any(
            r.allows(request.verb, request.group, request.resource, request.name) for r in rules
        )

    def check(self, request: Request) -> None:
        """Raise 403 Forbidden, worded as kube-apiserver words it."""
        if self.allows(request):
            return
        what = f'{request.resource} "{request.name}"' if request.name else request.resource
        where = f' in the namespace "{request.namespace}"' if request.namespace else ""
        scope = "" if request.namespace else " at the cluster scope"
        raise KubeError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{self.user}" cannot {request.verb} resource '
            f'"{request.resource}" in API group "{request.group}"{where}{scope}',
        )


def _rule(raw: dict[str, Any]) -> Rule:
    return Rule(
        frozenset(raw.get("apiGroups") or []),
        frozenset(raw.get("resources") or []),
        frozenset(raw.get("verbs") or []),
        frozenset(raw.get("resourceNames") or []),
    )


def _is(subject: dict[str, Any], namespace: str, account: str) -> bool:
    return bool(
        subject.get("kind") == "ServiceAccount"
        and subject.get("name") == account
        and subject.get("namespace") == namespace
    )


__all__ = ["Grant", "Request", "Rule"]
