"""Probes, metrics and the OpenAPI document."""

from __future__ import annotations

import aiohttp

from federation.api.app import ROUTES
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set


async def test_probes_metrics_and_openapi(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    east = await harness.enrol_cluster("east")
    await east.publish(endpoint_set("east"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http:
        for probe in ("/healthz", "/readyz"):
            async with http.get(harness.url + probe) as answer:
                assert answer.status == 200
        async with http.get(harness.url + "/metrics") as answer:
            text = await answer.text()
        async with http.get(harness.url + "/openapi.json") as answer:
            spec = await answer.json()
    for name in (
        "federation_http_requests_total",
        "federation_watch_streams",
        "federation_watch_events_sent_total",
        "federation_http_request_duration_seconds",
        "federation_authz_denied_total",
    ):
        assert name in text
    published = 'code="200",method="PUT",route="/v1/services/{namespace}/{name}/sources/{source}"'
    assert published in text
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in ROUTES}


async def test_the_dashboard_shows_members_and_services_to_identities_only(
    sqlite_harness: Harness,
) -> None:
    harness = sqlite_harness
    east = await harness.enrol_cluster("east")
    await east.publish(endpoint_set("east"))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http,
        http.get(harness.url + "/") as answer,
    ):
        assert answer.status == 200
        assert answer.content_type == "text/html"
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert "v1/dashboard" in await answer.text()
    data = await east.request("GET", "/v1/dashboard")
    assert [m["name"] for m in data["members"]] == ["east"]
    (service,) = data["services"]["items"]
    assert service["service"] == "shop/cart"
    assert service["sources"][0]["stale"]  # no heartbeat yet: the source is stale
    anonymous = aiohttp.TCPConnector(ssl=harness.client(None).ssl_context)
    async with aiohttp.ClientSession(connector=anonymous) as http:
        for path in ("/", "/v1/dashboard"):
            async with http.get(harness.url + path) as answer:
                assert answer.status == 401
                assert (await answer.json())["code"] == 401


async def test_status_says_per_member_whether_it_joined_lives_and_when_its_certificate_ends(
    harness: Harness,
) -> None:
    east = await harness.enrol_cluster("east")
    await harness.add_cluster("west")  # registered, never joined
    await east.heartbeat(endpoint_set("east").source)
    status = await harness.admin().request("GET", "/v1/status")
    members = {m["name"]: m for m in status["members"]}
    assert members["east"]["joined"] and members["east"]["alive"]
    assert members["east"]["certNotAfter"] > harness.clock.now()
    assert members["east"]["aliveSince"] == harness.clock.now()
    assert not members["west"]["joined"] and not members["west"]["alive"]
    assert members["west"]["certNotAfter"] is None
    assert status["rotation"] == {"phase": "Idle", "bundleVersion": 1}


async def test_the_document_names_every_success_status_and_405_says_allow(
    sqlite_harness: Harness,
) -> None:
    admin = sqlite_harness.admin()
    document = await admin.request("GET", "/openapi.json")
    assert "201" in document["paths"]["/v1/clusters"]["post"]["responses"]
    assert "202" in document["paths"]["/v1/ca/rotate"]["post"]["responses"]
    assert "503" in document["paths"]["/v1/snapshot"]["get"]["responses"]
    created = await admin.request(
        "POST",
        "/v1/clusters",
        {"record": {"name": "east", "locality": {"region": "eu", "zone": "a"}}},
    )
    assert created["token"]
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin.ssl_context)) as http,
        http.patch(sqlite_harness.url + "/v1/clusters", json={}) as answer,
    ):
        assert answer.status == 405
        assert {m.strip() for m in answer.headers["Allow"].split(",")} >= {"GET", "POST"}
        assert (await answer.json())["reason"] == "MethodNotAllowed"
