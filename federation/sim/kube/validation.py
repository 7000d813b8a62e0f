"""The validation a real apiserver applies to the fields the project writes.

Not the whole of Kubernetes: object names, labels, Services, EndpointSlices,
Secrets/ConfigMaps keys, Leases.  Each failure is a 422 naming the field.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from federation.model.addresses import refused_by_kubernetes
from federation.model.validation import DNS1123_LABEL, DNS1123_SUBDOMAIN, LABEL_NAME, LABEL_VALUE
from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import ResourceType

_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_LABEL_NAMES = {"namespaces", "services"}  # resources whose names are DNS-1123/1035 labels


class _Check:
    def __init__(self, rt: ResourceType, name: str) -> None:
        self.rt, self.name = rt, name

    def fail(self, path: str, message: str) -> None:
        raise KubeError.invalid(self.rt, self.name, path, message)


def validate(rt: ResourceType, obj: dict[str, Any], *, loopback_endpoints: bool = False) -> None:
    """Refuse what kube-apiserver 1.26 refuses.  ``loopback_endpoints``
    is the one documented relaxation: simulated clusters run their pods on
    127/8, so their emulator lets EndpointSlices hold loopback addresses;
    a bare emulator is as strict as the real apiserver."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise KubeError.bad_request("metadata must be an object")
    name = str(meta.get("name", ""))
    check = _Check(rt, name)
    _validate_name(check, rt, name)
    for key, value in (meta.get("labels") or {}).items():
        _validate_label(check, key, value)
    if rt.key == "discovery.k8s.io/endpointslices":
        _endpoint_slice(check, obj, loopback_endpoints)
        return
    handler = _KIND_CHECKS.get(rt.key)
    if handler is not None:
        handler(check, obj)


def _validate_name(check: _Check, rt: ResourceType, name: str) -> None:
    if rt.plural in _LABEL_NAMES:
        if len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
            check.fail(
                "metadata.name",
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
            )
        if rt.plural == "services" and not name[0].isalpha():
            check.fail("metadata.name", "a DNS-1035 label must start with an alphabetic character")
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name):
        check.fail(
            "metadata.name",
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        )


def _validate_label(check: _Check, key: Any, value: Any) -> None:
    path = f"metadata.labels[{key}]"
    prefix, _, label = str(key).rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        check.fail(path, "prefix part must be a DNS subdomain")
    if len(label) > 63 or not LABEL_NAME.fullmatch(label):
        check.fail(path, "name part must consist of alphanumeric characters, '-', '_' or '.'")
    if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
        check.fail(
            path, f"Invalid value: {value!r}: a valid label value must be 63 characters or less"
        )


def _validate_port_name(check: _Check, path: str, name: Any, required: bool) -> None:
    if name in (None, "") and not required:
        return
    if not isinstance(name, str) or len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
        check.fail(path, f"Invalid value: {name!r}: must be a DNS label")


def _validate_port(check: _Check, path: str, port: Any) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        check.fail(path, f"Invalid value: {port!r}: must be between 1 and 65535, inclusive")


def _service(check: _Check, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    if kind not in {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}:
        check.fail("spec.type", f"Unsupported value: {kind!r}")
    ports = spec.get("ports") or []
    for i, port in enumerate(ports):
        _validate_port_name(check, f"spec.ports[{i}].name", port.get("name"), len(ports) > 1)
        _validate_port(check, f"spec.ports[{i}].port", port.get("port"))
        if port.get("protocol", "TCP") not in {"TCP", "UDP", "SCTP"}:
            check.fail(f"spec.ports[{i}].protocol", f"Unsupported value: {port.get('protocol')!r}")
        node_port = port.get("nodePort")
        if node_port is not None and kind == "ClusterIP":
            check.fail(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'")
    if kind != "ExternalName" and not ports and spec.get("clusterIP") != "None":
        check.fail("spec.ports", "Required value")


def _endpoint_slice(check: _Check, obj: dict[str, Any], loopback: bool) -> None:
    family = obj.get("addressType")
    if family not in {"IPv4", "IPv6", "FQDN"}:
        check.fail(
            "addressType",
            f'Unsupported value: {family!r}: supported values: "FQDN", "IPv4", "IPv6"',
        )
    endpoints = obj.get("endpoints") or []
    if len(endpoints) > 1000:
        check.fail("endpoints", "Too many: must have at most 1000 items")
    for i, endpoint in enumerate(endpoints):
        addresses = endpoint.get("addresses") or []
        if len(addresses) != 1:
            check.fail(
                f"endpoints[{i}].addresses", "Required value: must contain exactly 1 address"
            )
        for j, address in enumerate(addresses):
            _validate_address(check, f"endpoints[{i}].addresses[{j}]", family, address, loopback)
    for i, port in enumerate(obj.get("ports") or []):
        _validate_port_name(check, f"ports[{i}].name", port.get("name"), False)
        if port.get("port") is not None:
            _validate_port(check, f"ports[{i}].port", port.get("port"))


def _validate_address(check: _Check, path: str, family: Any, address: Any, loopback: bool) -> None:
    if family == "FQDN":
        if not isinstance(address, str) or not DNS1123_SUBDOMAIN.fullmatch(address):
            check.fail(path, f"Invalid value: {address!r}: must be a valid FQDN")
        return
    try:
        parsed = ipaddress.ip_address(address)
    except (ValueError, TypeError):
        check.fail(path, f"Invalid value: {address!r}: must be a valid IP address")
        return
    if (parsed.version == 4) != (family == "IPv4"):
        check.fail(path, f"Invalid value: {address!r}: must be an {family} address")
    why = refused_by_kubernetes(str(address), loopback_allowed=loopback)
    if why is not None:
        check.fail(path, f"Invalid value: {json.dumps(address)}: {why}")


def _data_keys(check: _Check, obj: dict[str, Any]) -> None:
    for field in ("data", "stringData", "binaryData"):
        for key in obj.get(field) or {}:
            if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
                check.fail(
                    f"{field}[{key}]",
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                )


def _lease(check: _Check, obj: dict[str, Any]) -> None:
    duration = (obj.get("spec") or {}).get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        check.fail("spec.leaseDurationSeconds", "must be greater than 0")


_KIND_CHECKS = {
    "/services": _service,
    "/secrets": _data_keys,
    "/configmaps": _data_keys,
    "coordination.k8s.io/leases": _lease,
}
