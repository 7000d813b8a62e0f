"""Snapshot and the NDJSON watch stream of the registry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from federation.api.http import HUB_KEY, IDENTITY_KEY, METRICS_KEY, SETTINGS_KEY, registry_of
from federation.api.hub import Entry, Sink, line_kinds
from federation.model import ValidationError
from federation.registry import Compacted, Item, StoreError
from federation.shared.tasks import cancel_and_wait

FIRST_LINE_WAIT = 0.25
WRITE_BYTES = 256 * 1024


async def snapshot(request: web.Request) -> web.StreamResponse:
    """Every watched object at one revision, as NDJSON (docs/api.md):
    ``BEGIN`` with the revision, one ``PUT`` line per object (its stored
    bytes spliced in), then ``END`` with the count.  The store is read page
    by page at that revision, so neither side holds the whole federation.
    A stream without its ``END`` line is incomplete: a store fault or a
    compaction mid-way ends it with an ``ERROR`` line (503 or 410)."""
    pages = registry_of(request).snapshot()
    revision, items = await anext(pages)  # store faults before any line are plain errors
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(_line({"type": "BEGIN", "revision": revision}))
    count = 0

    async def send(page: list[Item]) -> None:
        nonlocal count
        if page:
            await response.write(b"".join(i.line("PUT", revision) for i in page))
            count += len(page)

    try:
        await send(items)
        async for _, page in pages:
            await send(page)
    except (Compacted, StoreError) as err:
        code = 410 if isinstance(err, Compacted) else 503
        await response.write(_line({"type": "ERROR", "code": code, "message": str(err)}))
        return response
    finally:
        await pages.aclose()
    await response.write(_line({"type": "END", "revision": revision, "count": count}))
    return response


def _since(request: web.Request) -> int | None:
    text = request.query.get("since")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ValidationError("since", f"{text!r} is not a revision (a non-negative integer)")
    return int(text)


def _patches(request: web.Request) -> bool:
    text = request.query.get("patches", "false")
    if text not in ("true", "false"):
        raise ValidationError("patches", f"{text!r} is not true or false")
    return text == "true"


async def watch(request: web.Request) -> web.StreamResponse:
    """NDJSON changes after ``since``, with BOOKMARKs; 410 if too old.
    With ``patches=true``, a rewritten endpoint set may come as a PATCH
    line: the delta from the value before it (docs/api.md).

    Served from the process's watch hub when its buffer reaches back to
    ``since``, else from a store watch of the stream's own.  If compaction
    overtakes a running stream it ends with an ERROR line carrying code
    410, as Kubernetes watches do."""
    since, deltas = _since(request), _patches(request)
    if since is not None and since > request.app[HUB_KEY].head:
        current = await registry_of(request).revision()
        if since > current:  # a bookmark there would claim what nobody has seen
            raise ValidationError(
                "since", f"revision {since} is ahead of the registry's revision {current}"
            )
    subscription = request.app[HUB_KEY].subscribe(since)
    if subscription is None:
        assert since is not None
        return await _store_watch(request, since)
    metrics = request.app[METRICS_KEY]
    interval = request.app[SETTINGS_KEY].bookmark_interval
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    metrics.watch_streams.inc()
    loop = asyncio.get_running_loop()
    bookmarked = loop.time()
    try:
        await response.prepare(request)
        while True:
            try:
                entries = await subscription.next()  # some, or the hub's tick
            except Compacted as err:
                await response.write(_line({"type": "ERROR", "code": 410, "message": str(err)}))
                break
            if (revoked := _revoked(request)) is not None:
                await response.write(revoked)
                break
            _count(metrics.events_sent, entries, deltas)
            for batch in _batches(entries, deltas):
                await response.write(batch)
            if subscription.sink is None and entries:  # the headers went out with them
                subscription.sink = _sink(request, deltas)
            now = loop.time()
            # A bookmark at least every interval, idle or under traffic, as
            # a progress mark (the hub ticks four times an interval).
            if now - bookmarked >= interval:
                metrics.events_sent.labels("BOOKMARK").inc()
                await response.write(_line({"type": "BOOKMARK", "revision": subscription.revision}))
                bookmarked = now
    except ConnectionResetError:  # the client left; a cancellation propagates
        pass
    finally:
        metrics.watch_streams.dec()
    return response


def _count(counter: Counter, entries: list[Entry], deltas: bool) -> None:
    """The lines a stream sends, by type: one counter step per type and
    batch (a labelled child's lookup per line costs more than the write)."""
    for kind, count in line_kinds(entries, deltas).items():
        counter.labels(kind).inc(count)


def _batches(entries: list[Entry], deltas: bool) -> Iterator[bytes]:
    """The entries' lines joined into writes of about WRITE_BYTES: a stream
    that is far behind never copies its whole backlog at once."""
    batch: list[bytes] = []
    size = 0
    for entry in entries:
        line = entry.for_stream(deltas)
        batch.append(line)
        size += len(line)
        if size >= WRITE_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _sink(request: web.Request, deltas: bool) -> Sink | None:
    """Where the hub may write this stream's lines while it waits
    (decision 58), or None to have it always woken."""
    transport = request.transport
    if transport is None or request.app[SETTINGS_KEY].woken_streams:
        return None
    identity = request.get(IDENTITY_KEY)
    roster = request.app[HUB_KEY].roster
    if identity is None:
        return Sink(transport, deltas, lambda: True)
    return Sink(transport, deltas, lambda: roster.admits(identity))


def _revoked(request: web.Request) -> bytes | None:
    """The ERROR line that ends a stream whose caller was removed meanwhile."""
    identity = request.get(IDENTITY_KEY)
    roster = request.app[HUB_KEY].roster
    if identity is None or roster.admits(identity):
        return None
    message = roster.refusal(identity)
    return _line({"type": "ERROR", "code": 401, "reason": "Revoked", "message": message})


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def _store_watch(request: web.Request, since: int) -> web.StreamResponse:
    """A stream from ``since`` on a store watch of its own.

    Headers go out only with the first line, so a compacted ``since`` gets
    a plain 410."""
    registry, metrics = registry_of(request), request.app[METRICS_KEY]
    interval = request.app[SETTINGS_KEY].bookmark_interval
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
                await response.write(_line({"type": "ERROR", "code": code, "message": str(change)}))
                break
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                response.enable_chunked_encoding()
                await response.prepare(request)
            if (revoked := _revoked(request)) is not None:
                await response.write(revoked)
                break
            if isinstance(change, int):
                last = change
                continue
            if change is None:
                metrics.events_sent.labels("BOOKMARK").inc()
                await response.write(_line({"type": "BOOKMARK", "revision": last}))
            else:
                last = change.revision
                metrics.events_sent.labels(change.type).inc()
                await response.write(change.line())
    except ConnectionResetError:  # the client left; a cancellation propagates
        pass
    finally:
        metrics.watch_streams.dec()
        await cancel_and_wait(reader)  # its failure went to the stream
    assert response is not None
    return response
