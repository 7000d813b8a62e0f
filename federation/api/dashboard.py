"""The dashboard at ``/``: one server-rendered page of what the registry
holds (clusters, VMs, exported services and their sources), for any
federation identity; no script, nothing fetched from elsewhere."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from federation.api.http import registry_of

STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:2em}"
    "th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}"
    "th{background:#f3f3f3}.stale{color:#b00}"
)


async def dashboard(request: web.Request) -> web.Response:
    registry = registry_of(request)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    revision = 0
    async for page_revision, items in registry.snapshot():
        revision = page_revision
        for item in items:
            obj = item.object
            if obj is not None:
                by_kind.setdefault(item.kind, []).append(obj)
    stale = {str(o["source"]) for o in by_kind.get("EndpointSet", []) if o.get("stale")}
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>federation</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Federation {_e(registry.trust_domain)}</h1>",
        f"<p>Revision {revision}; mesh root sha256 <code>{_e(registry.ca.fingerprint)}</code></p>",
        "<h2>Clusters</h2>",
        _table(
            ("name", "region", "zone", "network", "state"),
            (_member_row(o, f"cluster:{o['name']}", stale) for o in by_kind.get("Cluster", [])),
        ),
        "<h2>VMs</h2>",
        _table(
            ("name", "region", "zone", "network", "state"),
            (_member_row(o, f"vm:{o['name']}", stale) for o in by_kind.get("Workload", [])),
        ),
        "<h2>Services</h2>",
        _table(
            ("service", "source", "generation", "endpoints", "ready", "state"),
            (_set_row(o) for o in by_kind.get("EndpointSet", [])),
        ),
        "</body></html>",
    ]
    return web.Response(text="".join(parts), content_type="text/html")


def _member_row(obj: dict[str, Any], source: str, stale: set[str]) -> Sequence[str]:
    locality = obj.get("locality", {})
    state = "stale" if source in stale else "live"
    return (obj["name"], locality.get("region", ""), locality.get("zone", ""),
            obj.get("network", ""), state)  # fmt: skip


def _set_row(obj: dict[str, Any]) -> Sequence[str]:
    service = obj["service"]
    endpoints = obj.get("endpoints", [])
    ready = sum(1 for e in endpoints if e.get("ready", True))
    return (f"{service['namespace']}/{service['name']}", str(obj["source"]),
            str(obj["generation"]), str(len(endpoints)), str(ready),
            "stale" if obj.get("stale") else "live")  # fmt: skip


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{_cls(c)}>{_e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body or '<tr><td colspan=9>none</td></tr>'}</table>"


def _cls(cell: str) -> str:
    return ' class="stale"' if cell == "stale" else ""


def _e(text: object) -> str:
    return html.escape(str(text))


__all__ = ["dashboard"]
