"""Members and their credentials: register, list, read and remove clusters
and VMs, mint join tokens; join and renew."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.api.auth import Access
from federation.api.http import (
    HUB_KEY,
    IDENTITY_KEY,
    SETTINGS_KEY,
    Route,
    error_response,
    json_response,
    member_name,
    read_json,
    registry_of,
    require_object,
)
from federation.api.trust_routes import issued_response
from federation.model import Cluster, ValidationError, Workload
from federation.registry import Unauthorized
from federation.trust.identity import Identity, Role

# -- members ------------------------------------------------------------------


def _token_ttl(request: web.Request, body: dict[str, Any]) -> float:
    ttl = body.get("tokenTtlSeconds", request.app[SETTINGS_KEY].token_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValidationError("tokenTtlSeconds", "expected a number")
    return float(ttl)


def _member_routes(role: Role) -> list[Route]:
    plural = "clusters" if role is Role.CLUSTER else "vms"
    record_type: type[Cluster] | type[Workload] = Cluster if role is Role.CLUSTER else Workload

    async def add(request: web.Request) -> web.Response:
        body = require_object(await read_json(request), "{record, tokenTtlSeconds}")
        record = record_type.from_wire(body.get("record"))
        token = await registry_of(request).add_member(record, _token_ttl(request, body))
        return json_response({"record": record.to_wire(), "token": token}, 201)

    async def listing(request: web.Request) -> web.Response:
        members = await registry_of(request).members(role)
        return json_response({"items": [m.to_wire() for m in members]})

    async def get(request: web.Request) -> web.Response:
        identity = Identity(role, member_name(request))
        member = await registry_of(request).member(identity)
        if member is None:
            return error_response(404, f"{identity} is not registered")
        return json_response(member.to_wire())

    async def remove(request: web.Request) -> web.Response:
        identity = Identity(role, member_name(request))
        await registry_of(request).remove_member(identity)
        request.app[HUB_KEY].roster.revoke(identity)
        return json_response({"removed": f"{role.value}/{request.match_info['name']}"})

    async def token(request: web.Request) -> web.Response:
        body = await read_json(request) if request.can_read_body else {}
        ttl = _token_ttl(request, require_object(body, "{tokenTtlSeconds}"))
        identity = Identity(role, member_name(request))
        return json_response({"token": await registry_of(request).mint_token(identity, ttl)}, 201)

    kind = record_type.__name__
    return [
        Route(
            "POST",
            f"/v1/{plural}",
            add,
            Access.ADMIN,
            f"Register a {kind}; returns its join token",
            f"Add{kind}",
            status=201,
        ),
        Route("GET", f"/v1/{plural}", listing, Access.ANY, f"List {kind}s"),
        Route("GET", f"/v1/{plural}/{{name}}", get, Access.ANY, f"Read a {kind}"),
        Route(
            "DELETE",
            f"/v1/{plural}/{{name}}",
            remove,
            Access.ADMIN,
            f"Remove a {kind} and its endpoints",
        ),
        Route(
            "POST",
            f"/v1/{plural}/{{name}}/tokens",
            token,
            Access.ADMIN,
            f"Mint another join token for a {kind}",
            "TokenRequest",
            status=201,
        ),
    ]


# -- join and renew -----------------------------------------------------------


async def _join(request: web.Request) -> web.Response:
    body = require_object(await read_json(request), "{token, csr}")
    token, csr = body.get("token"), body.get("csr")
    if not isinstance(token, str) or not token:
        raise Unauthorized("a join token is required")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    return issued_response(request, await registry_of(request).join(token, csr))


async def _renew(request: web.Request) -> web.Response:
    identity = request.get(IDENTITY_KEY)
    assert identity is not None  # the route's access rule saw to it
    body = require_object(await read_json(request), "{csr}")
    csr = body.get("csr")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    registry = registry_of(request)
    if identity.role is Role.ADMIN:  # fedctl following a rotation
        return issued_response(request, await registry.admins.renew(identity, csr))
    return issued_response(request, await registry.renew(identity, csr))


MEMBER_ROUTES: list[Route] = [
    *_member_routes(Role.CLUSTER),
    *_member_routes(Role.VM),
    Route(
        "POST",
        "/v1/join",
        _join,
        Access.OPEN,
        "Exchange a join token and a CSR for a client certificate",
        "Join",
    ),
    Route("POST", "/v1/renew", _renew, Access.ANY, "Renew the caller's certificate", "Renew"),
]

__all__ = ["MEMBER_ROUTES"]
