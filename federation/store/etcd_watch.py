"""One etcd watch stream, read on a thread of its own.

aetcd's watch runs on the event loop: each response takes about three loop
iterations to reach its consumer (the gRPC read's completion, aetcd's
handler, its queue), so a registry whose loop turns every few milliseconds
under fan-out could not take in more than ~150 changes a second, however
fast etcd sent them (decision 52).  Here a thread blocks on gRPC's
synchronous stream instead, turns each response into ``Event``\\ s and hands
them to the loop in batches: whatever arrived while the loop was busy is
taken in one wake.  What waits for the loop is bounded in bytes; past that
the thread stops reading and gRPC's flow control holds etcd back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import aetcd.rpc as rpc
import grpc

from federation.store.base import Event, EventType

log = logging.getLogger(__name__)

PENDING_BYTES = 64 * 1024 * 1024  # read from etcd, not yet taken by the loop


@dataclass(frozen=True, slots=True)
class Created:
    """etcd has created the watch."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """etcd cancelled the watch: ``compact_revision`` when the start
    revision was compacted, else ``reason``."""

    compact_revision: int
    reason: str


@dataclass(frozen=True, slots=True)
class Broken:
    """The stream failed (etcd gone, a deadline, the channel closed)."""

    code: grpc.StatusCode | None
    details: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The stream is over; nothing follows."""


Item = list[Event] | Created | Cancelled | Broken | Ended


class WatchStream:
    """A watch of ``[key, range_end)`` from ``start_revision`` on its own
    channel.  ``take`` (on the loop) returns everything read since the last
    take; ``close`` ends the stream and its thread."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        request: rpc.WatchCreateRequest,
        *,
        max_message: int,
        pending_bytes: int = PENDING_BYTES,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._request = rpc.WatchRequest(create_request=request)
        self._loop = asyncio.get_running_loop()
        self._limit = pending_bytes
        self._state = threading.Condition()
        self._pending: deque[tuple[Item, int]] = deque()  # guarded by _state
        self._pending_bytes = 0
        self._waiter: asyncio.Future[None] | None = None  # the loop's, set under _state
        self._closing = False
        self._call: grpc.Future | None = None
        self._thread = threading.Thread(target=self._read, name="etcd-watch", daemon=True)
        self._thread.start()

    # -- the reading thread ---------------------------------------------------

    def _requests(self) -> Iterator[rpc.WatchRequest]:
        """The request side: the create, then open until the stream closes
        (etcd ends a watch whose client half-closes)."""
        yield self._request
        with self._state:
            while not self._closing:
                self._state.wait()

    def _read(self) -> None:
        try:
            responses = rpc.WatchStub(self._channel).Watch(self._requests())
            with self._state:
                self._call = responses
                closing = self._closing
            if closing:
                responses.cancel()
            for response in responses:
                if response.created:
                    self._push(Created(), 0)
                if response.events:
                    events = [_event(raw) for raw in response.events]
                    self._push(events, response.ByteSize())
                if response.canceled:
                    self._push(Cancelled(int(response.compact_revision), response.cancel_reason), 0)
                    return
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            self._push(Broken(code, details or str(code)), 0)
        except Exception as err:  # a bug here must reach the consumer, not die silently
            log.exception("etcd watch thread failed")
            self._push(Broken(None, f"the watch thread failed: {err!r}"), 0)
        finally:
            self._push(Ended(), 0, wait=False)

    def _push(self, item: Item, size: int, *, wait: bool = True) -> None:
        with self._state:
            while wait and self._pending_bytes > self._limit and not self._closing:
                self._state.wait()
            self._pending.append((item, size))
            self._pending_bytes += size
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(_wake, waiter)

    # -- the loop's side ------------------------------------------------------

    async def take(self) -> list[Item]:
        """Everything read since the last take, waiting for something."""
        while True:
            with self._state:
                if self._pending:
                    items = [item for item, _ in self._pending]
                    self._pending.clear()
                    self._pending_bytes = 0
                    self._state.notify_all()
                    return items
                waiter = self._waiter = self._loop.create_future()
            await waiter

    async def close(self, timeout: float) -> None:
        """End the stream: cancel the call, close the channel, and wait at
        most ``timeout`` for the thread to finish (it is a daemon thread:
        one stuck in gRPC past that is logged and left)."""
        with self._state:
            self._closing = True
            call = self._call
            self._state.notify_all()
        if call is not None:
            call.cancel()
        self._channel.close()
        try:
            async with asyncio.timeout(timeout):
                while not any(isinstance(item, Ended) for item in await self.take()):
                    pass
        except TimeoutError:
            log.warning("etcd watch thread still running %.1f s after its close", timeout)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _event(raw: rpc.Event) -> Event:
    put = raw.type == rpc.Event.PUT
    prev = raw.prev_kv
    return Event(
        type=EventType.PUT if put else EventType.DELETE,
        key=raw.kv.key.decode(),
        revision=int(raw.kv.mod_revision),
        value=bytes(raw.kv.value) if put else b"",
        # etcd sends an empty KeyValue for a key that did not exist
        previous=bytes(prev.value) if raw.HasField("prev_kv") and prev.key else None,
    )
