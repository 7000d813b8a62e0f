"""The dashboard: a page at ``/`` that renders ``/v1/dashboard`` and keeps
it live from the registry's own watch stream.

The page is one file shipped in the package (``dashboard.html``: markup,
style and a script, nothing fetched from elsewhere; the machines are
offline).  ``/v1/dashboard`` answers from memory the hub keeps (the
per-shard summary, the roster) plus the member and trust records, so a
refresh costs no endpoint-set read; services come paged and filtered, and
where one service routes from one consumer is asked for separately
(``/v1/dashboard/route/{namespace}/{name}?from=CLUSTER``), computed as
``fedctl route explain`` computes it."""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from federation.api.http import HUB_KEY, json_response, registry_of
from federation.api.openapi import DASHBOARD_PAGE_LIMIT
from federation.api.operator_routes import members_status
from federation.api.trust_routes import status_of
from federation.model import (
    Cluster,
    EndpointSet,
    Locality,
    ServiceRef,
    ValidationError,
    merge_shards,
)
from federation.model.validation import check_dns_label, check_int, check_service_name
from federation.registry import NotFound
from federation.shared.routing import choose, explained
from federation.trust.identity import Identity, Role

PAGE_LIMIT = DASHBOARD_PAGE_LIMIT  # services per page, at most
_PAGE = resources.files("federation.api").joinpath("dashboard.html")


async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=_PAGE.read_text(encoding="utf-8"),
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            # Its own script and style only; it talks to this origin only.
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        },
    )


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise ValidationError(name, f"{text!r} is not a non-negative integer")
    return check_int(name, int(text), 0, high)


async def data(request: web.Request) -> web.Response:
    """Members, one page of services, policies and the trust domain."""
    registry, hub = registry_of(request), request.app[HUB_KEY]
    offset = _query_int(request, "offset", 0, 10**9)
    limit = _query_int(request, "limit", 50, PAGE_LIMIT)
    text = request.query.get("filter", "")[:253]
    total, services = hub.summary.services(text, offset, limit)
    policies = [p.to_wire() for p in await registry.policies()]
    trust = await status_of(request)
    return json_response(
        {
            "revision": hub.head,
            "trustDomain": registry.trust_domain,
            "replica": registry.election.replica,
            "members": await members_status(registry, hub, hub.summary.stale_sources()),
            "services": {"total": total, "offset": offset, "limit": limit, "items": services},
            "policies": policies,
            "trust": {
                "phase": trust["phase"],
                "version": trust["version"],
                "roots": trust["roots"],
                "pending": trust["pending"],
            },
        }
    )


async def route(request: web.Request) -> web.Response:
    """Where ``service`` routes now from consumer cluster ``?from=``."""
    ns, name = request.match_info["namespace"], request.match_info["name"]
    service = ServiceRef(
        namespace=check_dns_label("namespace", ns), name=check_service_name("name", name)
    )
    consumer = check_dns_label("from", request.query.get("from", ""))
    registry = registry_of(request)
    record = await registry.member(Identity(Role.CLUSTER, consumer))
    if not isinstance(record, Cluster):
        raise NotFound(f"cluster {consumer} is not registered")
    sets: dict[str, list[EndpointSet]] = {}
    async for endpoint_set in registry.endpoint_sets(service):
        sets.setdefault(str(endpoint_set.source), []).append(endpoint_set)
    if not sets:
        raise NotFound(f"no cluster or VM exports {service}")
    policy = next((p for p in await registry.policies() if p.service == service), None)
    where = Locality(region=record.locality.region, zone=record.locality.zone, cluster=consumer)
    merged = [merge_shards(shards) for shards in sets.values()]
    answer: dict[str, Any] = explained(choose(merged, where, policy, now=0.0))
    answer.update({"service": str(service), "from": consumer})
    return json_response(answer)


__all__ = ["data", "page", "route"]
