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

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

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
    member_name,
    registry_of,
    source_of,
)
from federation.api.hub import WatchHub
from federation.api.member_routes import MEMBER_ROUTES
from federation.api.openapi import document
from federation.api.operator_routes import OPERATOR_ROUTES, metrics_page
from federation.api.service_routes import SERVICE_ROUTES, heartbeat
from federation.api.trust_routes import TRUST_ROUTES
from federation.model import (
    SourceKind,
    SourceRef,
    ValidationError,
)
from federation.model.validation import (
    Inconsistent,
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
AUDITED_KEY = web.RequestKey("audited", bool)


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


class AccessLog(AbstractAccessLogger):
    """One line per request that the audit log does not already record
    (reads, streams, unmatched paths), at INFO on ``aiohttp.access``: a
    write is audited with its caller and outcome, and a second line for it
    cost the registry 2% of its loop under churn (decision 56)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.get(AUDITED_KEY):
            return
        self.logger.info(
            '%s "%s %s" %d %.3fs',
            request.remote,
            request.method,
            request.path_qs,
            response.status,
            time,
        )


# -- helpers ------------------------------------------------------------------


def _owner(request: web.Request) -> SourceRef:
    """The source a route's path names: ``{source}``, or the cluster of
    ``/v1/clusters/{name}/...``."""
    info = request.match_info
    if "source" in info:
        return source_of(info["source"])
    return SourceRef(kind=SourceKind.CLUSTER, name=member_name(request))


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
        request[AUDITED_KEY] = True
        outcome = "denied" if response.status in (401, 403) else str(response.status)
        # A renewed lease changes nothing: heartbeats (every few seconds per
        # member) are audited at DEBUG unless refused.
        quiet = route.handler is heartbeat and response.status == 200
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
    *TRUST_ROUTES,
    *OPERATOR_ROUTES,
    *MEMBER_ROUTES,
    *SERVICE_ROUTES,
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
    events_sent = app[METRICS_KEY].events_sent
    app[HUB_KEY] = WatchHub(
        registry,
        tick=app[SETTINGS_KEY].bookmark_interval / 4,
        sent=lambda kind, count: events_sent.labels(kind).inc(count),
    )
    app[HEALTH_KEY] = Health()
    app.cleanup_ctx.append(_run_hub)
    for route in ROUTES:

        async def handler(request: web.Request, _route: Route = route) -> web.StreamResponse:
            return await _route.handler(request)

        handler.__route__ = route  # type: ignore[attr-defined]
        app.router.add_route(route.method, route.path, handler)
    return app


__all__ = ["ROUTES", "Route", "Settings", "build_app"]
