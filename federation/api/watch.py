"""Snapshot and the NDJSON watch stream of the registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from federation.api.http import METRICS_KEY, SETTINGS_KEY, json_response, registry_of
from federation.model import ValidationError
from federation.store import Compacted

FIRST_LINE_WAIT = 0.25


async def snapshot(request: web.Request) -> web.Response:
    revision, items = await registry_of(request).snapshot()
    return json_response({"revision": revision, "items": [i.to_wire() for i in items]})


def _since(request: web.Request) -> int | None:
    text = request.query.get("since")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ValidationError("since", f"{text!r} is not a revision (a non-negative integer)")
    return int(text)


async def watch(request: web.Request) -> web.StreamResponse:
    """NDJSON changes after ``since``, with BOOKMARKs; 410 if too old.

    Headers go out only with the first line, so a compacted ``since`` gets
    a plain 410; if compaction overtakes a running stream it ends with an
    ERROR line carrying code 410, as Kubernetes watches do."""
    registry, metrics = registry_of(request), request.app[METRICS_KEY]
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
