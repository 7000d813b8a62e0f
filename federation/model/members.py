"""The federation's members as records: a ``Cluster`` and a VM
``Workload``, validated on construction like every record (``records``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from federation.model.records import (
    MAX_PORTS_PER_ENDPOINT,
    EndpointPort,
    Locality,
    NetworkMode,
)
from federation.model.validation import (
    Fields,
    ValidationError,
    check_dns_label,
    check_enum,
    check_ip,
    check_label_value,
    check_labels,
    check_service_name,
)

ClusterName = NewType("ClusterName", str)
WorkloadName = NewType("WorkloadName", str)
MAX_ZONES = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A member cluster.  ``zones`` are every zone its nodes may be in (the
    locality's zone first, always included): an endpoint it publishes must
    be in one of them, in its region, under its name."""

    name: str
    locality: Locality
    network_mode: NetworkMode = NetworkMode.FLAT
    labels: Mapping[str, str] = field(default_factory=dict)
    zones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_dns_label("name", self.name)
        check_enum("networkMode", NetworkMode, self.network_mode)
        check_labels("labels", self.labels)
        zones = tuple(dict.fromkeys((self.locality.zone, *self.zones)))
        if len(zones) > MAX_ZONES:
            raise ValidationError("zones", f"at most {MAX_ZONES} zones")
        for i, zone in enumerate(zones):
            check_label_value(f"zones[{i}]", zone)
        object.__setattr__(self, "zones", zones)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "locality": self.locality.to_wire(),
            "networkMode": self.network_mode.value,
            "labels": dict(self.labels),
            "zones": list(self.zones),
        }

    @classmethod
    def from_wire(cls, data: object) -> Cluster:
        f = Fields(data, frozenset({"name", "locality", "networkMode", "labels", "zones"}))
        zones = f.get("zones", [])
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise ValidationError("zones", "expected a list of zone names")
        return cls(
            name=check_dns_label("name", f.get("name")),
            locality=f.nested("locality", Locality.from_wire),
            network_mode=check_enum("networkMode", NetworkMode, f.get("networkMode", "flat")),
            labels=check_labels("labels", f.get("labels", {})),
            zones=tuple(zones),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A VM workload: what a VM agent registers (cf. Istio WorkloadEntry)."""

    name: str
    namespace: str
    service_account: str
    address: str
    locality: Locality
    ports: tuple[EndpointPort, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    service: str = ""  # the service of ``namespace`` it is an endpoint of; "" for none

    def __post_init__(self) -> None:
        check_dns_label("name", self.name)
        check_dns_label("namespace", self.namespace)
        check_dns_label("serviceAccount", self.service_account)
        if self.service:
            check_service_name("service", self.service)
        object.__setattr__(self, "address", check_ip("address", self.address))
        if len(self.ports) > MAX_PORTS_PER_ENDPOINT:
            raise ValidationError("ports", f"at most {MAX_PORTS_PER_ENDPOINT} ports")
        check_labels("labels", self.labels)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "address": self.address,
            "locality": self.locality.to_wire(),
            "ports": [p.to_wire() for p in self.ports],
            "labels": dict(self.labels),
            "service": self.service,
        }

    @classmethod
    def from_wire(cls, data: object) -> Workload:
        known = {"name", "namespace", "serviceAccount", "address", "locality", "ports", "labels"}
        known |= {"service"}
        f = Fields(data, frozenset(known))
        return cls(
            name=check_dns_label("name", f.get("name")),
            namespace=check_dns_label("namespace", f.get("namespace")),
            service_account=check_dns_label("serviceAccount", f.get("serviceAccount")),
            address=check_ip("address", f.get("address")),
            locality=f.nested("locality", Locality.from_wire),
            ports=f.items("ports", EndpointPort.from_wire, MAX_PORTS_PER_ENDPOINT),
            labels=check_labels("labels", f.get("labels", {})),
            service=check_service_name("service", f.get("service")) if f.get("service", "") else "",
        )


__all__ = ["MAX_ZONES", "Cluster", "ClusterName", "Workload", "WorkloadName"]
