"""The revisioned key-value store every other part of the control plane uses.

The contract is etcd's, kept small: one global revision that strictly
increases with every write transaction; reads return the revision they saw;
watches replay history from a revision and then follow, in revision order,
with no gaps and no repeats; history older than the compaction point is gone
(``Compacted``); leases delete their keys when they expire, and those
deletions are ordinary watch events.  SQLite and etcd implement it, and one
contract suite (``tests/contract``) holds them both to it.

Errors are classified here, at the boundary, and raised ``from`` the cause:
callers decide retry (``Unavailable``) or give up (everything else).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NewType, Protocol, runtime_checkable

LeaseId = NewType("LeaseId", int)

DEFAULT_PREFIX = "/federation/v1/"
MAX_VALUE_BYTES = 1024 * 1024
MAX_KEY_BYTES = 1024
# A range is read in pages of at most this many keys and about this many
# bytes, so no etcd response comes near gRPC's message limit and no reader
# holds a whole prefix at once.
PAGE_KEYS = 1000
PAGE_BYTES = 2 * 1024 * 1024


class StoreError(Exception):
    """Base of every error a store raises."""


class Unavailable(StoreError):
    """The backend cannot be reached now; retrying later may succeed."""


class Compacted(StoreError):
    """The requested revision is older than the history the store keeps."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} is compacted; history starts at revision {compacted}"
        )
        self.requested = requested
        self.compacted = compacted


class ValueTooLarge(StoreError):
    """A value is over the store's size bound; nothing was written."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"value for {key!r} is {size} bytes, over the limit of {limit} bytes")
        self.key = key
        self.size = size
        self.limit = limit


class InvalidKey(StoreError):
    """A key is empty, too long or not valid UTF-8 text."""


class LeaseNotFound(StoreError):
    """The lease does not exist (never granted, revoked or expired)."""

    def __init__(self, lease: LeaseId) -> None:
        super().__init__(f"lease {lease} not found (expired or revoked)")
        self.lease = lease


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: LeaseId | None = None


class EventType(Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One change.  ``previous`` is the key's value before it, on a watch
    asked ``with_previous``: None when the key did not exist, or when the
    backend cannot say (SQLite replaying history): a consumer that wants a
    delta falls back to the whole value then."""

    type: EventType
    key: str
    revision: int
    value: bytes = b""
    previous: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetResult:
    kv: KeyValue | None
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Put:
    key: str
    value: bytes
    lease: LeaseId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare:
    """True when ``key``'s mod_revision equals ``mod_revision`` (0: absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnResult:
    succeeded: bool
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    id: LeaseId
    ttl: int


@runtime_checkable
class Store(Protocol):
    """The store protocol (DESIGN section 3)."""

    async def get(self, key: str) -> GetResult: ...

    async def range(self, prefix: str) -> RangeResult:
        """Every key under ``prefix``, read page by page at one revision.
        For prefixes that stay small (members, policies); a prefix that
        grows with the federation is read with ``pages``."""
        ...

    def pages(
        self, prefix: str, *, limit: int = PAGE_KEYS, max_bytes: int = PAGE_BYTES
    ) -> AsyncIterator[RangeResult]:
        """The keys under ``prefix`` in key order, in pages of at most
        ``limit`` keys and about ``max_bytes`` bytes (a page always holds at
        least one key), every page read at the same revision; at least one
        page, empty if the prefix is, so the revision is always known.  Lazy: a page
        is read when the previous one has been consumed.  Raises
        ``Compacted`` if the store compacts that revision before the read
        ends (etcd), never a mix of two revisions."""
        ...

    async def put(self, key: str, value: bytes, lease: LeaseId | None = None) -> int:
        """Write a value; return the new store revision."""
        ...

    async def delete(self, key: str) -> int:
        """Delete a key; return the store revision (unchanged if absent)."""
        ...

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op]) -> TxnResult: ...

    def watch(
        self, prefix: str, start_revision: int | None = None, *, with_previous: bool = False
    ) -> AsyncIterator[Event]:
        """Events under ``prefix`` from ``start_revision`` (inclusive) on.
        None means "from the first iteration": callers that must not miss a
        write pass the revision of their last read plus one.  With
        ``with_previous``, events carry the value they replaced where the
        backend knows it (see ``Event``).  Raises ``Compacted`` if that
        history is gone."""
        ...

    async def compact(self, revision: int) -> None: ...

    async def grant(self, ttl: int) -> Lease: ...

    async def keepalive(self, lease: LeaseId) -> int:
        """Renew a lease; return its TTL.  Raises ``LeaseNotFound``."""
        ...

    async def revoke(self, lease: LeaseId) -> None: ...

    async def close(self) -> None: ...


async def collect(pages: AsyncIterator[RangeResult]) -> RangeResult:
    """All pages of a paged read as one result (for small prefixes)."""
    kvs: list[KeyValue] = []
    revision = 0
    async for page in pages:
        kvs.extend(page.kvs)
        revision = page.revision
    return RangeResult(kvs=tuple(kvs), revision=revision)


def check_key(key: str) -> bytes:
    """Encode a key, refusing what neither backend can hold."""
    raw = key.encode("utf-8", errors="strict")
    if not raw:
        raise InvalidKey("key is empty")
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidKey(f"key is {len(raw)} bytes, over the limit of {MAX_KEY_BYTES}")
    return raw


def check_value(key: str, value: bytes, limit: int = MAX_VALUE_BYTES) -> None:
    if len(value) > limit:
        raise ValueTooLarge(key, len(value), limit)


def check_ops(ops: Sequence[Op], limit: int = MAX_VALUE_BYTES) -> None:
    for op in ops:
        check_key(op.key)
        if isinstance(op, Put):
            check_value(op.key, op.value, limit)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's
    range end); ``b"\0"`` means "to the end of the keyspace"."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"
