"""What every registry route shares: the app keys, settings, metrics, and
JSON in and out (errors as ``{"code", "reason", "message"[, "field"]}``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from federation.api.auth import Access
from federation.api.hub import WatchHub
from federation.model import ServiceRef, SourceRef, ValidationError
from federation.model.validation import check_dns_label, check_service_name
from federation.registry import Invalid, Registry
from federation.trust.identity import Identity

log = logging.getLogger("federation.api")


# No ``_created`` series beside every counter and histogram.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The registry's Prometheus metrics, in a registry of their own per app."""

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
        self.cert_expiry = Gauge(
            "federation_cert_expiry_timestamp_seconds",
            "When each certificate the registry issued expires (newest per member and kind)",
            ["identity", "kind"],
            registry=self.registry,
        )
        self.leading = Gauge(
            "federation_registry_leading",
            "1 on the replica that holds the leader key and runs the singleton work",
            registry=self.registry,
        )
        self.leader_terms = Gauge(
            "federation_registry_leader_terms",
            "How many times this replica became leader since it started",
            registry=self.registry,
        )
        self.lag_changes = Gauge(
            "federation_registry_member_lag_changes",
            "Watched changes after the revision each live member's agent has materialized",
            ["kind", "name"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "federation_registry_member_lag_seconds",
            "Seconds since the revision each live member's agent has materialized was the head",
            ["kind", "name"],
            registry=self.registry,
        )
        self.stale_sources = Gauge(
            "federation_registry_stale_sources",
            "Sources with at least one stale endpoint-set shard",
            registry=self.registry,
        )
        self.rotation_phase = Gauge(
            "federation_registry_rotation_phase",
            "1 for the root rotation's current phase (Idle when none runs)",
            ["phase"],
            registry=self.registry,
        )
        self.loop_load = Gauge(
            "federation_registry_loop_load",
            "Fraction of the last hub tick the event loop's thread spent on the CPU",
            registry=self.registry,
        )
        self.watch_window = Gauge(
            "federation_registry_watch_window_seconds",
            "How long a burst of changes now waits before watch streams wake",
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "federation_http_request_duration_seconds",
            "Time the registry took to answer a request (not streams), by route and method",
            ["route", "method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )


@dataclass
class Health:
    """The background tasks a registry process cannot do without: one that
    ends (other than by cancellation) is logged with its traceback, makes
    ``/readyz`` answer 503 naming it, and sets ``ended``, on which
    ``fedctl registry serve`` exits non-zero: never a replica dying unseen."""

    failed: dict[str, str] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def supervise(self, task: asyncio.Task[None], name: str) -> None:
        task.add_done_callback(lambda done: self._ended(done, name))

    def _ended(self, task: asyncio.Task[None], name: str) -> None:
        if task.cancelled():
            return
        error = task.exception()
        why = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        self.failed[name] = why
        self.ended.set()
        log.error("the %s task stopped (%s); this replica is not ready", name, why,
                  exc_info=error)  # fmt: skip


@dataclass
class Settings:
    bookmark_interval: float = 5.0
    token_ttl: float = 3600.0
    # Every watch stream woken to write its own lines, as before decision
    # 58 (the hub writes none itself): for A/B measurements and diagnosis.
    woken_streams: bool = False


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    body: str | None = None  # schema name of the JSON body, for OpenAPI
    body_required: bool = True
    stream: bool = False
    status: int = 200  # what it answers when it succeeds


REGISTRY_KEY = web.AppKey("registry", Registry)
METRICS_KEY = web.AppKey("metrics", Metrics)
SETTINGS_KEY = web.AppKey("settings", Settings)
HUB_KEY = web.AppKey("hub", WatchHub)
HEALTH_KEY = web.AppKey("health", Health)
IDENTITY_KEY = web.RequestKey("identity", Identity)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o))


def error_response(
    status: int, message: str, field: str | None = None, reason: str | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "code": status,
        "reason": reason or REASONS.get(status, "Error"),
        "message": message,
    }
    if field:
        body["field"] = field
    return json_response(body, status)


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Unprocessable",
    500: "InternalError",
    503: "ServiceUnavailable",
}


async def read_json(request: web.Request) -> Any:
    """The body as JSON: strict (no NaN or Infinity), and nesting that would
    exhaust the parser's recursion is a 400, never a 500."""
    raw = await request.read()
    try:
        return orjson.loads(raw)  # strict: NaN and Infinity are not JSON
    except orjson.JSONDecodeError as err:
        raise Invalid(_why_not_json(raw, err)) from None


def _why_not_json(raw: bytes, err: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused.  The standard parser
    names the cause better (``NaN``, a bad escape), so on this path only
    it reads the body again."""
    nested = "the body is nested too deeply"
    if "depth limit" in str(err):
        return nested
    try:
        json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        return nested
    except (ValueError, UnicodeDecodeError) as why:
        return f"the body is not valid JSON: {why}"
    return f"the body is not valid JSON: {err}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("", f"expected a JSON object ({what})")
    return body


def registry_of(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


# -- what a route's path names ----------------------------------------------


def source_of(text: str) -> SourceRef:
    """A ``{source}`` path segment (``kind:name``)."""
    try:
        return SourceRef.parse(text)
    except ValidationError as err:
        raise Invalid(str(err)) from err


def service_of(request: web.Request) -> ServiceRef:
    ns, name = request.match_info["namespace"], request.match_info["name"]
    check_dns_label("namespace", ns)
    check_service_name("name", name)
    return ServiceRef(namespace=ns, name=name)


def member_name(request: web.Request) -> str:
    return check_dns_label("name", request.match_info["name"])
