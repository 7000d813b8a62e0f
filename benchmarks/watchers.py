"""bench-scale's watchers: one watch stream per faked cluster, read as a
remote cluster's socket would deliver it, and when each saw each change."""

from __future__ import annotations

import asyncio
import re
import time

import yarl

from agents.client import RegistryClient

# A change is its revision and key: etcd's group commit puts several at
# one revision (decision 57).
REVISION = re.compile(
    rb'^\{"type":"(?:PUT|PATCH)","revision":(\d+),"kind":"\w+","key":"([^"]+)"', re.MULTILINE
)


class Arrivals:
    """When each watcher saw each change, a change being its (revision,
    key) as the line's bytes carry them: the fakes stand in for remote
    machines, so their bookkeeping is kept cheap (a chunk's changes are
    found in one pass and stamped with the time the chunk arrived)."""

    def __init__(self) -> None:
        self.sent: dict[tuple[bytes, bytes], float] = {}
        self.publishes: list[float] = []  # publish round trips, seconds
        self.seen: dict[tuple[bytes, bytes], list[float]] = {}
        self.skipped = 0  # updates not sent: every cluster was still publishing
        # What the regex found in a run of lines, by the bytes: every stream
        # reads the same window's lines, so each is matched once, not 255
        # times (the fakes' largest cost).  Bounded: cleared when full.
        self._found: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def changes_in(self, lines: bytes) -> list[tuple[bytes, bytes]]:
        found = self._found.get(lines)
        if found is None:
            if len(self._found) >= 4096:
                self._found.clear()
            found = self._found[lines] = REVISION.findall(lines)
        return found

    def arrived(self, changes: list[tuple[bytes, bytes]], at: float) -> None:
        seen = self.seen
        for change in changes:
            times = seen.get(change)
            if times is None:
                seen[change] = [at]
            else:
                times.append(at)

    def latencies(self) -> list[float]:
        out = []
        for change, started in self.sent.items():
            out += [t - started for t in self.seen.get(change, ())]
        return out

    def delivered(self, watchers: int) -> float:
        wanted = len(self.sent) * watchers
        got = sum(len(self.seen.get(r, ())) for r in self.sent)
        return got / wanted if wanted else 1.0


class WatchReader(asyncio.Protocol):
    """One watch stream, read as a remote cluster's socket would deliver
    it: the response's bytes straight from the TLS transport, without
    aiohttp's client between (its parser, stream reader and a task wake per
    read cost the fakes, which share the registry's 2 cores, about a third
    of their CPU).  The status line and headers are checked; each run of
    complete lines goes to the arrivals' one regex, which matches only at
    a line's start, so the chunked framing's size lines between chunks
    (the registry frames whole lines) are never taken for a change."""

    def __init__(self, arrivals: Arrivals, ready: asyncio.Future[None]) -> None:
        self.arrivals = arrivals
        self.ready = ready
        self.closed: asyncio.Future[None] = ready.get_loop().create_future()
        self.pending = b""
        self.head = True

    def data_received(self, data: bytes) -> None:
        at = time.perf_counter()
        pending = self.pending + data
        if self.head:
            end = pending.find(b"\r\n\r\n")
            if end < 0:
                self.pending = pending
                return
            head, pending = pending[:end].lower(), pending[end + 4 :]
            self.head = False
            if not head.startswith(b"http/1.1 200") or b"transfer-encoding: chunked" not in head:
                self.ready.set_exception(AssertionError(head.decode(errors="replace")))
                return
            self.ready.set_result(None)
        end = pending.rfind(b"\n") + 1  # the complete lines
        if end:
            self.arrivals.arrived(self.arrivals.changes_in(pending[:end]), at)
            pending = pending[end:]
        self.pending = pending

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionResetError("closed before its headers"))
        if not self.closed.done():
            self.closed.set_result(None)


async def registry_watch(
    client: RegistryClient, since: int, arrivals: Arrivals, ready: list[None], patches: bool
) -> None:
    """A watch stream that only reads each PUT or PATCH line's revision
    and key, until cancelled."""
    url = yarl.URL(client.url)
    assert url.host is not None and url.port is not None
    query = f"since={since}" + ("&patches=true" if patches else "")
    loop = asyncio.get_running_loop()
    headers_in: asyncio.Future[None] = loop.create_future()
    transport, reader = await loop.create_connection(
        lambda: WatchReader(arrivals, headers_in),
        url.host,
        url.port,
        ssl=client.ssl_context,
        server_hostname=url.host,
    )
    try:
        transport.write(
            f"GET /v1/watch?{query} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            "Accept: application/x-ndjson\r\n\r\n".encode()
        )
        await headers_in
        ready.append(None)
        await reader.closed
    finally:
        transport.close()
