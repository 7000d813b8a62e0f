"""Hostile input gets a 4xx with a JSON body, never a 500, and a request
without a client certificate is refused before its body is looked at."""

from __future__ import annotations

import ssl

import aiohttp

from tests.contract.registry_http.conftest import Harness


def anonymous(harness: Harness) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cadata=harness.registry.trust.state.bundle_pem.decode())
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


async def test_authentication_comes_before_validation(sqlite_harness: Harness) -> None:
    async with anonymous(sqlite_harness) as http:
        for method, path in (
            ("PUT", "/v1/services/default/echo/sources/c1"),
            ("PUT", "/v1/services/Bad_Name/echo/sources/not-a-source"),
            ("POST", "/v1/clusters/east/intermediate"),
            ("PUT", "/v1/policies/x/y"),
        ):
            async with http.request(method, sqlite_harness.url + path, json={}) as answer:
                body = await answer.json()
                assert (answer.status, body["reason"]) == (401, "Unauthorized"), (path, body)
                assert "field" not in body


async def test_deep_nesting_and_impossible_numbers_are_400(sqlite_harness: Harness) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    async with anonymous(sqlite_harness) as http:
        async with http.post(sqlite_harness.url + "/v1/join", data=deep) as answer:
            assert answer.status == 400, await answer.text()
            assert "nested too deeply" in (await answer.json())["message"]
        async with http.post(sqlite_harness.url + "/v1/join", data=b'{"token": NaN}') as answer:
            assert answer.status == 400
    east = await sqlite_harness.enrol_cluster("east")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=east.ssl_context)) as http:
        url = sqlite_harness.url + "/v1/clusters/east/intermediate"
        for body in (
            b'{"csr": "x", "lifetimeSeconds": 1e308}',
            b'{"csr": "x", "lifetimeSeconds": NaN}',
        ):
            async with http.post(url, data=body) as answer:
                said = await answer.json()
                assert answer.status == 400, said
                assert said.get("field") == "lifetimeSeconds" or "NaN" in said["message"], said
