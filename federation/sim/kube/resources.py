"""Built-in resource types the emulator serves, and CRD registration."""

from __future__ import annotations

from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import ResourceType


def _builtin(group: str, plural: str, kind: str, namespaced: bool, *short: str) -> ResourceType:
    return ResourceType(
        group=group,
        version="v1",
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short,
    )


BUILTIN = (
    _builtin("", "namespaces", "Namespace", False, "ns"),
    _builtin("", "services", "Service", True, "svc"),
    _builtin("", "nodes", "Node", False, "no"),
    _builtin("", "secrets", "Secret", True),
    _builtin("", "configmaps", "ConfigMap", True, "cm"),
    _builtin("", "pods", "Pod", True, "po"),
    _builtin("discovery.k8s.io", "endpointslices", "EndpointSlice", True),
    _builtin("coordination.k8s.io", "leases", "Lease", True),
    _builtin("", "events", "Event", True, "ev"),
    _builtin("events.k8s.io", "events", "Event", True, "ev"),  # the same objects (events_v1)
    # Stored and validated against kube's schemas, nothing more: what deploy/
    # holds, so `kubectl apply --dry-run=server -k deploy/...` works here too.
    _builtin("", "serviceaccounts", "ServiceAccount", True, "sa"),
    _builtin("apps", "deployments", "Deployment", True, "deploy"),
    _builtin("rbac.authorization.k8s.io", "roles", "Role", True),
    _builtin("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", True),
    _builtin("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False),
    _builtin("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "crd",
        "crds",
    ),
)

CRD = next(rt for rt in BUILTIN if rt.plural == "customresourcedefinitions")
NAMESPACE = BUILTIN[0]
SERVICE = BUILTIN[1]
NODE = BUILTIN[2]
SECRET = BUILTIN[3]
POD = BUILTIN[5]
ENDPOINT_SLICE = BUILTIN[6]
EVENT = BUILTIN[8]
EVENTS_V1 = BUILTIN[9]


class Registry:
    """Which resource types exist now, by group/version/plural."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTIN:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_kind(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    def find(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get((group, version, plural))
        if rt is None:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if group and version not in out.setdefault(group, []):
                out[group].append(version)
        return out


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition declares."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    scope = spec.get("scope")
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    versions = [v.get("name") for v in served]
    printers = {
        v.get("name"): tuple(
            (str(c.get("name", "")), str(c.get("type") or "string"), int(c.get("priority") or 0),
             str(c.get("jsonPath", "")))
            for c in v.get("additionalPrinterColumns") or []
        )
        for v in served
    }  # fmt: skip
    with_status = {
        v.get("name"): "status"
        in ((v.get("subresources") or {}) | (spec.get("subresources") or {}))
        for v in served
    }
    name = crd.get("metadata", {}).get("name", "")
    if not (group and plural and kind and versions) or scope not in {"Namespaced", "Cluster"}:
        raise KubeError.invalid(
            CRD, name, "spec", "group, names.plural, names.kind, scope and versions are required"
        )
    if name != f"{plural}.{group}":
        raise KubeError.invalid(
            CRD,
            name,
            "metadata.name",
            f'must be spec.names.plural+"."+spec.group ({plural}.{group})',
        )
    return [
        ResourceType(
            group=group,
            version=version,
            plural=plural,
            kind=kind,
            namespaced=scope == "Namespaced",
            singular=names.get("singular", kind.lower()),
            short_names=tuple(names.get("shortNames", [])),
            status_subresource=with_status[version],
            printer_columns=printers[version],
        )
        for version in versions
    ]
