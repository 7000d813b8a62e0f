"""The highly available store: an etcd cluster through aetcd (asyncio gRPC).

etcd already has the contract of ``base.Store``; this adapter maps types and
errors, and adds two things aetcd leaves to its callers:

- endpoints: ``etcd://a:2379,b:2379`` lists members; on ``Unavailable`` the
  adapter moves to the next member for the next call;
- watch resume: a watch whose stream breaks reconnects and resumes from the
  revision after the last event it delivered, so a consumer sees every event
  exactly once across a member failure.  A resume point that etcd has
  compacted meanwhile surfaces as ``Compacted``, which the consumer handles
  by listing again;
- deadlines that fit etcd's elections: every RPC gets ``timeout`` (2 s by
  default; etcd elects a leader in about one election timeout, 1 s by
  default), a read that fails is tried once more on the next member, and a
  write that fails is ``Unavailable`` at once, for the caller to retry: it
  may or may not have committed, and only the caller's compare knows;
- TLS: with ``tls`` every member is reached over TLS with a client
  certificate (aetcd itself opens plaintext channels only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions as etcd_errors
import grpc

from federation.shared.clock import Backoff
from federation.store.base import (
    MAX_VALUE_BYTES,
    PAGE_BYTES,
    PAGE_KEYS,
    Compacted,
    Compare,
    Event,
    GetResult,
    Lease,
    LeaseId,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    StoreError,
    TxnResult,
    Unavailable,
    check_key,
    check_ops,
    collect,
    prefix_end,
)
from federation.store.etcd_batch import Batcher
from federation.store.etcd_client import (
    EtcdTls,
    LeaseMissing,
    TlsClient,
    classify,
    connected,
    key_value,
    request_op,
)
from federation.store.etcd_lease import KeepAlives
from federation.store.etcd_watch import Broken, Cancelled, Created, Item, WatchStream

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# The first page of a range asks for as many keys as fit ``max_bytes`` if
# every value were as large as the store allows; later pages size
# themselves by the largest key-value seen so far.  gRPC's receive limit
# sits well above any page that can result.
GRPC_MAX_MESSAGE = 64 * 1024 * 1024
RETIRED_KEPT = 4  # replaced clients kept open for calls still on them
RPC_DEADLINE = 2.0
# aetcd's watcher can stay stuck behind a gRPC stream that never finishes
# (seen after a long outage: the stream "cancelling" for ever), and its
# shutdown runs before the channel closes; so a watch cancel and a client
# close are bounded, and a close that overruns closes the channel itself,
# which ends every call on it.
SHUTDOWN_SECONDS = 5.0


class EtcdStore:
    """The Store protocol on an etcd cluster."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        max_value_bytes: int = MAX_VALUE_BYTES,
        timeout: float = RPC_DEADLINE,
        watch_retry_seconds: float = 30.0,
        tls: EtcdTls | None = None,
    ) -> None:
        if not endpoints:
            raise StoreError("etcd store needs at least one endpoint")
        self._endpoints = list(endpoints)
        self._current = 0
        self._timeout = timeout
        self._watch_retry_seconds = watch_retry_seconds
        self._max_value = max_value_bytes
        self._credentials = None if tls is None else tls.credentials()
        self._client = self._new_client()
        self._retired: list[aetcd.Client] = []  # moved away from; closed later
        self._rotating = asyncio.Lock()
        self._closed = False
        self._batcher = Batcher(self._send_txn)
        self._keepalives = KeepAlives(timeout)

    def _new_client(self) -> aetcd.Client:
        host, port = self._endpoints[self._current]
        return TlsClient(
            self._credentials,
            host=host,
            port=port,
            timeout=self._timeout,
            options={
                "grpc.max_receive_message_length": GRPC_MAX_MESSAGE,
                "grpc.max_send_message_length": GRPC_MAX_MESSAGE,
            },
        )

    async def _rotate(self, failed: aetcd.Client) -> None:
        """Move to the next member after ``failed`` failed a call.  Safe
        under concurrency: only the first of several calls that failed on
        the same client moves on (the others find it already replaced), and
        a replaced client is not closed under calls still using it; the
        oldest retired ones are closed once a few newer ones exist."""
        async with self._rotating:
            if self._client is not failed:
                return
            self._current = (self._current + 1) % len(self._endpoints)
            self._client = self._new_client()
            self._retired.append(failed)
            while len(self._retired) > RETIRED_KEPT:
                await _close_client(self._retired.pop(0))

    async def start(self) -> None:
        await self._call(lambda c: c.status())

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_SECONDS):
                await self._batcher.close()  # the writes on their way
        self._closed = True
        await self._keepalives.close()
        for client in (*self._retired, self._client):
            await _close_client(client)
        self._retired = []

    async def _call(
        self, action: Callable[[aetcd.Client], Awaitable[_T]], *, read: bool = False
    ) -> _T:
        """Run one RPC, classifying its errors; a connection failure or a
        deadline moves to the next member and raises ``Unavailable``.  A
        read is tried once more there first."""
        for attempt in range(2 if read and len(self._endpoints) > 1 else 1):
            if self._closed:
                raise Unavailable("store is closed")
            client = self._client
            try:
                return await action(client)
            except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as err:
                await self._rotate(client)
                failure: StoreError = Unavailable(f"etcd unreachable: {err}")
                cause: Exception = err
            except etcd_errors.RevisionCompactedError as err:
                raise Compacted(0, err.compacted_revision) from err
            except etcd_errors.ClientError as err:
                failure, cause = classify(err), err
                if not isinstance(failure, Unavailable):
                    raise failure from err
            log.debug("etcd call failed (attempt %d): %s", attempt + 1, failure)
        raise failure from cause

    # -- reads ----------------------------------------------------------------

    async def get(self, key: str) -> GetResult:
        raw = check_key(key)
        result = await self._call(lambda c: c.get_range(raw, raw + b"\0"), read=True)
        kvs = [key_value(kv) for kv in result]
        return GetResult(kv=kvs[0] if kvs else None, revision=result.header.revision)

    async def range(self, prefix: str) -> RangeResult:
        return await collect(self.pages(prefix))

    async def pages(
        self, prefix: str, *, limit: int = PAGE_KEYS, max_bytes: int = PAGE_BYTES
    ) -> AsyncIterator[RangeResult]:
        start, end = _key_range(prefix)
        revision = 0  # pinned by the first page's answer
        count = max(1, min(limit, max_bytes // (self._max_value + len(start))))
        heaviest = 1
        while True:
            response = await self._range_page(start, end, count, revision)
            revision = revision or int(response.header.revision)
            kvs = tuple(key_value(kv) for kv in response.kvs)
            yield RangeResult(kvs=kvs, revision=revision)
            if not response.more or not kvs:
                return
            start = response.kvs[-1].key + b"\0"
            heaviest = max(heaviest, *(len(kv.value) + len(kv.key) for kv in kvs))
            count = max(1, min(limit, max_bytes // heaviest))

    async def _range_page(self, start: bytes, end: bytes, limit: int, revision: int) -> Any:
        request = aetcd.rpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)

        async def run(c: aetcd.Client) -> Any:
            return await c.kvstub.Range(request, timeout=self._timeout, metadata=c.metadata)

        try:
            return await self._call(connected(run), read=True)
        except Compacted as err:
            raise Compacted(revision, err.compacted) from err

    # -- writes ---------------------------------------------------------------

    async def put(self, key: str, value: bytes, lease: LeaseId | None = None) -> int:
        check_ops((Put(key=key, value=value, lease=lease),), self._max_value)
        try:
            result = await self._call(lambda c: c.put(key.encode(), value, lease=lease))
        except LeaseMissing as err:
            raise LeaseNotFound(lease or LeaseId(0)) from err
        return int(result.header.revision)

    async def delete(self, key: str) -> int:
        request = aetcd.rpc.DeleteRangeRequest(key=check_key(key))

        async def run(c: aetcd.Client) -> Any:
            return await c.kvstub.DeleteRange(request, timeout=self._timeout, metadata=c.metadata)

        result = await self._call(connected(run))
        return int(result.header.revision)

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op]) -> TxnResult:
        """One transaction; those without leases are group-committed with
        the others asked meanwhile (``etcd_batch``, decision 57)."""
        check_ops(success, self._max_value)
        c = self._client
        checks = [c.transactions.mod(check_key(x.key)) == x.mod_revision for x in compare]
        request = aetcd.rpc.TxnRequest(
            compare=[x.build_message() for x in checks],
            success=c._ops_to_requests([request_op(c, op) for op in success]),
            failure=[],
        )
        leased = next((op.lease for op in success if isinstance(op, Put) and op.lease), None)
        if leased is None:
            succeeded, revision = await self._batcher.txn(
                request,
                writes=frozenset(check_key(op.key) for op in success),
                reads=frozenset(check_key(x.key) for x in compare),
                size=sum(
                    len(op.key) + (len(op.value) if isinstance(op, Put) else 0) for op in success
                ),
            )
            return TxnResult(succeeded=succeeded, revision=revision)
        try:
            response = await self._send_txn(request)
        except LeaseMissing as err:
            raise LeaseNotFound(LeaseId(leased)) from err
        return TxnResult(succeeded=bool(response.succeeded), revision=int(response.header.revision))

    async def _send_txn(self, request: Any) -> Any:
        async def run(c: aetcd.Client) -> Any:
            return await c.kvstub.Txn(request, timeout=self._timeout, metadata=c.metadata)

        return await self._call(connected(run))

    async def compact(self, revision: int) -> None:
        try:
            await self._call(lambda c: c.compact(revision, physical=True))
        except Compacted:
            return  # already compacted at or past this revision

    # -- watch ----------------------------------------------------------------

    async def watch(
        self, prefix: str, start_revision: int | None = None, *, with_previous: bool = False
    ) -> AsyncIterator[Event]:
        start, end = _key_range(prefix)
        next_revision = start_revision
        backoff = _Backoff(self._watch_retry_seconds)
        while True:
            if self._closed:
                raise Unavailable("store is closed")
            member = self._client
            request = aetcd.rpc.WatchCreateRequest(
                key=start, range_end=end, start_revision=next_revision or 0, prev_kv=with_previous
            )
            stream = WatchStream(
                self._target(), self._credentials, request, max_message=GRPC_MAX_MESSAGE
            )
            created, broken = False, None
            deadline = asyncio.get_running_loop().time() + self._timeout  # to be created
            try:
                while broken is None:
                    items: list[Item] | None
                    if created:
                        items = await stream.take()
                    else:
                        items = await _within(stream.take(), deadline)
                    if items is None:
                        broken = f"etcd did not create the watch within {self._timeout:.1f}s"
                    for item in items or ():
                        if isinstance(item, list):
                            backoff.reset()
                            for event in item:
                                next_revision = event.revision + 1
                                yield event
                        elif isinstance(item, Created):
                            created = True
                        elif isinstance(item, Cancelled) and item.compact_revision:
                            raise Compacted(next_revision or 0, item.compact_revision)
                        else:
                            broken = _why(item)
                            break
            finally:
                await stream.close(SHUTDOWN_SECONDS)
            if created:
                log.warning("etcd watch broke (%s); resuming at %s", broken, next_revision)
            await self._rotate(member)
            await backoff.wait_or_raise()

    def _target(self) -> str:
        host, port = self._endpoints[self._current]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- leases ---------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        if ttl <= 0:
            raise StoreError(f"lease TTL must be positive, got {ttl}")
        lease = await self._call(lambda c: c.lease(ttl))
        return Lease(id=LeaseId(lease.id), ttl=int(lease.ttl))

    async def keepalive(self, lease: LeaseId) -> int:
        try:
            ttl = await self._call(lambda c: self._keepalives.renew(c, lease))
        except LeaseMissing as err:
            raise LeaseNotFound(lease) from err
        if ttl <= 0:
            raise LeaseNotFound(lease)
        return ttl

    async def revoke(self, lease: LeaseId) -> None:
        try:
            await self._call(lambda c: c.revoke_lease(lease))
        except LeaseMissing as err:
            raise LeaseNotFound(lease) from err


def _key_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [start, end) for every key under ``prefix`` (all keys if empty)."""
    raw = prefix.encode()
    return raw or b"\0", prefix_end(raw)


class _Backoff:
    """Exponential backoff that gives up after ``budget`` seconds of failure."""

    def __init__(self, budget: float) -> None:
        self._budget = budget
        self.reset()

    def reset(self) -> None:
        self._retry = Backoff(0.05, 1.0).retry()
        self._spent = 0.0

    async def wait_or_raise(self) -> None:
        if self._spent >= self._budget:
            raise Unavailable(f"etcd unreachable for {self._spent:.1f}s; giving up the watch")
        delay = self._retry.failed()
        await asyncio.sleep(delay)
        self._spent += delay


async def _within(take: Awaitable[_T], deadline: float) -> _T | None:
    """``take``'s result, or None if the loop's clock passes ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            return await take
    except TimeoutError:
        return None


def _why(item: Item) -> str:
    if isinstance(item, Cancelled):
        return f"etcd cancelled it: {item.reason or 'no reason given'}"
    if isinstance(item, Broken):
        return f"{item.code.name if item.code else 'error'}: {item.details}"
    return "the stream ended"


async def _close_client(client: aetcd.Client) -> None:
    """Close ``client`` within ``SHUTDOWN_SECONDS``; past that, close its
    channel directly, which ends the stuck calls (aetcd closes the channel
    only after its watcher has shut down)."""
    channel = client.channel
    try:
        async with asyncio.timeout(SHUTDOWN_SECONDS):
            await client.close()
        return
    except TimeoutError:  # before OSError, of which it is a subclass
        log.warning("etcd client close overran %.1f s; closing its channel", SHUTDOWN_SECONDS)
    except (etcd_errors.ClientError, OSError):
        return
    if channel is not None:
        with contextlib.suppress(grpc.RpcError, OSError):
            await channel.close(grace=None)
