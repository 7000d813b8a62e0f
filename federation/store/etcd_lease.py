"""Lease renewals over one LeaseKeepAlive stream per client.

aetcd opens a bidirectional stream for every renewal and cancels it after
the one answer: at 255 clusters heartbeating every 5 s that is 51 streams a
second set up and torn down on etcd and on the registry's loop.  etcd's Go
client keeps one stream per lessor and sends each renewal as a message on
it; so does this.  etcd answers a stream's requests one at a time, in
order, each with the lease's id and its TTL (0 for a lease it does not
have), so a renewal's answer is the first unanswered one, and its id is
checked.  A stream that fails, ends, answers out of order or leaves a
renewal unanswered past the deadline is dropped, with every renewal still
waiting on it; the next renewal opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import aetcd
import aetcd.exceptions as etcd_errors
import aetcd.rpc as rpc
import grpc

log = logging.getLogger(__name__)


class KeepAlives:
    """Renewals of any leases, over one stream of the client last used."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._client: aetcd.Client | None = None
        self._call: Any = None  # grpc.aio.StreamStreamCall
        self._reader: asyncio.Task[None] | None = None
        self._waiting: deque[tuple[int, asyncio.Future[int]]] = deque()
        self._writing = asyncio.Lock()

    async def renew(self, client: aetcd.Client, lease: int) -> int:
        """``lease``'s TTL once renewed through ``client``; 0 when etcd
        does not have it.  aetcd's connection errors when the stream fails
        or the answer is late, as aetcd's own calls raise them."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._writing:
                    call = await self._stream(client)
                    # Queued before it is written, under the lock: the
                    # order of the queue is the order of the requests.
                    self._waiting.append((lease, future))
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
                return await future
        except TimeoutError:
            future.cancel()  # nobody will read it now
            self._drop(call_of=client, reason="a lease renewal went unanswered")
            late = "etcd did not answer a lease renewal"
            raise etcd_errors.ConnectionTimeoutError(late) from None
        except asyncio.CancelledError:
            if future.cancel():  # its answer may still come: the queue is off by one
                self._drop(call_of=client, reason="a lease renewal was cancelled")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not this caller's cancellation: gRPC raises it from a write to
            # a stream that was dropped (cancelled) meanwhile.
            raise etcd_errors.ConnectionFailedError("the keepalive stream was dropped") from None
        except grpc.aio.AioRpcError as err:
            future.cancel()
            self._drop(call_of=client, reason=f"the keepalive stream failed: {err.code()}")
            etcd_errors._handle_exception(err)
            raise  # not reached: aetcd raises its own error for every code

    async def close(self) -> None:
        self._drop(None, reason="the store closed")
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None

    async def _stream(self, client: aetcd.Client) -> Any:
        if self._call is not None and self._client is client:
            return self._call
        self._drop(None, reason="moved to another member")
        await client.connect()
        call = client.leasestub.LeaseKeepAlive(metadata=client.metadata)
        self._client, self._call = client, call
        self._reader = asyncio.get_running_loop().create_task(
            self._read(call), name="etcd lease keepalives"
        )
        return call

    async def _read(self, call: Any) -> None:
        """Hand each answer to the renewal that waits for it, in order."""
        reason = "the keepalive stream ended"
        try:
            async for reply in call:
                if not self._waiting or self._call is not call:
                    reason = "an answer no renewal waits for"
                    break
                lease, future = self._waiting.popleft()
                if int(reply.ID) != lease:
                    reason = f"an answer for lease {reply.ID} where {lease} was asked"
                    break
                if not future.done():
                    future.set_result(int(reply.TTL))
        except grpc.aio.AioRpcError as err:
            reason = f"the keepalive stream failed: {err.code()}: {err.details()}"
        except asyncio.CancelledError:
            return
        if self._call is call:
            self._drop(None, reason=reason)

    def _drop(self, call_of: aetcd.Client | None, *, reason: str) -> None:
        """Forget the stream (of ``call_of``'s, or whichever is open) and
        fail every renewal waiting on it."""
        if self._call is None or (call_of is not None and call_of is not self._client):
            return
        call, self._call, self._client = self._call, None, None
        call.cancel()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        waiting, self._waiting = self._waiting, deque()
        for _, future in waiting:
            if not future.done():
                future.set_exception(etcd_errors.ConnectionFailedError(reason))
        log.debug("etcd keepalive stream dropped: %s", reason)


__all__ = ["KeepAlives"]
