"""agents/client.py against a real registry: one typed method per route the
agents and fedctl use, each returning what the route answers, and errors
by kind (Rejected, Unauthorized, Revoked, Unavailable), each from its cause."""

from __future__ import annotations

import pytest

from agents.client import (
    Credentials,
    RegistryClient,
    Rejected,
    Revoked,
    Unauthorized,
    Unavailable,
)
from federation.model import (
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    TrafficPolicy,
    Workload,
)
from federation.shared.clock import Backoff
from federation.trust import ca as certs
from tests.contract.registry_http.conftest import Harness

CART = ServiceRef(namespace="shop", name="cart")
EAST = SourceRef.parse("cluster:east")


def cart_set(generation: int = 1) -> EndpointSet:
    return EndpointSet(
        service=CART,
        source=EAST,
        generation=generation,
        endpoints=(
            Endpoint(
                address="127.0.1.2",
                ports=(EndpointPort(name="http", port=8080),),
                locality=Locality(region="eu", zone="eu-1a", cluster="east"),
            ),
        ),
    )


async def test_members_routes_answer_typed_records(harness: Harness) -> None:
    admin = harness.admin()
    west = Cluster(name="west", locality=Locality(region="us", zone="us-1a", cluster="west"))
    answer = await admin.register(west, token_ttl=600)
    assert answer["record"] == west.to_wire() and answer["token"]
    assert await admin.cluster("west") == west
    assert [m["name"] for m in await admin.members("clusters")] == ["west"]
    db = Workload(
        name="db", namespace="shop", service_account="db", address="127.0.5.1",
        locality=Locality(region="us", zone="us-1a"),
    )  # fmt: skip
    await admin.register(db)
    assert await admin.vm("db") == db
    assert (await admin.new_token("vms", "db", 60))["token"]
    await admin.remove("vms", "db")
    assert await admin.members("vms") == []


async def test_services_and_policies_round_trip(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    admin = harness.admin()
    await east.heartbeat(EAST, applied=0)
    assert (await east.publish(cart_set()))["written"] is True
    assert await admin.endpoint_sets(CART) == [cart_set()]
    (listed,) = await admin.services()
    assert listed["service"] == "shop/cart" and listed["sources"][0]["endpoints"] == 1
    policy = TrafficPolicy(service=CART, failback_hold_down_seconds=5.0)
    assert (await admin.put_policy(policy))["revision"] > 0
    assert [TrafficPolicy.from_wire(p) for p in await admin.policies()] == [policy]
    await admin.delete_policy(CART)
    assert await admin.policies() == []
    await east.withdraw(CART, EAST)
    assert await admin.endpoint_sets(CART) == []


async def test_trust_and_admin_routes(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    admin = harness.admin()
    ca = await admin.ca()
    assert ca["sha256"] == harness.registry.ca.fingerprint
    assert (await admin.ca_status())["phase"] == "Idle"
    key = certs.new_key()
    issued = await admin.issue_admin("ops", certs.make_csr(key, "admin/ops"))
    assert issued["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert "ops" in {a["name"] for a in await admin.admins()}
    await admin.remove_admin("ops")
    assert "ops" not in {a["name"] for a in await admin.admins()}
    east = await harness.enrol_cluster("east")
    answer = await east.intermediate("east", certs.make_csr(certs.new_key(), "cluster east"))
    assert answer["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    await east.ack_trust(1)


async def test_a_refusal_is_rejected_with_the_servers_status_and_reason(
    sqlite_harness: Harness,
) -> None:
    admin = sqlite_harness.admin()
    with pytest.raises(Rejected) as missing:
        await admin.cluster("nobody")
    assert missing.value.status == 404 and "not registered" in str(missing.value)
    east = Cluster(name="east", locality=Locality(region="eu", zone="eu-1a", cluster="east"))
    await admin.register(east)
    with pytest.raises(Rejected) as twice:
        await admin.register(east)
    assert twice.value.status == 409 and twice.value.reason == "Conflict"


async def test_certificate_problems_are_unauthorized_with_their_reason(
    sqlite_harness: Harness,
) -> None:
    harness = sqlite_harness
    with pytest.raises(Unauthorized) as anonymous:
        await harness.client(None).members("clusters")
    assert anonymous.value.reason == Unauthorized.REFUSED and anonymous.value.status == 401

    other = certs.new_root("another.mesh", harness.clock.now())
    stranger = harness.client(harness.admin_credentials(), ca_pem=other.cert_pem)
    with pytest.raises(Unauthorized) as untrusted:
        await stranger.members("clusters")
    assert untrusted.value.reason == Unauthorized.UNTRUSTED_REGISTRY
    assert untrusted.value.__cause__ is not None  # raised from the TLS error

    east = await harness.enrol_cluster("east")
    await harness.admin().remove("clusters", "east")
    with pytest.raises(Revoked) as removed:
        await east.heartbeat(EAST)
    assert removed.value.reason == Unauthorized.REVOKED
    assert east.revoked is not None


async def test_no_answer_is_unavailable_after_the_retries(sqlite_harness: Harness) -> None:
    credentials: Credentials = sqlite_harness.admin_credentials()
    async with RegistryClient(
        "https://127.0.0.1:1", credentials, retries=3, backoff=Backoff(0.001, 0.002)
    ) as nowhere:
        with pytest.raises(Unavailable) as caught:
            await nowhere.status()
    assert "cannot reach the registry at https://127.0.0.1:1" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
