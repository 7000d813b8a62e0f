"""Publishing endpoint sets, and bad input: 4xx with a JSON body, nothing
half written."""

from __future__ import annotations

import aiohttp
import pytest

from agents.client import RegistryClient, RegistryError
from federation.model import SourceRef
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set

EAST = SourceRef.parse("cluster:east")
SERVICE_ONLY = b'{"service": {"namespace": "shop", "name": "cart"}}'


async def status_of(client: RegistryClient, method: str, path: str, body: object = None) -> int:
    try:
        await client.request(method, path, body, retry=False)
    except RegistryError as err:
        return err.status
    return 200


async def test_generations_are_idempotent_and_ordered(harness: Harness) -> None:
    east = await harness.enrol_cluster("east")
    assert (await east.publish(endpoint_set("east", generation=2)))["written"] is True
    assert (await east.publish(endpoint_set("east", generation=2)))["written"] is False
    path = "/v1/services/shop/cart/sources/cluster:east"
    older = endpoint_set("east", generation=1).to_wire()
    assert await status_of(east, "PUT", path, older) == 409
    different = endpoint_set("east", generation=2, address="127.0.1.9").to_wire()
    assert await status_of(east, "PUT", path, different) == 409
    assert (await east.publish(endpoint_set("east", generation=3, address="127.0.1.9")))["written"]
    services = await east.request("GET", "/v1/services")
    assert services["items"][0]["sources"][0]["generation"] == 3
    await east.withdraw(endpoint_set("east").service, EAST)
    assert (await east.request("GET", "/v1/services"))["items"] == []


async def raw(
    harness: Harness, method: str, path: str, data: bytes
) -> tuple[int, dict[str, object]]:
    """A request with a hand-made body, as the admin."""
    admin = harness.admin()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin.ssl_context)) as http,
        http.request(method, harness.url + path, data=data) as answer,
    ):
        return answer.status, await answer.json(content_type=None)


@pytest.mark.parametrize(
    ("method", "path", "data", "code"),
    [
        ("PUT", "/v1/services/shop/cart/sources/cluster:east", b"{not json", 400),
        ("PUT", "/v1/services/shop/cart/sources/cluster:east", b"[1, 2]", 400),
        ("PUT", "/v1/services/Shop/cart/sources/cluster:east", b"{}", 400),
        ("PUT", "/v1/services/shop/cart/sources/pod:east", b"{}", 400),
        ("PUT", "/v1/services/shop/cart/sources/cluster:east", SERVICE_ONLY, 400),
        ("POST", "/v1/clusters", b'{"record": {"name": "UPPER", "locality": {}}}', 400),
        (
            "POST",
            "/v1/clusters",
            b'{"record": {"name": "ok", "locality": {"region": "r", "zone": "z"}},'
            b' "tokenTtlSeconds": "soon"}',
            400,
        ),
        (
            "PUT",
            "/v1/policies/shop/cart",
            b'{"service": {"namespace": "shop", "name": "cart"}, "minHealthy": -1}',
            400,
        ),
        ("GET", "/v1/watch?since=yesterday", b"", 400),
        ("GET", "/v1/nothing-here", b"", 404),
        ("PATCH", "/v1/clusters", b"{}", 405),
    ],
)
async def test_bad_input_is_a_json_4xx_and_writes_nothing(
    sqlite_harness: Harness, method: str, path: str, data: bytes, code: int
) -> None:
    harness = sqlite_harness
    await harness.enrol_cluster("east")
    assert harness.store is not None
    before = (await harness.store.get("/federation/v1/none")).revision
    status, body = await raw(harness, method, path, data)
    assert status == code
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    after = (await harness.store.get("/federation/v1/none")).revision
    assert after == before


async def test_an_oversized_body_is_413(sqlite_harness: Harness) -> None:
    await sqlite_harness.enrol_cluster("east")
    status, body = await raw(
        sqlite_harness, "PUT", "/v1/services/shop/cart/sources/cluster:east", b"x" * (3 << 20)
    )
    assert status == 413 and body["code"] == 413


async def test_a_mismatched_body_is_refused(sqlite_harness: Harness) -> None:
    east = await sqlite_harness.enrol_cluster("east")
    wrong = endpoint_set("east").to_wire() | {"service": "shop/other"}
    status = await status_of(east, "PUT", "/v1/services/shop/cart/sources/cluster:east", wrong)
    assert status == 400
