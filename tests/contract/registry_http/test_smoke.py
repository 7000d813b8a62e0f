"""The registry end to end: join, publish, read back."""

from __future__ import annotations

from federation.model import Endpoint, EndpointPort, EndpointSet, Locality, ServiceRef, SourceRef
from tests.contract.registry_http.conftest import Harness


def endpoint_set(cluster: str, generation: int = 1, address: str = "127.0.1.2") -> EndpointSet:
    return EndpointSet(
        service=ServiceRef(namespace="shop", name="cart"),
        source=SourceRef.parse(f"cluster:{cluster}"),
        generation=generation,
        endpoints=(
            Endpoint(
                address=address,
                ports=(EndpointPort(name="http", port=8080),),
                locality=Locality(region="eu", zone="eu-1a", cluster=cluster),
            ),
        ),
    )


async def test_join_publish_and_read(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(SourceRef.parse("cluster:east"))
    answer = await east.publish(endpoint_set("east"))
    assert answer["written"] is True
    again = await east.publish(endpoint_set("east"))
    assert again["written"] is False
    detail = await east.request("GET", "/v1/services/shop/cart")
    assert detail["items"][0]["source"] == "cluster:east"
    assert detail["items"][0]["stale"] is False
