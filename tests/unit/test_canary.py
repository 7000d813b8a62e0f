"""agents/cluster/canary.py: a weighted split handed to the data planes
that weight (Gateway API's HTTPRoute over per-source Services; Istio's
ServiceEntry with weighted endpoints), and said on the ServiceImport."""

from __future__ import annotations

from agents.cluster import canary
from agents.cluster.importer import WEIGHTS_ANNOTATION, WEIGHTS_UNENFORCED, Bodies, materialize
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    HTTP_ROUTES,
    SERVICE_ENTRIES,
    SERVICE_IMPORTS,
    SERVICES,
)
from federation.model import TrafficPolicy
from federation.shared.routing import choose
from tests.unit.test_materialize import CART, HOME, MCS_SOURCE, cluster_set, of_kind

BOTH = canary.Planes(gateway=True, istio=True)
SPLIT = TrafficPolicy(service=CART, weights={"cluster:east": 90, "cluster:west": 10})


def weighted_objects(
    planes: canary.Planes, east: int = 2, west: int = 2
) -> tuple[list, str | None]:
    sets = [cluster_set("east", "10.1.0.1", east), cluster_set("west", "10.2.0.1", west)]
    choice = choose(sets, HOME, SPLIT, now=0.0)
    return canary.objects(CART, sets, choice, planes, "-global", {}, Bodies())


def test_a_weighted_split_gets_an_httproute_over_per_source_services() -> None:
    made, note = weighted_objects(canary.Planes(gateway=True))
    (route,) = of_kind(made, HTTP_ROUTES)
    spec = route.body["spec"]
    assert route.name == "cart-global"
    assert spec["parentRefs"] == [
        {"group": "", "kind": "Service", "name": "cart-global", "port": 8080}
    ]
    backends = {b["name"]: b["weight"] for b in spec["rules"][0]["backendRefs"]}
    assert backends == {"cart-east": 9, "cart-west": 1}
    services = {s.name for s in of_kind(made, SERVICES)}
    assert services == {"cart-east", "cart-west"}
    slices = of_kind(made, ENDPOINT_SLICES)
    owners = {s.body["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices}
    assert owners == {"cart-east", "cart-west"}
    # not the import's MCS slices: the -global Service's slices are those
    assert not any(MCS_SOURCE in s.body["metadata"]["labels"] for s in slices)
    assert note is not None and "HTTPRoute" in note


def test_the_route_weights_sources_not_endpoints() -> None:
    made, _ = weighted_objects(canary.Planes(gateway=True), east=5, west=1)
    (route,) = of_kind(made, HTTP_ROUTES)
    backends = {b["name"]: b["weight"] for b in route.body["spec"]["rules"][0]["backendRefs"]}
    assert backends == {"cart-east": 9, "cart-west": 1}


def test_istio_gets_a_service_entry_whose_endpoints_carry_the_weights() -> None:
    made, note = weighted_objects(canary.Planes(istio=True))
    (entry,) = of_kind(made, SERVICE_ENTRIES)
    spec = entry.body["spec"]
    assert spec["hosts"] == ["cart.shop.svc.clusterset.local"]
    assert (spec["location"], spec["resolution"]) == ("MESH_INTERNAL", "STATIC")
    by_source: dict[str, int] = {}
    for endpoint in spec["endpoints"]:
        source = endpoint["labels"][canary.SOURCE_LABEL]
        by_source[source] = by_source.get(source, 0) + endpoint["weight"]
    assert by_source["east"] == 9 * by_source["west"]
    assert note is not None and "ServiceEntry" in note


def test_too_many_endpoints_for_one_service_entry_are_not_enforced_by_istio() -> None:
    made, note = weighted_objects(canary.Planes(istio=True), east=canary.MAX_INLINE, west=1)
    assert of_kind(made, SERVICE_ENTRIES) == []
    assert note is None


def test_no_weighted_split_or_no_data_plane_writes_nothing() -> None:
    sets = [cluster_set("east", "10.1.0.1", 2), cluster_set("west", "10.2.0.1", 2)]
    failover = choose(sets, HOME, None, now=0.0)
    assert canary.objects(CART, sets, failover, BOTH, "-global", {}, Bodies()) == ([], None)
    assert weighted_objects(canary.Planes()) == ([], None)


def test_the_service_import_says_who_enforces_the_weights() -> None:
    sets = [cluster_set("east", "10.1.0.1", 2), cluster_set("west", "10.2.0.1", 2)]
    choice = choose(sets, HOME, SPLIT, now=0.0)
    _, note = canary.objects(CART, sets, choice, BOTH, "-global", {}, Bodies())
    enforced = materialize(CART, sets, choice, "-global", weights_note=note)
    unenforced = materialize(CART, sets, choice, "-global")
    said = [
        of_kind(m.objects, SERVICE_IMPORTS)[0].body["metadata"]["annotations"][WEIGHTS_ANNOTATION]
        for m in (enforced, unenforced)
    ]
    assert said[0].startswith("enforced by Gateway API HTTPRoutes")
    assert said[1] == WEIGHTS_UNENFORCED


def test_per_source_names_stay_dns_labels() -> None:
    long = "x" * 60
    name = canary.source_service_name(CART, f"cluster:{long}")
    assert len(name) <= 63 and name.startswith("cart-x")
    assert canary.source_service_name(CART, "vm:db-1") == "cart-vm-db-1"
