"""agents/cluster/importer.py materialize: what one imported service becomes
in a cluster: a derived Service, slices of at most 100 endpoints per source
(with the MCS labels), a ServiceImport naming the clusters, and the
endpoints Kubernetes cannot hold left out, said on the ServiceImport."""

from __future__ import annotations

import ipaddress
import json

from agents.cluster.importer import (
    LEFT_OUT_ANNOTATION,
    MAX_PER_SLICE,
    Bodies,
    Desired,
    materialize,
)
from agents.cluster.kube import ENDPOINT_SLICES, SERVICE_IMPORTS, SERVICES
from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from federation.shared.routing import choose

CART = ServiceRef(namespace="shop", name="cart")
HOME = Locality(region="eu", zone="eu-1a", cluster="home")
MCS_SOURCE = "multicluster.kubernetes.io/source-cluster"


def cluster_set(name: str, base: str, count: int, generation: int = 1) -> EndpointSet:
    first = ipaddress.ip_address(base)
    return EndpointSet(
        service=CART,
        source=SourceRef.parse(f"cluster:{name}"),
        generation=generation,
        endpoints=tuple(
            Endpoint(
                address=str(first + i),
                ports=(EndpointPort(name="http", port=8080),),
                locality=Locality(region="eu", zone="eu-1a", cluster=name),
            )
            for i in range(count)
        ),
    )


def of_kind(objects: list[Desired], kind: object) -> list[Desired]:
    return [o for o in objects if o.kind == kind]


def addresses(slices: list[Desired]) -> list[str]:
    return [a for s in slices for e in s.body["endpoints"] for a in e["addresses"]]


def test_each_source_gets_its_own_slices_of_at_most_100() -> None:
    sets = [cluster_set("east", "10.1.0.1", 250), cluster_set("west", "10.2.0.1", 10)]
    choice = choose(sets, HOME, None, now=0.0)
    made = materialize(CART, sets, choice, "-global")
    (service,) = of_kind(made.objects, SERVICES)
    assert service.name == "cart-global"
    slices = of_kind(made.objects, ENDPOINT_SLICES)
    assert all(len(s.body["endpoints"]) <= MAX_PER_SLICE for s in slices)
    by_source: dict[str, list[str]] = {}
    for s in slices:
        by_source.setdefault(s.body["metadata"]["labels"][MCS_SOURCE], []).extend(addresses([s]))
    assert {k: len(v) for k, v in by_source.items()} == {"east": 250, "west": 10}
    assert len(set(addresses(slices))) == 260  # each endpoint once
    (imported,) = of_kind(made.objects, SERVICE_IMPORTS)
    assert imported.body["spec"]["type"] == "ClusterSetIP"
    assert imported.body["status"]["clusters"] == [{"cluster": "east"}, {"cluster": "west"}]
    assert made.left_out == {}


def test_a_change_of_one_source_leaves_the_other_sources_slices_as_they_were() -> None:
    bodies = Bodies()
    east = cluster_set("east", "10.1.0.1", 150)
    before = materialize(CART, [east, cluster_set("west", "10.2.0.1", 5)],
                         choose([east, cluster_set("west", "10.2.0.1", 5)], HOME, None, 0.0),
                         "-global", bodies=bodies)  # fmt: skip
    west = cluster_set("west", "10.2.0.1", 6, generation=2)
    after = materialize(CART, [east, west], choose([east, west], HOME, None, 0.0), "-global",
                        bodies=bodies)  # fmt: skip

    def slices_of(made: object, source: str) -> dict[str, object]:
        return {
            s.name: s.body
            for s in of_kind(made.objects, ENDPOINT_SLICES)  # type: ignore[attr-defined]
            if s.body["metadata"]["labels"][MCS_SOURCE] == source
        }

    assert slices_of(before, "east") == slices_of(after, "east")
    assert len(addresses(list(of_kind(after.objects, ENDPOINT_SLICES)))) == 156
    assert slices_of(before, "west") != slices_of(after, "west")


def test_an_address_kubernetes_refuses_is_left_out_and_said() -> None:
    sets = [cluster_set("east", "10.1.0.1", 3)]
    refused = {"10.1.0.2": "may not be in the loopback range"}
    made = materialize(CART, sets, choose(sets, HOME, None, 0.0), "-global", refused=refused)
    slices = of_kind(made.objects, ENDPOINT_SLICES)
    assert sorted(addresses(slices)) == ["10.1.0.1", "10.1.0.3"]
    assert made.left_out == {"10.1.0.2": "cluster:east: may not be in the loopback range"}
    (imported,) = of_kind(made.objects, SERVICE_IMPORTS)
    said = json.loads(imported.body["metadata"]["annotations"][LEFT_OUT_ANNOTATION])
    assert said["count"] == 1 and said["endpoints"][0]["address"] == "10.1.0.2"
