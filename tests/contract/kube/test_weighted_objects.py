"""The objects a weighted split becomes, against an apiserver serving Gateway
API's and Istio's CRDs (installed here when the cluster lacks them): the
agent's HTTPRoute over per-source Services and its ServiceEntry are
accepted as built and read back with the CRDs' defaults, and what the
schemas forbid is a 422 naming the field.  Only kubernetes_asyncio talks
to the apiserver, so this runs unchanged on a real cluster."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from kubernetes_asyncio import client

from agents.cluster import canary
from agents.cluster.importer import Bodies
from agents.cluster.kube import ENDPOINT_SLICES, HTTP_ROUTES, SERVICE_ENTRIES, SERVICES
from federation.model import ServiceRef, TrafficPolicy
from federation.shared.routing import choose
from federation.sim.kube import thirdparty
from tests.contract.kube.conftest import Kube
from tests.contract.kube.test_kube_contract import served_crd
from tests.unit.test_materialize import HOME, cluster_set

ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
ENTRIES = ("networking.istio.io", "v1beta1", "serviceentries")


def built(namespace: str) -> list[Any]:
    """What the agent writes for cart in ``namespace``, split 90/10 between
    east (3 endpoints) and west (2)."""
    service = ServiceRef(namespace=namespace, name="cart")
    sets = [
        dataclasses.replace(cluster_set("east", "10.1.0.1", 3), service=service),
        dataclasses.replace(cluster_set("west", "10.2.0.1", 2), service=service),
    ]
    policy = TrafficPolicy(service=service, weights={"cluster:east": 90, "cluster:west": 10})
    choice = choose(sets, HOME, policy, now=0.0)
    made, _ = canary.objects(
        service, sets, choice, canary.Planes(gateway=True, istio=True), "-global", {}, Bodies()
    )
    return made


async def create(kube: Kube, item: Any) -> dict[str, Any]:
    body = copy.deepcopy(item.body)
    if item.kind is SERVICES:
        return (await kube.core.create_namespaced_service(kube.namespace, body)).to_dict()
    if item.kind is ENDPOINT_SLICES:
        return (
            await kube.discovery.create_namespaced_endpoint_slice(kube.namespace, body)
        ).to_dict()
    group, version, plural = ROUTES if item.kind is HTTP_ROUTES else ENTRIES
    created: dict[str, Any] = await kube.custom.create_namespaced_custom_object(
        group, version, kube.namespace, plural, body
    )
    return created


async def test_an_httproute_over_per_source_services_is_accepted_with_its_defaults(
    kube: Kube,
) -> None:
    await served_crd(kube, thirdparty.load("httproutes.gateway.networking.k8s.io"))
    made = [m for m in built(kube.namespace) if m.kind is not SERVICE_ENTRIES]
    target = {
        "metadata": {"name": "cart-global"},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }
    await kube.core.create_namespaced_service(kube.namespace, target)
    for item in made:
        await create(kube, item)
    route = await kube.custom.get_namespaced_custom_object(
        *ROUTES[:2], kube.namespace, ROUTES[2], "cart-global"
    )
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert {b["name"]: b["weight"] for b in backends} == {"cart-east": 9, "cart-west": 1}
    # the CRD's defaults, as the apiserver fills them in
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    east = await kube.discovery.list_namespaced_endpoint_slice(
        kube.namespace, label_selector="kubernetes.io/service-name=cart-east"
    )
    assert sorted(a for s in east.items for e in s.endpoints for a in e.addresses) == [
        "10.1.0.1", "10.1.0.2", "10.1.0.3",
    ]  # fmt: skip


async def test_an_httproute_weight_past_the_schemas_bound_is_422(kube: Kube) -> None:
    await served_crd(kube, thirdparty.load("httproutes.gateway.networking.k8s.io"))
    (route,) = [m for m in built(kube.namespace) if m.kind is HTTP_ROUTES]
    body = copy.deepcopy(route.body)
    body["spec"]["rules"][0]["backendRefs"][0]["weight"] = 2_000_000
    with pytest.raises(client.ApiException) as caught:
        await kube.custom.create_namespaced_custom_object(
            *ROUTES[:2], kube.namespace, ROUTES[2], body
        )
    assert caught.value.status == 422
    assert "spec.rules[0].backendRefs[0].weight" in caught.value.body


async def test_a_service_entry_with_weighted_endpoints_is_accepted(kube: Kube) -> None:
    await served_crd(kube, thirdparty.load("serviceentries.networking.istio.io"))
    (entry,) = [m for m in built(kube.namespace) if m.kind is SERVICE_ENTRIES]
    await create(kube, entry)
    stored = await kube.custom.get_namespaced_custom_object(
        *ENTRIES[:2], kube.namespace, ENTRIES[2], entry.name
    )
    weights = sorted(e["weight"] for e in stored["spec"]["endpoints"])
    assert weights == [1, 1, 6, 6, 6]  # 90/10 over 3 and 2 endpoints: 30,000 and 5,000 each
    assert stored["spec"]["hosts"] == [f"cart.{kube.namespace}.svc.clusterset.local"]


async def test_a_service_entry_location_outside_the_enum_is_422(kube: Kube) -> None:
    await served_crd(kube, thirdparty.load("serviceentries.networking.istio.io"))
    (entry,) = [m for m in built(kube.namespace) if m.kind is SERVICE_ENTRIES]
    body = copy.deepcopy(entry.body)
    body["spec"]["location"] = "NOWHERE"
    with pytest.raises(client.ApiException) as caught:
        await kube.custom.create_namespaced_custom_object(
            *ENTRIES[:2], kube.namespace, ENTRIES[2], body
        )
    assert caught.value.status == 422
    assert "spec.location" in caught.value.body
