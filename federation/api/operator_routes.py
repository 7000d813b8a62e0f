"""What an operator reads and manages beside the federation itself: the
status (counts, members, leader, rotation), the metrics and named admin
credentials."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from federation.api.auth import Access
from federation.api.http import (
    HUB_KEY,
    METRICS_KEY,
    Route,
    json_response,
    read_json,
    registry_of,
    require_object,
)
from federation.api.hub import WatchHub
from federation.api.trust_routes import issued_fields
from federation.model import ValidationError
from federation.model.validation import check_dns_label
from federation.registry import Liveness, Registry, StoreError
from federation.trust.identity import Identity, Role
from federation.trust.rotation import Phase

log = logging.getLogger("federation.api")


async def _status(request: web.Request) -> web.Response:
    registry = registry_of(request)
    counts: dict[str, int] = {}
    revision = 0
    async for page_revision, items in registry.snapshot():
        revision = page_revision
        for item in items:
            counts[item.kind] = counts.get(item.kind, 0) + 1
    stale = request.app[HUB_KEY].summary.stale_sources()  # no set decoded per request
    leader = await registry.leader()
    trust = await registry.trust.refresh()
    return json_response(
        {
            "revision": revision,
            "trustDomain": registry.trust_domain,
            "caSha256": registry.ca.fingerprint,
            "rotation": {"phase": trust.phase.value, "bundleVersion": trust.version},
            "clusters": counts.get("Cluster", 0),
            "vms": counts.get("Workload", 0),
            "endpointSets": counts.get("EndpointSet", 0),
            "policies": counts.get("TrafficPolicy", 0),
            "staleSources": sorted(stale),
            "members": await members_status(registry, request.app[HUB_KEY], stale),
            "replica": registry.election.replica,
            "leader": None if leader is None else leader.to_wire(),
        }
    )


async def members_status(
    registry: Registry, hub: WatchHub, stale: dict[str, int]
) -> list[dict[str, Any]]:
    """Per member: joined (holds a client certificate), alive (its liveness
    lease holds) and since when, stale shards, certificate expiry, and its
    convergence lag (``member_lag``)."""
    certificates = {
        r["identity"]: float(r["notAfter"])
        for r in await registry.trust.issued()
        if r.get("kind") == "client"
    }
    alive = await registry.liveness_records()
    rows = []
    for role in (Role.CLUSTER, Role.VM):
        for member in await registry.members(role):
            identity = Identity(role, member.name)
            source = identity.source
            assert source is not None
            rows.append(
                {
                    "name": member.name,
                    "kind": source.kind.value,
                    "region": member.locality.region,
                    "zone": member.locality.zone,
                    "network": member.locality.network,
                    "joined": str(identity) in certificates,
                    "certNotAfter": certificates.get(str(identity)),
                    "alive": str(source) in alive,
                    "aliveSince": live.since if (live := alive.get(str(source))) else None,
                    "staleShards": stale.get(str(source), 0),
                    **member_lag(hub, live),
                }
            )
    return rows


def member_lag(hub: WatchHub, live: Liveness | None) -> dict[str, Any]:
    """The revision a member's agent has materialized, the watched changes
    after it and the seconds since the first of them: all null for a
    member that is not alive or whose agent does not say."""
    if live is None or live.applied is None:
        return {"appliedRevision": None, "changesBehind": None, "lagSeconds": None}
    lag = hub.lag(live.applied)
    return {
        "appliedRevision": live.applied,
        "changesBehind": lag.changes,
        "lagSeconds": round(lag.seconds, 3),
        "behindBuffer": lag.beyond_buffer,
    }


async def _add_admin(request: web.Request) -> web.Response:
    body = require_object(await read_json(request), "{name, csr}")
    name = check_dns_label("name", body.get("name"))
    csr = body.get("csr")
    if not isinstance(csr, str):
        raise ValidationError("csr", "expected a PEM certificate request")
    issued = await registry_of(request).admins.add(name, csr)
    return json_response(issued_fields(issued), 201)


async def _admins(request: web.Request) -> web.Response:
    registry = registry_of(request)
    expiry = {
        r["identity"]: r["notAfter"]
        for r in await registry.trust.issued()
        if r.get("kind") == "client" and str(r.get("identity", "")).startswith("admin/")
    }
    items = [
        {**a, "certNotAfter": expiry.get(f"admin/{a['name']}")} for a in await registry.admins.all()
    ]
    return json_response({"items": items})


async def _remove_admin(request: web.Request) -> web.Response:
    name = check_dns_label("name", request.match_info["name"])
    await registry_of(request).admins.remove(name)
    return json_response({"revoked": f"admin/{name}"})


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text, the gauges read from the store and the hub first."""
    metrics = request.app[METRICS_KEY]
    try:
        issued = await registry_of(request).trust.issued()
    except StoreError as err:
        log.warning("metrics: cannot read the issued certificates: %s", err)
    else:
        metrics.cert_expiry.clear()
        for record in issued:
            metrics.cert_expiry.labels(record["identity"], record["kind"]).set(
                float(record["notAfter"])
            )
    try:
        alive = await registry_of(request).liveness_records()
    except StoreError as err:
        log.warning("metrics: cannot read liveness: %s", err)
    else:
        hub = request.app[HUB_KEY]
        metrics.lag_changes.clear()
        metrics.lag_seconds.clear()
        for source, live in alive.items():
            if live.applied is not None:
                kind, _, name = source.partition(":")
                lag = hub.lag(live.applied)
                metrics.lag_changes.labels(kind, name).set(lag.changes)
                metrics.lag_seconds.labels(kind, name).set(lag.seconds)
    hub = request.app[HUB_KEY]
    metrics.stale_sources.set(len(hub.summary.stale_sources()))
    metrics.loop_load.set(hub.load)
    metrics.watch_window.set(hub.window())
    try:
        phase = (await registry_of(request).trust.refresh()).phase
    except StoreError as err:
        log.warning("metrics: cannot read the trust state: %s", err)
    else:
        for each in Phase:
            metrics.rotation_phase.labels(each.value).set(int(each is phase))
    election = registry_of(request).election
    metrics.leading.set(int(election.leading))
    metrics.leader_terms.set(election.terms)
    body = generate_latest(metrics.registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


OPERATOR_ROUTES = [
    Route("GET", "/v1/status", _status, Access.ANY, "Counts, revision, stale sources"),
    Route("POST", "/v1/admins", _add_admin, Access.ADMIN, "Issue a named admin credential",
          "AdminRequest", status=201),
    Route("GET", "/v1/admins", _admins, Access.ADMIN, "The named admin credentials"),
    Route("DELETE", "/v1/admins/{name}", _remove_admin, Access.ADMIN,
          "Revoke a named admin credential, at once"),
]  # fmt: skip


__all__ = ["OPERATOR_ROUTES"]
