"""One store watch per registry process, fanned out to every watch stream.

Each change is encoded to its NDJSON line once and kept in a bounded
buffer; a stream is a cursor into that buffer.  A stream that starts
before the buffer (an agent resuming from an old revision) is not served
here: the caller falls back to a store watch of its own.  A stream that
falls more than the buffer behind, or a hub that lost its own watch to
compaction, ends with ``Compacted`` so the client relists, as a
kube-apiserver watch cache does."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from federation.api.roster import Roster
from federation.api.summary import Summary
from federation.registry import Compacted, Registry, StoreError
from federation.registry.changes import Change
from federation.registry.notes import Note
from federation.shared.clock import Backoff
from federation.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)
HUB_BACKOFF = Backoff(0.05, 2.0)  # the hub's store watch, after a failure

CAPACITY = 8192
MAX_BYTES = 64 * 1024 * 1024  # the buffer's lines, whatever their count
# Seconds a change may wait for the next before streams wake: each wake of
# a stream costs a write (a TLS record) and a wait whatever it carries, so
# under churn a wider window means fewer, fuller writes (decision 49).
COALESCE = 0.02
# The window grows with the streams open, up to COALESCE: a wake costs
# about 15 us per stream, so waking at most every 60 us per stream keeps the
# fan-out under about a quarter of the loop, and a handful of streams
# (the registry benchmark's, a small federation's) waits next to nothing.
PER_STREAM = 60e-6
# A loaded loop stretches the window: when the loop's thread spent more
# than LOADED of the last tick on the CPU, the window grows in proportion,
# up to MAX_STRETCH times (decision 53).  A busy registry then spends less
# of itself on wakes, where the wait is small beside its queueing, and an
# idle one (one change after another) waits no longer than before.
LOADED = 0.5
MAX_STRETCH = 2.0
# Parked streams a wake writes per loop step, the next step queued behind
# what became ready meanwhile: all 255 at once held the loop 5-10 ms (decision 61).
SLICE = 32
# A stream parked on the hub with less than this queued in its transport is
# written by the hub itself at a wake (``Sink``); past it, the stream is
# woken to write through its response, which waits for the client.
SINK_BUFFER = 64 * 1024
SINK_WRITE = 256 * 1024  # a wake with more than this for one stream wakes it


def window(streams: int, load: float, coalesce: float = COALESCE) -> float:
    """Seconds a burst waits before streams wake, for ``streams`` open
    streams on a loop whose thread was ``load`` busy (0..1) of late."""
    stretch = min(MAX_STRETCH, max(1.0, load / LOADED))
    return min(coalesce, PER_STREAM * streams) * stretch


@dataclass(frozen=True, slots=True)
class Entry:
    """One change, encoded once: its whole line, and for a rewritten
    endpoint set the PATCH line that streams asking for deltas get."""

    revision: int
    type: str
    line: bytes
    patch: bytes | None = None
    at: float = 0.0  # when the hub took it, by the registry's clock

    @property
    def size(self) -> int:
        return len(self.line) + len(self.patch or b"")

    def for_stream(self, deltas: bool) -> bytes:
        return self.patch if deltas and self.patch is not None else self.line


def line_kinds(entries: list[Entry], deltas: bool) -> dict[str, int]:
    """The lines a stream gets for ``entries``, counted by type."""
    kinds: dict[str, int] = {}
    for entry in entries:
        kind = "PATCH" if deltas and entry.patch is not None else entry.type
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@dataclass(frozen=True, slots=True)
class Sink:
    """Where the hub may write a parked stream's lines itself (decision 58):
    the stream's transport, whose HTTP/1.1 response is chunked and has its
    headers out, so each write is framed as one chunk.  ``admitted`` says
    whether the stream's caller is still a member; when it is not, or the
    transport is closing or backed up, the stream is woken instead and its
    own coroutine writes (or ends) through its response."""

    transport: asyncio.WriteTransport
    deltas: bool
    admitted: Callable[[], bool]

    def writable(self) -> bool:
        transport = self.transport
        return (
            not transport.is_closing()
            and transport.get_write_buffer_size() < SINK_BUFFER
            and self.admitted()
        )


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (RFC 9112 section 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass(frozen=True, slots=True)
class Lag:
    """``changes`` behind (a lower bound when ``beyond_buffer``: the
    consumer is behind everything the hub still holds) and ``seconds``
    since the first of them."""

    changes: int
    seconds: float
    beyond_buffer: bool


class WatchHub:
    def __init__(
        self,
        registry: Registry,
        capacity: int = CAPACITY,
        max_bytes: int = MAX_BYTES,
        coalesce: float = COALESCE,
        tick: float = 1.0,
        cpu: Callable[[], float] = time.thread_time,
        sent: Callable[[str, int], None] = lambda kind, count: None,
    ) -> None:
        self.registry = registry
        self.coalesce = coalesce
        self._sent = sent  # lines the hub wrote to sinks itself, by type
        # The loop's load: its thread's CPU seconds (``cpu``, read on the
        # loop) over loop seconds, measured from one tick to the next.
        self._cpu = cpu
        self._measured: tuple[float, float] | None = None  # (loop time, cpu) at the last tick
        self.load = 0.0
        # Streams are woken at least every ``tick`` seconds, changes or not,
        # by one timer for all of them (to bookmark, or to notice a revoked
        # caller), instead of a timeout of each stream's own per wait.
        self.tick = tick
        self._ticker: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._last_change = float("-inf")  # when _notify last ran (loop time)
        # The streams waiting: each one's future and its subscription, whose
        # sink (if it has one) the hub may write to instead of waking it.
        self._sleepers: list[tuple[asyncio.Future[None], Subscription]] = []
        # A wake's streams not yet written (SLICE per step), and its next step.
        self._writing: deque[tuple[asyncio.Future[None], Subscription]] = deque()
        self._step: asyncio.Handle | None = None
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()  # the live ones
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._bytes = 0  # the lines in _entries
        self._entries: list[Entry] = []
        self._offset = 0  # absolute index of _entries[0]
        self._base = 0  # every change after this revision is in the buffer
        self._head = 0  # the last revision the hub has seen, filtered or not
        self._epoch = 0  # bumped when the buffer is reset: cursors are void
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.roster = Roster()  # kept by the same events
        self.summary = Summary()  # what the dashboard shows of every shard

    async def start(self) -> None:
        self._base = self._head = await self.registry.revision()
        await self.roster.load(self.registry)  # at or after the head: events replay onto it
        await self.summary.load(self.registry)
        self._task = asyncio.create_task(self._run(), name="watch-hub")
        self._tick()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now, used = loop.time(), self._cpu()
        if self._measured is not None and now > self._measured[0]:
            self.load = (used - self._measured[1]) / (now - self._measured[0])
        self._measured = now, used
        self._wake_sleepers()
        self._ticker = loop.call_later(self.tick, self._tick)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)  # a crash was reported when it happened (supervise)
        self._notify()
        self._wake_all()

    @property
    def head(self) -> int:
        return self._head

    async def caught_up(self, revision: int, timeout: float) -> bool:
        """Wait until the hub has seen ``revision``, at most ``timeout``
        seconds; whether it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._head < revision:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._task is None or self._task.done():
                return False
            await asyncio.wait([self._waiter()], timeout=remaining)
        return True

    def lag(self, applied: int) -> Lag:
        """How far behind a consumer that has materialized revision
        ``applied`` is: the watched changes after it, and how long ago the
        first of them arrived (so since when ``applied`` is not the head)."""
        index = bisect.bisect_right(self._entries, applied, key=lambda e: e.revision)
        behind = len(self._entries) - index
        if behind == 0:
            return Lag(0, 0.0, False)
        seconds = max(0.0, self.registry.clock.now() - self._entries[index].at)
        return Lag(behind, seconds, applied < self._base)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The hub's store-following task, for the server to supervise."""
        return self._task

    def subscribe(self, since: int | None) -> Subscription | None:
        """A cursor after ``since`` (None: from now), or None when the
        buffer no longer holds everything after ``since``."""
        if since is None:
            since = self._head
        if since < self._base:
            return None
        index = bisect.bisect_right(self._entries, since, key=lambda e: e.revision)
        subscription = Subscription(self, self._offset + index, since)
        self._subscriptions.add(subscription)
        return subscription

    async def _run(self) -> None:
        retry = HUB_BACKOFF.retry()
        while True:
            try:
                async for change in self.registry.watch(self._head, with_previous=True):
                    retry.succeeded()
                    if isinstance(change, int):  # progress: streams see it at their next wake
                        self._head = max(self._head, change)
                        self._wake_head()
                    else:
                        note = self._noted(change)
                        self.roster.observe(change)
                        if note is None:  # decoded once, for the summary and the delta
                            decoded = change.decoded()
                            patch = change.patch_line(decoded)
                            self.summary.observe(change, decoded)
                        else:
                            patch = change.patch_line_of(note.delta)
                            self.summary.observe(change, counted=note.summary)
                        entry = Entry(
                            change.revision,
                            change.type,
                            change.line(),
                            patch,
                            self.registry.clock.now(),
                        )
                        self._append(entry)
                        self._notify()
            except Compacted:
                log.warning("watch hub: history after %d was compacted; streams relist", self._head)
                with contextlib.suppress(StoreError):
                    self._reset(await self.registry.revision())
                    await self.roster.load(self.registry)
                    await self.summary.load(self.registry)
            except StoreError as err:  # Unavailable, a timed-out etcd watch, any backend fault
                delay = retry.failed()
                log.warning("watch hub: store failed (%s); resuming after %d in %.2fs",
                            err, self._head, delay)  # fmt: skip
                await asyncio.sleep(delay)

    def _noted(self, change: Change) -> Note | None:
        """This replica's note of the write ``change`` watched, if it made
        it: its delta and the new value's summary, so neither is decoded."""
        if change.type != "PUT" or change.item.kind != "EndpointSet":
            return None
        return self.registry.sets.notes.take(change.item.key, change.previous, change.item.value)

    def _append(self, entry: Entry) -> None:
        """Add a line; past 2x capacity or the byte bound, drop the oldest
        half at once (amortised O(1)): streams behind them relist."""
        self._entries.append(entry)
        self._bytes += entry.size
        self._head = max(self._head, entry.revision)
        if len(self._entries) < 2 * self.capacity and self._bytes <= self.max_bytes:
            return
        drop, freed = 0, 0
        keep_count, keep_bytes = self.capacity, self.max_bytes // 2
        while drop < len(self._entries) and (
            len(self._entries) - drop > keep_count or self._bytes - freed > keep_bytes
        ):
            freed += self._entries[drop].size
            drop += 1
        if drop:
            self._base = self._entries[drop - 1].revision
            del self._entries[:drop]
            self._offset += drop
            self._bytes -= freed

    def _reset(self, revision: int) -> None:
        self._offset += len(self._entries)
        self._entries.clear()
        self._bytes = 0
        self._base = self._head = revision
        self._epoch += 1
        self._notify()
        self._wake_all()  # every cursor is void: each stream ends with Compacted

    def _notify(self) -> None:
        """Wake what waits on the head (``caught_up``) now, and the streams
        once a window after a change (``window``: PER_STREAM per open
        stream, at most ``coalesce``, stretched on a loaded loop), so that
        under churn each stream writes the changes of a window together
        instead of waking (and writing a TLS record) once per change; a
        change after a window's quiet goes out at once."""
        self._wake_head()
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait = self.window()
        quiet, self._last_change = now - self._last_change >= wait, now
        if self._soon is not None:
            return  # a wake is due: this change goes with it
        if quiet:  # at once, but after the rest of this revision's changes
            self._soon = loop.call_soon(self._notify_streams)
        else:  # a burst: wait for the rest of it
            self._soon = loop.call_later(wait, self._notify_streams)

    def window(self) -> float:
        """How long a burst now waits before the streams wake."""
        return window(len(self._subscriptions), self.load, self.coalesce)

    def _wake_head(self) -> None:
        """Wake what waits for the head (``caught_up``)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        self._wake = None

    def _notify_streams(self) -> None:
        """A window's wake: streams parked with a writable sink get their
        new lines from the hub and stay parked; the rest are woken.  The
        streams are taken SLICE per loop step."""
        self._soon = None
        self._writing.extend(self._sleepers)
        self._sleepers = []
        if self._step is None:
            self._write_step()

    def _write_step(self) -> None:
        """Up to SLICE of the wake's streams.  Lines of the same entries
        are joined, framed and counted by type once for every stream at the
        same cursor (in this step: entries may come between steps)."""
        self._step = None
        parked: list[tuple[asyncio.Future[None], Subscription]] = []
        frames: dict[tuple[int, int, bool], tuple[bytes, list[Entry]] | None] = {}
        written: dict[tuple[int, int, bool], int] = {}  # streams written, by cursor
        for _ in range(min(SLICE, len(self._writing))):
            waiter, subscription = self._writing.popleft()
            if waiter.done():  # a stream cancelled meanwhile cancelled its own
                continue
            sink = subscription.sink
            if sink is None or not sink.writable():
                waiter.set_result(None)
                continue
            key = (subscription.position, subscription.revision, sink.deltas)
            if key not in frames:
                frames[key] = subscription.framed(sink.deltas)
            framed = frames[key]
            if framed is None:  # compacted or too much: the stream sorts it out
                waiter.set_result(None)
                continue
            frame, entries = framed
            if frame:
                sink.transport.write(frame)
                written[key] = written.get(key, 0) + 1
            subscription.advance(entries)
            parked.append((waiter, subscription))
        self._sleepers += parked
        for key, streams in written.items():
            lines = frames[key]
            assert lines is not None
            for kind, count in line_kinds(lines[1], key[2]).items():
                self._sent(kind, count * streams)
        if self._writing:
            self._step = asyncio.get_running_loop().call_soon(self._write_step)

    def _wake_all(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._step is not None:
            self._step.cancel()
            self._step = None
        self._wake_sleepers()

    def _wake_sleepers(self) -> None:
        """Every parked stream, those a wake has not written yet too."""
        sleepers, self._sleepers = self._sleepers, []
        sleepers += self._writing
        self._writing.clear()
        for waiter, _ in sleepers:
            if not waiter.done():  # a stream cancelled meanwhile cancelled its own
                waiter.set_result(None)

    def _waiter(self) -> asyncio.Future[None]:
        if self._wake is None:
            self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    def _stream_waiter(self, subscription: Subscription) -> asyncio.Future[None]:
        """A future of the caller's own, done at the next wake or tick (one
        shared future would be cancelled for all by one stream's
        cancellation); while it is pending, a wake may write the
        subscription's lines to its sink instead."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((waiter, subscription))
        return waiter


class Subscription:
    def __init__(self, hub: WatchHub, position: int, since: int) -> None:
        self.hub = hub
        self.position = position
        self.revision = since  # the revision the client has seen everything up to
        self._epoch = hub._epoch
        self.sink: Sink | None = None  # set once the stream's headers are out

    async def next(self, timeout: float | None = None) -> list[Entry]:
        """The entries after the cursor, waiting for some until the hub's
        next tick, or at most ``timeout`` (then returns []; ``revision`` is
        then safe to bookmark).  While it waits, the hub may write new
        entries to the sink itself: they are not returned.  Raises
        ``Compacted`` if the cursor fell out of the buffer."""
        entries = self._take()
        if not entries:
            waiter = self.hub._stream_waiter(self)
            if timeout is None:
                await waiter
            else:
                await asyncio.wait([waiter], timeout=timeout)
                waiter.cancel()  # not parked any more: the hub must not write for it
            entries = self._take()
        if not entries and self.hub._head > self.revision:
            self.revision = self.hub._head
        return entries

    def _pending(self) -> list[Entry]:
        hub = self.hub
        if self._epoch != hub._epoch or self.position < hub._offset:
            raise Compacted(self.revision, hub._base)
        start = self.position - hub._offset
        return [e for e in hub._entries[start:] if e.revision > self.revision]

    def advance(self, entries: list[Entry]) -> None:
        """Past everything the hub holds, having been given ``entries``."""
        self.position = self.hub._offset + len(self.hub._entries)
        if entries:
            self.revision = entries[-1].revision

    def _take(self) -> list[Entry]:
        entries = self._pending()
        self.advance(entries)
        return entries

    def framed(self, deltas: bool) -> tuple[bytes, list[Entry]] | None:
        """The pending entries' lines as one chunk, and the entries; None
        when the stream must write them itself (compacted, or more than
        one write should carry)."""
        try:
            entries = self._pending()
        except Compacted:
            return None
        lines = [entry.for_stream(deltas) for entry in entries]
        data = b"".join(lines)
        if len(data) > SINK_WRITE:
            return None
        return (chunk(data) if data else b""), entries


__all__ = ["Entry", "Lag", "Sink", "Subscription", "WatchHub", "chunk", "line_kinds", "window"]
