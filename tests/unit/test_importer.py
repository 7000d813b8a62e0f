"""agents/cluster/importer.py: the WorkloadEntries of a routing choice."""

from __future__ import annotations

import json

from agents.cluster.istio import VM_LABEL, workload_entries
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    Workload,
)
from federation.shared.routing import choose

DB = ServiceRef(namespace="shop", name="db")
HOME = Locality(region="eu", zone="eu-1a", cluster="home")


def vm_set(name: str, address: str, *, ready: bool = True) -> EndpointSet:
    endpoint = Endpoint(
        address=address,
        ports=(EndpointPort(name="sql", port=5432),),
        locality=Locality(region="eu", zone="eu-1a", network="vpc-1"),
        ready=ready,
    )
    return EndpointSet(
        service=DB, source=SourceRef.parse(f"vm:{name}"), generation=1, endpoints=(endpoint,)
    )


def cluster_set(name: str, address: str) -> EndpointSet:
    endpoint = Endpoint(
        address=address,
        ports=(EndpointPort(name="sql", port=5432),),
        locality=Locality(region="us", zone="us-1a", cluster=name),
    )
    return EndpointSet(
        service=DB, source=SourceRef.parse(f"cluster:{name}"), generation=1, endpoints=(endpoint,)
    )


def workload(name: str, address: str) -> Workload:
    return Workload(
        name=name,
        namespace="shop",
        service_account="db-sa",
        address=address,
        locality=Locality(region="eu", zone="eu-1a"),
        labels={"app": "db"},
        service="db",
    )


def test_a_chosen_vm_is_a_workload_entry_with_its_identity() -> None:
    sets = [vm_set("vm1", "10.0.0.1"), vm_set("vm2", "10.0.0.2"), cluster_set("far", "10.9.0.1")]
    choice = choose(sets, HOME, None, now=0.0)  # both VMs are nearer than the cluster
    known = {"vm1": workload("vm1", "10.0.0.1")}
    entries, unknown = workload_entries(DB, choice, known, "-global")
    assert unknown == {"db-global-vm2"}  # chosen, but its Workload is not known here
    [entry] = entries
    assert entry.name == "db-global-vm1" and entry.namespace == "shop"
    assert entry.body["metadata"]["labels"][VM_LABEL] == "vm1"
    assert entry.body["spec"] == {
        "address": "10.0.0.1",
        "ports": {"sql": 5432},
        "labels": {"app": "db", "federation.io/service": "db", VM_LABEL: "vm1"},
        "locality": "eu/eu-1a",
        "serviceAccount": "db-sa",
        "weight": 1,
        "network": "vpc-1",
    }


def test_a_vm_routing_does_not_choose_gets_no_entry() -> None:
    sets = [vm_set("vm1", "10.0.0.1", ready=False), cluster_set("far", "10.9.0.1")]
    choice = choose(sets, HOME, None, now=0.0)
    entries, unknown = workload_entries(DB, choice, {"vm1": workload("vm1", "10.0.0.1")}, "-g")
    assert entries == [] and unknown == set()


def test_the_saved_view_follows_a_set_whose_generation_stays() -> None:
    """The local set has generation 0 whatever its endpoints: the saved
    view must still show its readiness as it changes."""
    from dataclasses import replace

    from agents.cluster.importer import SOURCES_ANNOTATION, Bodies, materialize

    bodies = Bodies()
    local = cluster_set("home", "10.0.0.7")
    unready = replace(local, generation=0, endpoints=(replace(local.endpoints[0], ready=False),))
    ready = replace(unready, endpoints=(replace(unready.endpoints[0], ready=True),))
    for current, expected in ((unready, False), (ready, True)):
        done = materialize(
            DB, [current], choose([current], HOME, None, now=0.0), "-g", None, bodies
        )
        saved = json.loads(done.saved[SOURCES_ANNOTATION])
        assert saved[0]["endpoints"][0]["ready"] is expected
