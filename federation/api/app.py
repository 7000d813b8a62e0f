"""The registry's HTTP API: routes, authentication and authorization, audit.

Every route is declared once in ``ROUTES`` with its access rule; the
middleware authenticates the caller, applies the rule before the handler
runs, audits every write with the caller, and turns every error into a
JSON body (``{"code", "reason", "message"[, "field"]}``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from federation.api import dashboard, watch
from federation.api.auth import Access, authorize, peer_identity
from federation.api.http import (
    HEALTH_KEY,
    HUB_KEY,
    IDENTITY_KEY,
    METRICS_KEY,
    REGISTRY_KEY,
    SETTINGS_KEY,
    Handler,
    Health,
    Metrics,
    Route,
    Settings,
    error_response,
    json_response,
    read_json,
    registry_of,
    require_object,
)
from federation.api.hub import WatchHub
from federation.api.openapi import document
from federation.api.operator_routes import OPERATOR_ROUTES, metrics_page
from federation.api.trust_routes import TRUST_ROUTES, issued_response
from federation.model import (
    MAX_SHARDS,
    Cluster,
    EndpointSet,
    ServiceRef,
    SourceKind,
    SourceRef,
    TrafficPolicy,
    ValidationError,
    Workload,
    merge_shards,
)
from federation.model.claims import Contradiction, check_claims
from federation.model.validation import (
    Fields,
    Inconsistent,
    check_dns_label,
    check_int,
    check_service_name,
)
from federation.registry import (
    Compacted,
    Conflict,
    Forbidden,
    Invalid,
    InvalidKey,
    MissingEncryptionKey,
    NotFound,
    Registry,
    RegistryError,
    Revoked,
    StoreError,
    TooLarge,
    Unauthorized,
    Unprocessable,
    ValueTooLarge,
)
from federation.shared.logs import fields
from federation.trust.identity import Identity, Role

log = logging.getLogger("federation.api")
audit = logging.getLogger("federation.audit")
MAX_BODY_BYTES = 2 * 1024 * 1024
RETRY_AFTER_SECONDS = 1


# What the API answers for each of the registry's errors (they carry no
# HTTP status of their own); a subclass answers as its nearest listed base.
STATUS: dict[type[RegistryError], int] = {
    Invalid: 400,
    MissingEncryptionKey: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unprocessable: 422,
}


def status_of(err: RegistryError) -> int:
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


# -- helpers ------------------------------------------------------------------


def source_of(text: str) -> SourceRef:
    """A ``{source}`` path segment (``kind:name``)."""
    try:
        return SourceRef.parse(text)
    except ValidationError as err:
        raise Invalid(str(err)) from err


def _service(request: web.Request) -> ServiceRef:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    check_dns_label("namespace", ns)
    check_service_name("name", name)
    return ServiceRef(namespace=ns, name=name)


def _member_name(request: web.Request) -> str:
    return check_dns_label("name", request.match_info["name"])


def _owner(request: web.Request) -> SourceRef:
    """The source a route's path names: ``{source}``, or the cluster of
    ``/v1/clusters/{name}/...``."""
    info = request.match_info
    if "source" in info:
        return source_of(info["source"])
    return SourceRef(kind=SourceKind.CLUSTER, name=_member_name(request))


def _identity(request: web.Request) -> Identity | None:
    return request.get(IDENTITY_KEY)


# -- middleware ---------------------------------------------------------------


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    metrics = request.app[METRICS_KEY]
    route: Route | None = getattr(request.match_info.handler, "__route__", None)
    label = route.path if route else "unmatched"
    started = time.perf_counter()
    identity: Identity | None = None
    try:
        identity = peer_identity(
            request, registry.trust_domain, registry.clock, registry.trust.root_names
        )
        if identity is not None:
            if identity.role in (Role.CLUSTER, Role.VM):
                roster = request.app[HUB_KEY].roster
                if await roster.lookup(registry, identity) is None:
                    raise Revoked(roster.refusal(identity))
            elif not await registry.admins.valid(identity):
                raise Revoked(f"{identity} was revoked; its credential is refused")
            request[IDENTITY_KEY] = identity
        if route is not None:
            if route.access is not Access.OPEN and identity is None:
                raise Unauthorized("a client certificate is required")  # before any parsing
            source = None
            if route.access is Access.OWNER:
                source = _owner(request)
            authorize(route.access, identity, source)
        response = await handler(request)
    except RegistryError as err:
        status = status_of(err)
        if status == 403:
            metrics.denied.inc()
        response = error_response(status, str(err), reason=getattr(err, "reason", None))
    except ValidationError as err:  # 422: valid, but not what its publisher may claim
        status = 422 if isinstance(err, Inconsistent) else 400
        response = error_response(status, str(err), err.path or None)
    except web.HTTPException as err:
        response = error_response(err.status, err.reason if err.status != 413 else str(err.text))
        if "Allow" in err.headers:  # a 405 says what the path does allow
            response.headers["Allow"] = err.headers["Allow"]
    except Compacted as err:
        response = error_response(410, str(err))
    except (ValueTooLarge, InvalidKey) as err:
        response = error_response(413 if isinstance(err, ValueTooLarge) else 400, str(err))
    except StoreError as err:  # Unavailable, or anything else the backend failed with
        response = error_response(503, f"the store is unavailable: {err}")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = error_response(500, "internal error; see the registry's log")
    metrics.requests.labels(label, request.method, str(response.status)).inc()
    if route is not None and not route.stream:
        metrics.request_seconds.labels(label, request.method).observe(time.perf_counter() - started)
    if request.method not in ("GET", "HEAD") and route is not None:
        outcome = "denied" if response.status in (401, 403) else str(response.status)
        # A renewed lease changes nothing: heartbeats (every few seconds per
        # member) are audited at DEBUG unless refused.
        quiet = route.handler is _heartbeat and response.status == 200
        spiffe_id = identity.spiffe_id(registry.trust_domain) if identity else "anonymous"
        audit.log(
            logging.DEBUG if quiet else logging.INFO,
            "caller=%s %s %s -> %s",
            identity or "anonymous",
            request.method,
            request.path,
            outcome,
            extra=fields(spiffe_id=spiffe_id),
        )
    return response


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
        identity = Identity(role, _member_name(request))
        member = await registry_of(request).member(identity)
        if member is None:
            return error_response(404, f"{identity} is not registered")
        return json_response(member.to_wire())

    async def remove(request: web.Request) -> web.Response:
        identity = Identity(role, _member_name(request))
        await registry_of(request).remove_member(identity)
        request.app[HUB_KEY].roster.revoke(identity)
        return json_response({"removed": f"{role.value}/{request.match_info['name']}"})

    async def token(request: web.Request) -> web.Response:
        body = await read_json(request) if request.can_read_body else {}
        ttl = _token_ttl(request, require_object(body, "{tokenTtlSeconds}"))
        identity = Identity(role, _member_name(request))
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
    identity = _identity(request)
    assert identity is not None  # the route's access rule saw to it
    body = require_object(await read_json(request), "{csr}")
    csr = body.get("csr")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    registry = registry_of(request)
    if identity.role is Role.ADMIN:  # fedctl following a rotation
        return issued_response(request, await registry.admins.renew(identity, csr))
    return issued_response(request, await registry.renew(identity, csr))


# -- endpoint sets, heartbeats, policies --------------------------------------


PUBLISH_PACING = 2.0  # the longest a publish waits for this replica's fan-out to reach it


async def _publish(request: web.Request) -> web.Response:
    """Validate and write one shard.  The answer waits (up to
    PUBLISH_PACING) until this replica's watch hub has taken the write:
    publishers then cannot outrun the fan-out, and a busy registry slows
    its publishers instead of letting delivery fall seconds behind
    (decision 43)."""
    service, source = _service(request), source_of(request.match_info["source"])
    endpoint_set = EndpointSet.from_wire(require_object(await read_json(request), "EndpointSet"))
    if endpoint_set.service != service or endpoint_set.source != source:
        raise Contradiction("service", "the body's service and source must match the path")
    member = await request.app[HUB_KEY].roster.lookup(
        registry_of(request), Identity.of_source(source)
    )
    if member is None:
        raise NotFound(f"source {source} is not registered")
    check_claims(endpoint_set, member)
    revision, written = await registry_of(request).publish(endpoint_set)
    if written:
        await request.app[HUB_KEY].caught_up(revision, PUBLISH_PACING)
    return json_response({"revision": revision, "written": written})


async def _withdraw(request: web.Request) -> web.Response:
    """Every shard of the source, or the one ``?shard=N`` names."""
    service, source = _service(request), source_of(request.match_info["source"])
    text = request.query.get("shard")
    shard = None
    if text is not None:
        if not text.isdigit() or int(text) >= MAX_SHARDS:
            raise ValidationError("shard", f"{text!r} is not a shard number below {MAX_SHARDS}")
        shard = int(text)
    return json_response({"revision": await registry_of(request).withdraw(service, source, shard)})


async def _service_detail(request: web.Request) -> web.Response:
    """The service's shards, merged per source."""
    shards: dict[SourceRef, list[EndpointSet]] = {}
    async for endpoint_set in registry_of(request).endpoint_sets(_service(request)):
        shards.setdefault(endpoint_set.source, []).append(endpoint_set)
    merged = [merge_shards(s) for _, s in sorted(shards.items(), key=lambda x: str(x[0]))]
    return json_response({"items": [s.to_wire() for s in merged]})


async def _services(request: web.Request) -> web.Response:
    """Per service and source: counts only, summed over the shards."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    async for endpoint_set in registry_of(request).endpoint_sets():
        sources = summary.setdefault(str(endpoint_set.service), {})
        entry = sources.setdefault(
            str(endpoint_set.source),
            {"source": str(endpoint_set.source), "generation": 0, "endpoints": 0,
             "healthy": 0, "stale": False, "shards": 0, "changedAt": 0.0},
        )  # fmt: skip
        entry["generation"] = max(entry["generation"], endpoint_set.generation)
        entry["changedAt"] = max(entry["changedAt"], endpoint_set.changed_at)
        entry["endpoints"] += len(endpoint_set.endpoints)
        entry["healthy"] += sum(1 for e in endpoint_set.endpoints if e.healthy)
        entry["stale"] = entry["stale"] or endpoint_set.stale
        entry["shards"] += 1
    return json_response(
        {"items": [{"service": k, "sources": list(v.values())} for k, v in summary.items()]}
    )


async def _heartbeat(request: web.Request) -> web.Response:
    """Renew liveness; an optional body ``{"appliedRevision": R}`` says what
    the agent has materialized, for convergence lag."""
    source = source_of(request.match_info["source"])
    applied = None
    if request.can_read_body:
        body = await read_json(request)
        if body is not None:
            fields = Fields(require_object(body, "{appliedRevision}"), _HEARTBEAT_FIELDS)
            raw = fields.get("appliedRevision", None)
            applied = None if raw is None else check_int("appliedRevision", raw, 0, 2**62)
    ttl = await registry_of(request).heartbeat(source, applied)
    return json_response({"ttlSeconds": ttl})


_HEARTBEAT_FIELDS = frozenset({"appliedRevision"})


async def _put_policy(request: web.Request) -> web.Response:
    service = _service(request)
    policy = TrafficPolicy.from_wire(require_object(await read_json(request), "TrafficPolicy"))
    if policy.service != service:
        raise Contradiction("service", "the body's service must match the path")
    return json_response({"revision": await registry_of(request).put_policy(policy)})


async def _delete_policy(request: web.Request) -> web.Response:
    return json_response({"revision": await registry_of(request).delete_policy(_service(request))})


async def _policies(request: web.Request) -> web.Response:
    return json_response({"items": [p.to_wire() for p in await registry_of(request).policies()]})


# -- operations ---------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    failed = request.app[HEALTH_KEY].failed
    if failed:
        stopped = "; ".join(f"{name}: {why}" for name, why in sorted(failed.items()))
        return error_response(503, f"background work stopped: {stopped}")
    registry = registry_of(request)
    try:
        revision = await registry.revision()
    except StoreError as err:
        return error_response(503, f"the store is not answering: {err}")
    return json_response({"status": "ready", "revision": revision})


async def _openapi(request: web.Request) -> web.Response:
    return json_response(document(ROUTES))


ROUTES: list[Route] = [
    Route("GET", "/", dashboard.page, Access.ANY, "Dashboard: a live page (HTML)"),
    Route(
        "GET",
        "/v1/dashboard",
        dashboard.data,
        Access.ANY,
        "What the dashboard shows: members with lag, a page of services (?offset, ?limit, "
        "?filter), policies, trust",
    ),
    Route(
        "GET",
        "/v1/dashboard/route/{namespace}/{name}",
        dashboard.route,
        Access.ANY,
        "Where a service routes now from consumer cluster ?from=",
    ),
    Route("GET", "/healthz", _healthz, Access.OPEN, "Liveness"),
    Route("GET", "/readyz", _readyz, Access.OPEN, "Readiness: the store answers"),
    Route("GET", "/metrics", metrics_page, Access.OPEN, "Prometheus metrics"),
    Route("GET", "/openapi.json", _openapi, Access.OPEN, "This document"),
    Route(
        "POST",
        "/v1/join",
        _join,
        Access.OPEN,
        "Exchange a join token and a CSR for a client certificate",
        "Join",
    ),
    Route("POST", "/v1/renew", _renew, Access.ANY, "Renew the caller's certificate", "Renew"),
    *TRUST_ROUTES,
    *OPERATOR_ROUTES,
    *_member_routes(Role.CLUSTER),
    *_member_routes(Role.VM),
    Route("GET", "/v1/services", _services, Access.ANY, "Exported services and their sources"),
    Route(
        "GET",
        "/v1/services/{namespace}/{name}",
        _service_detail,
        Access.ANY,
        "A service's endpoint sets",
    ),
    Route(
        "PUT",
        "/v1/services/{namespace}/{name}/sources/{source}",
        _publish,
        Access.OWNER,
        "Publish a source's endpoint set",
        "EndpointSet",
    ),
    Route(
        "DELETE",
        "/v1/services/{namespace}/{name}/sources/{source}",
        _withdraw,
        Access.OWNER,
        "Withdraw a source's endpoint set",
    ),
    Route(
        "POST",
        "/v1/sources/{source}/heartbeat",
        _heartbeat,
        Access.OWNER,
        "Renew a source's liveness lease; optionally say the revision materialized",
        body="Heartbeat",
        body_required=False,
    ),
    Route("GET", "/v1/policies", _policies, Access.ANY, "Traffic policies"),
    Route(
        "PUT",
        "/v1/policies/{namespace}/{name}",
        _put_policy,
        Access.ADMIN,
        "Apply a traffic policy",
        "TrafficPolicy",
    ),
    Route(
        "DELETE",
        "/v1/policies/{namespace}/{name}",
        _delete_policy,
        Access.ADMIN,
        "Delete a traffic policy",
    ),
    Route(
        "GET",
        "/v1/snapshot",
        watch.snapshot,
        Access.ANY,
        "Every watched object at one revision, streamed as NDJSON",
        stream=True,
    ),
    Route(
        "GET", "/v1/watch", watch.watch, Access.ANY, "NDJSON changes after ?since=REV", stream=True
    ),
]


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    await app[HUB_KEY].start()
    task = app[HUB_KEY].task
    assert task is not None
    app[HEALTH_KEY].supervise(task, "watch hub")
    yield
    await app[HUB_KEY].stop()


def build_app(registry: Registry, settings: Settings | None = None) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY_BYTES)
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = Metrics()
    app[SETTINGS_KEY] = settings or Settings()
    app[HUB_KEY] = WatchHub(registry)
    app[HEALTH_KEY] = Health()
    app.cleanup_ctx.append(_run_hub)
    for route in ROUTES:

        async def handler(request: web.Request, _route: Route = route) -> web.StreamResponse:
            return await _route.handler(request)

        handler.__route__ = route  # type: ignore[attr-defined]
        app.router.add_route(route.method, route.path, handler)
    return app


__all__ = ["ROUTES", "Route", "Settings", "build_app"]
