"""Service IP and NodePort allocation, as kube-apiserver's service registry does.

On create a Service of type ClusterIP/NodePort/LoadBalancer gets a cluster IP
from the service range, and a NodePort/LoadBalancer Service gets a node port
per port from 30000-32767.  Requested values are honoured if free and in
range, refused with 422 otherwise.  On update an omitted cluster IP or node
port keeps the allocated one (kube-apiserver's ``patchAllocatedValues``); a
changed cluster IP is refused as immutable.  Deletion releases both.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import ResourceType

NODE_PORTS = range(30000, 32768)
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"


class ServiceAllocator:
    def __init__(self, rt: ResourceType, cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        self._rt = rt
        self.network = ipaddress.ip_network(cidr)
        self._ips: dict[str, str] = {}  # ip -> "ns/name"
        self._ports: dict[int, str] = {}
        self._next_ip = 1
        self._next_port = NODE_PORTS.start

    def _invalid(self, name: str, field: str, message: str) -> KubeError:
        return KubeError.invalid(self._rt, name, field, message)

    def prepare_create(self, obj: dict[str, Any]) -> None:
        """Check requested values and fill in the rest; records nothing yet."""
        spec, name = obj.setdefault("spec", {}), obj["metadata"].get("name", "")
        kind = spec.setdefault("type", "ClusterIP")
        if kind == "ExternalName":
            return
        if spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = self._free_ip(name)
        elif spec["clusterIP"] != "None":
            self._check_ip(name, str(spec["clusterIP"]))
        spec["clusterIPs"] = [spec["clusterIP"]]
        self._fill_ports(name, spec, {}, owner=None)

    def prepare_update(self, namespace: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Keep allocated values the client left out; refuse changing the IP."""
        name = old["metadata"]["name"]
        old_spec, spec = old.get("spec") or {}, new.setdefault("spec", {})
        kind = spec.setdefault("type", "ClusterIP")
        if kind == "ExternalName":
            return
        if spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = old_spec.get("clusterIP")
        if spec["clusterIP"] != old_spec.get("clusterIP"):
            raise self._invalid(name, "spec.clusterIP", "Invalid value: field is immutable")
        spec["clusterIPs"] = [spec["clusterIP"]]
        previous = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in old_spec.get("ports") or []
        }
        self._fill_ports(name, spec, previous, owner=f"{namespace}/{name}")

    def _fill_ports(
        self, name: str, spec: dict[str, Any], previous: dict[Any, Any], owner: str | None
    ) -> None:
        node_ports = spec["type"] in ("NodePort", "LoadBalancer")
        for i, port in enumerate(spec.get("ports") or []):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if not node_ports:
                port.pop("nodePort", None)
            elif port.get("nodePort") is not None:
                self._check_port(name, i, port["nodePort"], owner)
            else:
                kept = previous.get((port.get("port"), port["protocol"]))
                port["nodePort"] = kept or self._free_port(name)

    def commit(self, namespace: str, obj: dict[str, Any]) -> None:
        """Record what a stored Service holds (after a successful write)."""
        owner = f"{namespace}/{obj['metadata']['name']}"
        self.release(namespace, obj["metadata"]["name"])
        spec = obj.get("spec") or {}
        if spec.get("clusterIP") not in (None, "", "None"):
            self._ips[spec["clusterIP"]] = owner
        for port in spec.get("ports") or []:
            if port.get("nodePort") is not None:
                self._ports[port["nodePort"]] = owner

    def release(self, namespace: str, name: str) -> None:
        owner = f"{namespace}/{name}"
        for ip in [k for k, v in self._ips.items() if v == owner]:
            del self._ips[ip]
        for port in [k for k, v in self._ports.items() if v == owner]:
            del self._ports[port]

    def _check_ip(self, name: str, wanted: str) -> None:
        try:
            address = ipaddress.ip_address(wanted)
        except ValueError:
            raise self._invalid(name, "spec.clusterIP", f"Invalid value: {wanted!r}") from None
        if address not in self.network:
            raise self._invalid(
                name,
                "spec.clusterIPs",
                f"Invalid value: {wanted!r}: provided IP is not in the valid range. "
                f"The range of valid IPs is {self.network}",
            )
        if wanted in self._ips:
            raise self._invalid(
                name,
                "spec.clusterIPs",
                f"Invalid value: {wanted!r}: provided IP is already allocated",
            )

    def _check_port(self, name: str, index: int, port: Any, owner: str | None) -> None:
        field = f"spec.ports[{index}].nodePort"
        if not isinstance(port, int) or port not in NODE_PORTS:
            raise self._invalid(
                name, field, f"Invalid value: {port!r}: provided port is not in the valid range"
            )
        if port in self._ports and self._ports[port] != owner:
            raise self._invalid(
                name, field, f"Invalid value: {port}: provided port is already allocated"
            )

    def _free_ip(self, name: str) -> str:
        size = self.network.num_addresses
        for _ in range(size):
            offset = self._next_ip
            self._next_ip = self._next_ip + 1 if self._next_ip + 2 < size else 1
            candidate = str(self.network[offset])
            if candidate not in self._ips:
                return candidate
        raise self._invalid(name, "spec.clusterIPs", "Internal error: the service range is full")

    def _free_port(self, name: str) -> int:
        for _ in NODE_PORTS:
            candidate = self._next_port
            self._next_port = candidate + 1 if candidate + 1 in NODE_PORTS else NODE_PORTS.start
            if candidate not in self._ports:
                return candidate
        raise self._invalid(name, "spec.ports", "Internal error: no node port is free")
