"""What every agent's metrics say of its link to the registry: connected,
the last line it read, how often its stream broke, the revision it has
materialized and when its certificate expires.  Read from the client at
scrape time, so nothing on the data path updates a metric per event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

from agents.client import RegistryClient

# No ``_created`` series beside every counter and histogram.
disable_created_metrics()  # type: ignore[no-untyped-call]


class LinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connected = Gauge(
            "federation_agent_registry_connected",
            "1 while the agent's stream from the registry is up",
            registry=registry,
        )
        self.last_sync = Gauge(
            "federation_agent_last_sync_timestamp_seconds",
            "When the agent last read a line of the registry's stream (bookmarks included)",
            registry=registry,
        )
        self.reconnects = Counter(
            "federation_agent_watch_reconnects",
            "How often the agent's stream from the registry broke and was resumed",
            registry=registry,
        )
        self.applied = Gauge(
            "federation_agent_applied_revision",
            "The registry revision this agent has materialized: every change at or before it",
            registry=registry,
        )
        self.cert_expiry = Gauge(
            "federation_agent_certificate_expiry_timestamp_seconds",
            "When the agent's client certificate expires",
            registry=registry,
        )
        self._breaks = 0

    def refresh(self, client: RegistryClient) -> None:
        stream = client.stream
        self.connected.set(int(stream.connected))
        self.last_sync.set(stream.last_line_at)
        if stream.breaks > self._breaks:
            self.reconnects.inc(stream.breaks - self._breaks)
            self._breaks = stream.breaks
        if client.credentials is not None:
            self.cert_expiry.set(client.credentials.certificate.not_valid_after_utc.timestamp())


def health_app(
    ready: Callable[[], tuple[bool, dict[str, Any]]],
    metrics: CollectorRegistry,
    link: LinkMetrics,
    client: RegistryClient,
) -> web.Application:
    """An agent's ``/healthz``, ``/readyz`` (503 until ``ready`` says so,
    with the body it gives) and ``/metrics`` (the link read at scrape)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ok, body = ready()
        return web.json_response(body, status=200 if ok else 503)

    async def scrape(request: web.Request) -> web.Response:
        link.refresh(client)
        body = generate_latest(metrics)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", scrape)
    return app


__all__ = [
    "LinkMetrics",
    "health_app",
]
