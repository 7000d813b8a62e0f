"""A member publishes endpoints only where it was registered: a cluster in
its own name, region and zones, a VM at its own address and locality.
Anything else is 422 naming the field, and nothing is written."""

from __future__ import annotations

import dataclasses

import pytest

from agents.client import RegistryClient, RegistryError
from federation.model import Cluster, Endpoint, EndpointPort, EndpointSet, Locality, SourceRef
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set

EAST = SourceRef.parse("cluster:east")


def claiming(**locality: str) -> EndpointSet:
    honest = endpoint_set("east")
    (endpoint,) = honest.endpoints
    claimed = dataclasses.replace(endpoint.locality, **locality)
    return dataclasses.replace(honest, endpoints=(dataclasses.replace(endpoint, locality=claimed),))


async def test_a_cluster_cannot_claim_another_clusters_locality(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    await east.heartbeat(EAST)
    for claim, field in (
        ({"cluster": "west"}, "endpoints[0].locality.cluster"),
        ({"region": "us"}, "endpoints[0].locality.region"),
        ({"zone": "eu-1b"}, "endpoints[0].locality.zone"),
        ({"network": "other"}, "endpoints[0].locality.network"),
    ):
        with pytest.raises(RegistryError) as refused:
            await east.publish(claiming(**claim), retry=False)
        assert refused.value.status == 422, (claim, refused.value)
        assert field in str(refused.value)
    _, events = await harness.admin().collect_snapshot()
    assert not [e for e in events if e.kind == "EndpointSet"]  # nothing was written
    await east.publish(endpoint_set("east"))  # the honest one is


async def test_a_cluster_publishes_in_every_zone_it_registered(harness: Harness) -> None:
    record = Cluster(
        name="east", locality=Locality(region="eu", zone="eu-1a"), zones=("eu-1a", "eu-1b")
    )
    answer = await harness.admin().request("POST", "/v1/clusters", {"record": record.to_wire()})
    credentials, _ = await RegistryClient.join(harness.url, answer["token"])
    east = harness.client(credentials)
    await east.heartbeat(EAST)
    await east.publish(claiming(zone="eu-1b"))
    with pytest.raises(RegistryError) as refused:
        await east.publish(dataclasses.replace(claiming(zone="eu-1c"), generation=2))
    assert refused.value.status == 422


async def test_a_vm_publishes_only_its_own_address(harness: Harness) -> None:
    vm = await harness.enrol_vm("db-1")  # registered at 127.0.5.1, eu/eu-1a
    source = SourceRef.parse("vm:db-1")
    await vm.heartbeat(source)

    def of(address: str) -> EndpointSet:
        return EndpointSet(
            service=endpoint_set("east").service,
            source=source,
            generation=1,
            endpoints=(
                Endpoint(
                    address=address,
                    ports=(EndpointPort(name="http", port=8080),),
                    locality=Locality(region="eu", zone="eu-1a"),
                ),
            ),
        )

    with pytest.raises(RegistryError) as refused:
        await vm.publish(of("127.0.9.9"), retry=False)
    assert refused.value.status == 422 and "endpoints[0].address" in str(refused.value)
    await vm.publish(of("127.0.5.1"))


async def test_a_delta_is_refused_for_the_endpoint_it_adds_outside_its_zones(
    harness: Harness,
) -> None:
    """Only what a delta adds is checked again (decision 60): the refusal
    names the added endpoint's place in the shard, and nothing is written."""
    east = await harness.enrol_cluster("east")  # registered in eu/eu-1a
    await east.heartbeat(EAST)
    (honest,) = endpoint_set("east").endpoints
    ten = dataclasses.replace(
        endpoint_set("east"),
        endpoints=tuple(dataclasses.replace(honest, address=f"127.0.1.{i}") for i in range(1, 11)),
    )
    await east.publish(ten)
    path = "/v1/services/shop/cart/sources/cluster:east"

    def adding(at: int, zone: str) -> dict[str, object]:
        added = dataclasses.replace(
            honest, address="127.0.1.99", locality=dataclasses.replace(honest.locality, zone=zone)
        )
        return {
            "baseGeneration": 1,
            "fields": {"generation": 2},
            "endpoints": [[at, at + 1, [added.to_wire()]]],
        }

    with pytest.raises(RegistryError) as refused:
        await east.request("PATCH", path, adding(3, "eu-1c"), retry=False)
    assert refused.value.status == 422
    assert "endpoints[3].locality.zone" in str(refused.value)
    _, events = await harness.admin().collect_snapshot()
    (stored,) = [e.object for e in events if e.kind == "EndpointSet"]
    assert stored is not None and stored["generation"] == 1  # nothing was written
    await east.request("PATCH", path, adding(9, "eu-1a"))
    _, events = await harness.admin().collect_snapshot()
    (stored,) = [e.object for e in events if e.kind == "EndpointSet"]
    assert stored is not None and stored["generation"] == 2
    assert [e["address"] for e in stored["endpoints"]][8:] == ["127.0.1.9", "127.0.1.99"]
