"""SQLite's file layout, and the conversions between its rows and the
store's records: the schema, a live watcher's state, key ranges, rows to
KeyValues and Events.  ``sqlite`` holds the behaviour."""

from __future__ import annotations

import asyncio
from collections import deque

from federation.store.base import (
    Event,
    EventType,
    KeyValue,
    LeaseId,
    StoreError,
    prefix_end,
)

PUT, DELETE = 0, 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    revision INTEGER NOT NULL, seq INTEGER NOT NULL, type INTEGER NOT NULL,
    key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL, expires_at REAL NOT NULL
);
INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compacted', 0), ('next_lease', 1);
"""


class Watcher:
    """One live watch: a key range, a position and a bounded buffer."""

    def __init__(self, start: bytes, end: bytes | None, position: tuple[int, int]) -> None:
        self.start = start
        self.end = end
        self.position = position  # last (revision, seq) delivered
        self.pending: deque[tuple[int, int, Event]] = deque()
        self.pending_bytes = 0
        self.overflow = False
        self.wake = asyncio.Event()

    def matches(self, key: bytes) -> bool:
        return key >= self.start and (self.end is None or key < self.end)


def synchronous_pragma(mode: str) -> str:
    upper = mode.upper()
    if upper not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise StoreError(f"synchronous must be normal, full or extra, got {mode!r}")
    return upper


def bounds(prefix: str) -> tuple[bytes, bytes | None]:
    if not prefix:
        return b"", None
    start = prefix.encode()
    end = prefix_end(start)
    return start, (None if end == b"\0" else end)


def kv_of(row: tuple[bytes, bytes, int, int, int, int | None]) -> KeyValue:
    key, value, create_rev, mod_rev, version, lease = row
    return KeyValue(
        key=key.decode(),
        value=bytes(value),
        create_revision=create_rev,
        mod_revision=mod_rev,
        version=version,
        lease=None if lease is None else LeaseId(lease),
    )


def size_of(event: Event) -> int:
    """What an event holds in a watcher's buffer, in bytes."""
    return len(event.value) + len(event.previous or b"")


def event_of(revision: int, kind: int, key: bytes, value: bytes) -> Event:
    event_type = EventType.PUT if kind == PUT else EventType.DELETE
    return Event(type=event_type, key=key.decode(), revision=revision, value=bytes(value))


__all__ = [
    "DELETE",
    "PUT",
    "SCHEMA",
    "Watcher",
    "bounds",
    "event_of",
    "kv_of",
    "size_of",
    "synchronous_pragma",
]
