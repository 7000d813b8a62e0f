"""Istio's view of the VMs routing chooses: where Istio's WorkloadEntry CRD
is served, one WorkloadEntry per chosen VM endpoint, with the VM's service
account, locality and labels, so Istio knows the VM's identity."""

from __future__ import annotations

from agents.cluster.importer import SERVICE_LABEL, Desired, global_name, labels_of
from agents.cluster.kube import WORKLOAD_ENTRIES, Obj
from federation.model import ServiceRef, SourceKind, SourceRef, Workload
from federation.shared.routing import Choice

VM_LABEL = "federation.io/vm"


def workload_entries(
    service: ServiceRef, choice: Choice, workloads: dict[str, Workload], suffix: str
) -> tuple[list[Desired], set[str]]:
    """A WorkloadEntry per chosen VM endpoint whose Workload is known; and
    the names of entries of chosen VMs not known here (kept as they are:
    after a restart during a registry outage the view has no Workloads)."""
    out: list[Desired] = []
    unknown: set[str] = set()
    for chosen in choice.endpoints:
        source = SourceRef.parse(chosen.source)
        if source.kind is not SourceKind.VM:
            continue
        name = f"{global_name(service, suffix)}-{source.name}"[:253]
        workload = workloads.get(source.name)
        if workload is None:
            unknown.add(name)
            continue
        locality = chosen.endpoint.locality
        spec: Obj = {
            "address": chosen.address,
            "ports": {p.name or f"port-{p.port}": p.port for p in chosen.endpoint.ports},
            "labels": {**workload.labels, SERVICE_LABEL: service.name, VM_LABEL: source.name},
            "locality": "/".join(x for x in (locality.region, locality.zone) if x),
            "serviceAccount": workload.service_account,
            "weight": chosen.weight,
        }
        if locality.network:
            spec["network"] = locality.network
        out.append(
            Desired(
                WORKLOAD_ENTRIES,
                service.namespace,
                name,
                {
                    "apiVersion": "networking.istio.io/v1beta1",
                    "kind": "WorkloadEntry",
                    "metadata": {
                        "name": name,
                        "namespace": service.namespace,
                        "labels": {**labels_of(service), VM_LABEL: source.name},
                    },
                    "spec": spec,
                },
            )
        )
    return out, unknown


__all__ = ["VM_LABEL", "workload_entries"]
