"""The registry's HTTP API: routes, authentication and authorization, audit,
errors as JSON, metrics, the watch stream and the OpenAPI document.

Every route is declared once in ``ROUTES`` with its access rule; the
middleware authenticates the caller, applies the rule before the handler
runs, audits every write with the caller, and turns every error into a
JSON body (``{"code", "reason", "message"[, "field"]}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from federation.api.auth import Access, authorize, peer_identity
from federation.api.openapi import document
from federation.model import (
    Cluster,
    EndpointSet,
    ServiceRef,
    TrafficPolicy,
    ValidationError,
    Workload,
)
from federation.model.validation import check_dns_label, check_service_name
from federation.registry import (
    Forbidden,
    Invalid,
    Issued,
    Registry,
    RegistryError,
    Unauthorized,
    source_of,
)
from federation.store import Compacted, StoreError, Unavailable
from federation.trust.ca import cert_pem
from federation.trust.identity import Identity, Role

log = logging.getLogger("federation.api")
audit = logging.getLogger("federation.audit")
MAX_BODY_BYTES = 2 * 1024 * 1024
FIRST_LINE_WAIT = 0.25
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    body: str | None = None  # schema name of the JSON body, for OpenAPI
    stream: bool = False


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "federation_http_requests_total",
            "HTTP requests by route, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.denied = Counter(
            "federation_authz_denied_total", "Writes refused with 403", registry=self.registry
        )
        self.watch_streams = Gauge(
            "federation_watch_streams", "Open watch streams", registry=self.registry
        )
        self.events_sent = Counter(
            "federation_watch_events_sent_total",
            "Watch events sent, bookmarks included",
            ["type"],
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "federation_request_store_seconds",
            "Time handlers spent on a request, store calls included",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )


@dataclass
class Settings:
    bookmark_interval: float = 5.0
    token_ttl: float = 3600.0


REGISTRY_KEY = web.AppKey("registry", Registry)
METRICS_KEY = web.AppKey("metrics", Metrics)
SETTINGS_KEY = web.AppKey("settings", Settings)
IDENTITY_KEY = web.RequestKey("identity", Identity)


# -- helpers ------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o))


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "code": status,
        "reason": _REASONS.get(status, "Error"),
        "message": message,
    }
    if field:
        body["field"] = field
    return _json(body, status)


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalError",
    503: "ServiceUnavailable",
}


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise Invalid(f"the body is not valid JSON: {err}") from None


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("", f"expected a JSON object ({what})")
    return body


def _service(request: web.Request) -> ServiceRef:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    check_dns_label("namespace", ns)
    check_service_name("name", name)
    return ServiceRef(namespace=ns, name=name)


def _member_name(request: web.Request) -> str:
    return check_dns_label("name", request.match_info["name"])


def _registry(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


def _identity(request: web.Request) -> Identity | None:
    return request.get(IDENTITY_KEY)


# -- middleware ---------------------------------------------------------------


def _route_of(request: web.Request) -> Route | None:
    route: Route | None = getattr(request.match_info.handler, "__route__", None)
    return route


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    metrics = request.app[METRICS_KEY]
    route = _route_of(request)
    label = route.path if route else "unmatched"
    started = time.perf_counter()
    identity: Identity | None = None
    try:
        identity = peer_identity(request, registry.trust_domain, registry.clock)
        if identity is not None:
            request[IDENTITY_KEY] = identity
        if route is not None:
            source = None
            if route.access is Access.OWNER:
                source = source_of(request.match_info["source"])
            authorize(route.access, identity, source)
        response = await handler(request)
    except RegistryError as err:
        if err.status == 403:
            metrics.denied.inc()
        response = _error(err.status, str(err))
    except ValidationError as err:
        response = _error(400, str(err), err.path or None)
    except web.HTTPException as err:
        response = _error(err.status, err.reason if err.status != 413 else str(err.text))
    except Compacted as err:
        response = _error(410, str(err))
    except Unavailable as err:
        response = _error(503, f"the store is unavailable: {err}")
    except StoreError as err:
        response = _error(400, str(err))
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = _error(500, "internal error; see the registry's log")
    metrics.requests.labels(label, request.method, str(response.status)).inc()
    if route is not None and not route.stream:
        metrics.store_seconds.labels(label).observe(time.perf_counter() - started)
    if request.method not in ("GET", "HEAD") and route is not None:
        outcome = "denied" if response.status in (401, 403) else str(response.status)
        audit.info(
            "caller=%s %s %s -> %s", identity or "anonymous", request.method, request.path, outcome
        )
    return response


# -- members ------------------------------------------------------------------


def _member_routes(role: Role) -> list[Route]:
    plural = "clusters" if role is Role.CLUSTER else "vms"
    record_type: type[Cluster] | type[Workload] = Cluster if role is Role.CLUSTER else Workload

    async def add(request: web.Request) -> web.Response:
        body = _object(await _body(request), "{record, tokenTtlSeconds}")
        record = record_type.from_wire(body.get("record"))
        ttl = body.get("tokenTtlSeconds", request.app[SETTINGS_KEY].token_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ValidationError("tokenTtlSeconds", "expected a number")
        token = await _registry(request).add_member(record, float(ttl))
        return _json({"record": record.to_wire(), "token": token}, 201)

    async def listing(request: web.Request) -> web.Response:
        members = await _registry(request).members(role)
        return _json({"items": [m.to_wire() for m in members]})

    async def get(request: web.Request) -> web.Response:
        identity = Identity(role, _member_name(request))
        member = await _registry(request).member(identity)
        if member is None:
            return _error(404, f"{identity} is not registered")
        return _json(member.to_wire())

    async def remove(request: web.Request) -> web.Response:
        await _registry(request).remove_member(Identity(role, _member_name(request)))
        return _json({"removed": f"{role.value}/{request.match_info['name']}"})

    async def token(request: web.Request) -> web.Response:
        body = _object(await _body(request) if request.can_read_body else {}, "{tokenTtlSeconds}")
        ttl = body.get("tokenTtlSeconds", request.app[SETTINGS_KEY].token_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise ValidationError("tokenTtlSeconds", "expected a number")
        identity = Identity(role, _member_name(request))
        return _json({"token": await _registry(request).mint_token(identity, float(ttl))}, 201)

    kind = record_type.__name__
    return [
        Route(
            "POST",
            f"/v1/{plural}",
            add,
            Access.ADMIN,
            f"Register a {kind}; returns its join token",
            f"Add{kind}",
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
        ),
    ]


# -- join and renew -----------------------------------------------------------


def _issued(request: web.Request, issued: Issued) -> web.Response:
    cert = issued.certificate
    return _json(
        {
            "identity": issued.identity.spiffe_id(_registry(request).trust_domain),
            "certificate": cert_pem(cert).decode(),
            "caBundle": issued.ca_pem.decode(),
            "notAfter": cert.not_valid_after_utc.timestamp(),
        }
    )


async def _join(request: web.Request) -> web.Response:
    body = _object(await _body(request), "{token, csr}")
    token, csr = body.get("token"), body.get("csr")
    if not isinstance(token, str) or not token:
        raise Unauthorized("a join token is required")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    return _issued(request, await _registry(request).join(token, csr))


async def _renew(request: web.Request) -> web.Response:
    identity = _identity(request)
    if identity is None or identity.role is Role.ADMIN:
        raise Forbidden(
            "only cluster and VM agents renew here; admins get a new credential from serve"
        )
    body = _object(await _body(request), "{csr}")
    csr = body.get("csr")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    return _issued(request, await _registry(request).renew(identity, csr))


async def _ca(request: web.Request) -> web.Response:
    ca = _registry(request).ca
    return _json({"certificate": ca.cert_pem.decode(), "sha256": ca.fingerprint})


# -- endpoint sets, heartbeats, policies --------------------------------------


async def _publish(request: web.Request) -> web.Response:
    service, source = _service(request), source_of(request.match_info["source"])
    endpoint_set = EndpointSet.from_wire(_object(await _body(request), "EndpointSet"))
    if endpoint_set.service != service or endpoint_set.source != source:
        raise ValidationError("service", "the body's service and source must match the path")
    revision, written = await _registry(request).publish(endpoint_set)
    return _json({"revision": revision, "written": written})


async def _withdraw(request: web.Request) -> web.Response:
    service, source = _service(request), source_of(request.match_info["source"])
    return _json({"revision": await _registry(request).withdraw(service, source)})


async def _service_detail(request: web.Request) -> web.Response:
    sets = await _registry(request).endpoint_sets(_service(request))
    return _json({"items": [s.to_wire() for s in sets]})


async def _services(request: web.Request) -> web.Response:
    summary: dict[str, dict[str, Any]] = {}
    for endpoint_set in await _registry(request).endpoint_sets():
        entry = summary.setdefault(
            str(endpoint_set.service), {"service": str(endpoint_set.service), "sources": []}
        )
        entry["sources"].append(
            {
                "source": str(endpoint_set.source),
                "generation": endpoint_set.generation,
                "endpoints": len(endpoint_set.endpoints),
                "healthy": sum(1 for e in endpoint_set.endpoints if e.healthy),
                "stale": endpoint_set.stale,
            }
        )
    return _json({"items": list(summary.values())})


async def _heartbeat(request: web.Request) -> web.Response:
    ttl = await _registry(request).heartbeat(source_of(request.match_info["source"]))
    return _json({"ttlSeconds": ttl})


async def _put_policy(request: web.Request) -> web.Response:
    service = _service(request)
    policy = TrafficPolicy.from_wire(_object(await _body(request), "TrafficPolicy"))
    if policy.service != service:
        raise ValidationError("service", "the body's service must match the path")
    return _json({"revision": await _registry(request).put_policy(policy)})


async def _delete_policy(request: web.Request) -> web.Response:
    return _json({"revision": await _registry(request).delete_policy(_service(request))})


async def _policies(request: web.Request) -> web.Response:
    return _json({"items": [p.to_wire() for p in await _registry(request).policies()]})


async def _status(request: web.Request) -> web.Response:
    registry = _registry(request)
    revision, items = await registry.snapshot()
    counts: dict[str, int] = {}
    stale: set[str] = set()
    for item in items:
        counts[item.kind] = counts.get(item.kind, 0) + 1
        if item.kind == "EndpointSet" and item.object and item.object.get("stale"):
            stale.add(str(item.object["source"]))
    return _json(
        {
            "revision": revision,
            "trustDomain": registry.trust_domain,
            "caSha256": registry.ca.fingerprint,
            "clusters": counts.get("Cluster", 0),
            "vms": counts.get("Workload", 0),
            "endpointSets": counts.get("EndpointSet", 0),
            "policies": counts.get("TrafficPolicy", 0),
            "staleSources": sorted(stale),
        }
    )


# -- snapshot and watch -------------------------------------------------------


async def _snapshot(request: web.Request) -> web.Response:
    revision, items = await _registry(request).snapshot()
    return _json({"revision": revision, "items": [i.to_wire() for i in items]})


def _since(request: web.Request) -> int | None:
    text = request.query.get("since")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ValidationError("since", f"{text!r} is not a revision (a non-negative integer)")
    return int(text)


async def _watch(request: web.Request) -> web.StreamResponse:
    """NDJSON changes after ``since``, with BOOKMARKs; 410 if too old.

    Headers go out only with the first line, so a compacted ``since`` gets
    a plain 410; if compaction overtakes a running stream it ends with an
    ERROR line carrying code 410, as Kubernetes watches do."""
    registry, metrics = _registry(request), request.app[METRICS_KEY]
    interval = request.app[SETTINGS_KEY].bookmark_interval
    since = _since(request)
    if since is None:
        since = (await registry.store.get(registry.prefix + "trust/root")).revision
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1024)

    async def pump() -> None:
        try:
            async for change in registry.watch(since):
                await queue.put(change)
        except Exception as err:  # noqa: BLE001 - handed to the stream, which ends with it
            await queue.put(err)

    reader = asyncio.create_task(pump())
    response: web.StreamResponse | None = None
    last = since
    metrics.watch_streams.inc()
    try:
        while True:
            # Until the headers are out, wait only briefly: long enough for a
            # compacted ``since`` to surface as a plain 410, short enough that
            # a quiet stream still answers at once.
            wait = interval if response is not None else min(interval, FIRST_LINE_WAIT)
            try:
                change = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                change = None
            if isinstance(change, Exception):
                if response is None:
                    raise change
                code = 410 if isinstance(change, Compacted) else 503
                line = {"type": "ERROR", "code": code, "message": str(change)}
                await response.write(json.dumps(line).encode() + b"\n")
                break
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                response.enable_chunked_encoding()
                await response.prepare(request)
            if isinstance(change, int):
                last = change
                continue
            if change is None:
                line = {"type": "BOOKMARK", "revision": last}
                metrics.events_sent.labels("BOOKMARK").inc()
            else:
                last = change.revision
                line = change.to_wire()
                metrics.events_sent.labels(change.type).inc()
            await response.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        metrics.watch_streams.dec()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    assert response is not None
    return response


# -- operations ---------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    registry = _registry(request)
    try:
        revision = (await registry.store.get(registry.prefix + "trust/root")).revision
    except StoreError as err:
        return _error(503, f"the store is not answering: {err}")
    return _json({"status": "ready", "revision": revision})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def _openapi(request: web.Request) -> web.Response:
    return _json(document(ROUTES))


ROUTES: list[Route] = [
    Route("GET", "/healthz", _healthz, Access.OPEN, "Liveness"),
    Route("GET", "/readyz", _readyz, Access.OPEN, "Readiness: the store answers"),
    Route("GET", "/metrics", _metrics, Access.OPEN, "Prometheus metrics"),
    Route("GET", "/openapi.json", _openapi, Access.OPEN, "This document"),
    Route("GET", "/v1/ca", _ca, Access.OPEN, "The mesh root certificate and its sha256"),
    Route(
        "POST",
        "/v1/join",
        _join,
        Access.OPEN,
        "Exchange a join token and a CSR for a client certificate",
        "Join",
    ),
    Route("POST", "/v1/renew", _renew, Access.MEMBER, "Renew the caller's certificate", "Renew"),
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
        "Renew a source's liveness lease",
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
    Route("GET", "/v1/status", _status, Access.ANY, "Counts, revision, stale sources"),
    Route("GET", "/v1/snapshot", _snapshot, Access.ANY, "Every watched object and the revision"),
    Route("GET", "/v1/watch", _watch, Access.ANY, "NDJSON changes after ?since=REV", stream=True),
]


def build_app(registry: Registry, settings: Settings | None = None) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY_BYTES)
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = Metrics()
    app[SETTINGS_KEY] = settings or Settings()
    for route in ROUTES:

        async def handler(request: web.Request, _route: Route = route) -> web.StreamResponse:
            return await _route.handler(request)

        handler.__route__ = route  # type: ignore[attr-defined]
        app.router.add_route(route.method, route.path, handler)
    return app


__all__ = ["ROUTES", "Route", "Settings", "build_app"]
