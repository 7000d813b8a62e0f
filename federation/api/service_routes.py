"""Exported services: publish and withdraw endpoint sets, read services,
heartbeats, traffic policies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.api.auth import Access
from federation.api.http import (
    HUB_KEY,
    Route,
    json_response,
    read_json,
    registry_of,
    require_object,
    service_of,
    source_of,
)
from federation.model import (
    MAX_SHARDS,
    Cluster,
    EndpointSet,
    SourceRef,
    TrafficPolicy,
    ValidationError,
    Workload,
    merge_shards,
)
from federation.model.claims import Contradiction, check_claims
from federation.model.deltas import PublishDelta
from federation.model.validation import Fields, check_int
from federation.registry import NotFound
from federation.trust.identity import Identity

# -- endpoint sets, heartbeats, policies --------------------------------------


PUBLISH_PACING = 2.0  # the longest a publish waits for this replica's fan-out to reach it


async def _publisher(request: web.Request, source: SourceRef) -> Cluster | Workload:
    """The registered member a publish is checked against."""
    member = await request.app[HUB_KEY].roster.lookup(
        registry_of(request), Identity.of_source(source)
    )
    if member is None:
        raise NotFound(f"source {source} is not registered")
    return member


async def _publish(request: web.Request) -> web.Response:
    """Validate and write one shard.  The answer waits (up to
    PUBLISH_PACING) until this replica's watch hub has taken the write:
    publishers then cannot outrun the fan-out, and a busy registry slows
    its publishers instead of letting delivery fall seconds behind
    (decision 43)."""
    service, source = service_of(request), source_of(request.match_info["source"])
    endpoint_set = EndpointSet.from_wire(require_object(await read_json(request), "EndpointSet"))
    if endpoint_set.service != service or endpoint_set.source != source:
        raise Contradiction("service", "the body's service and source must match the path")
    member = await _publisher(request, source)
    check_claims(endpoint_set, member)
    revision, written = await registry_of(request).publish(endpoint_set, member)
    if written:
        await request.app[HUB_KEY].caught_up(revision, PUBLISH_PACING)
    return json_response({"revision": revision, "written": written})


async def _publish_delta(request: web.Request) -> web.Response:
    """Apply a publisher's delta to its stored shard (decision 50): only
    the endpoints it carries are decoded and checked; the claims of those
    it adds, and of the rest when this replica did not write the shard
    last (decision 60); paced as ``_publish`` is.  409 when the stored
    shard is not the delta's base: the publisher sends the whole shard."""
    service, source = service_of(request), source_of(request.match_info["source"])
    body = require_object(await read_json(request), "EndpointSetDelta")
    delta = PublishDelta.from_wire(body, service, source)
    member = await _publisher(request, source)
    revision = await registry_of(request).publish_delta(delta, member)
    await request.app[HUB_KEY].caught_up(revision, PUBLISH_PACING)
    return json_response({"revision": revision, "written": True})


async def _withdraw(request: web.Request) -> web.Response:
    """Every shard of the source, or the one ``?shard=N`` names."""
    service, source = service_of(request), source_of(request.match_info["source"])
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
    async for endpoint_set in registry_of(request).endpoint_sets(service_of(request)):
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


async def heartbeat(request: web.Request) -> web.Response:
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
    service = service_of(request)
    policy = TrafficPolicy.from_wire(require_object(await read_json(request), "TrafficPolicy"))
    if policy.service != service:
        raise Contradiction("service", "the body's service must match the path")
    return json_response({"revision": await registry_of(request).put_policy(policy)})


async def _delete_policy(request: web.Request) -> web.Response:
    return json_response(
        {"revision": await registry_of(request).delete_policy(service_of(request))}
    )


async def _policies(request: web.Request) -> web.Response:
    return json_response({"items": [p.to_wire() for p in await registry_of(request).policies()]})


SERVICE_ROUTES: list[Route] = [
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
        "PATCH",
        "/v1/services/{namespace}/{name}/sources/{source}",
        _publish_delta,
        Access.OWNER,
        "Change a source's published shard by a delta from its base generation",
        "EndpointSetDelta",
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
        heartbeat,
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
]

__all__ = ["PUBLISH_PACING", "SERVICE_ROUTES", "heartbeat"]
