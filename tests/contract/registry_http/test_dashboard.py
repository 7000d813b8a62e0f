"""``/v1/dashboard``: members with locality and lag, services paged and
filtered from the hub's summary (ready and stale per source), routing from
one consumer as ``route explain`` computes it; bad paging is a 400."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agents.client import RegistryError
from federation.model import ServiceRef, SourceRef
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually

EAST = SourceRef.parse("cluster:east")


async def test_services_are_paged_filtered_and_counted(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    for name in ("cart", "carts", "orders"):
        one = replace(endpoint_set("east"), service=ServiceRef(namespace="shop", name=name))
        await east.publish(one)
    admin = harness.admin()
    page = await admin.request("GET", "/v1/dashboard?filter=cart&limit=1&offset=1")
    assert page["services"]["total"] == 2
    assert [s["service"] for s in page["services"]["items"]] == ["shop/carts"]
    (source,) = page["services"]["items"][0]["sources"]
    assert source == {"source": "cluster:east", "shards": 1, "endpoints": 1, "ready": 1,
                      "stale": False}  # fmt: skip
    (member,) = page["members"]
    assert (member["name"], member["region"], member["zone"]) == ("east", "eu", "eu-1a")
    assert page["trust"]["phase"] == "Idle" and page["trust"]["roots"]


async def test_a_withdrawn_set_leaves_the_page(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    await east.publish(endpoint_set("east"))
    await east.withdraw(ServiceRef(namespace="shop", name="cart"), EAST)
    admin = harness.admin()

    async def empty() -> bool:
        return (await admin.request("GET", "/v1/dashboard"))["services"]["total"] == 0

    await eventually(empty, what="the withdrawn service gone from the summary")


async def test_routing_from_a_consumer_is_route_explain(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await harness.add_cluster("west", region="us", zone="us-1")
    await east.heartbeat(EAST)
    await east.publish(endpoint_set("east"))
    answer = await harness.admin().request("GET", "/v1/dashboard/route/shop/cart?from=west")
    chosen = [lv for lv in answer["levels"] if lv["chosen"]]
    assert chosen and chosen[0]["sources"] == ["cluster:east"]
    assert answer["endpoints"] == ["127.0.1.2"] and answer["from"] == "west"


@pytest.mark.parametrize(
    "query", ["/v1/dashboard?limit=201", "/v1/dashboard?offset=-1", "/v1/dashboard?limit=x"]
)
async def test_bad_paging_is_400(harness: Harness, query: str) -> None:
    with pytest.raises(RegistryError) as caught:
        await harness.admin().request("GET", query, retry=False)
    assert caught.value.status == 400


async def test_routing_for_an_unknown_consumer_is_404(harness: Harness) -> None:
    with pytest.raises(RegistryError) as caught:
        await harness.admin().request("GET", "/v1/dashboard/route/shop/cart?from=nowhere")
    assert caught.value.status == 404
