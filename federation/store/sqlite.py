"""The single-replica store: one SQLite file in WAL mode, one writer.

Every write transaction gets the next store revision and appends its events
to a ``history`` table, so a watch can start from any revision the history
still holds and a restarted registry serves watches from where its clients
left off.  Live watchers get events pushed in memory; a watcher that falls
more than ``WATCH_BUFFER`` events behind drops its buffer and catches up from
the history table, so a slow consumer costs disk reads, not memory.

The SQLite calls run on the event loop thread: each is a few tens of
microseconds with ``synchronous=NORMAL``, far cheaper than a thread hop, and
running them there makes "read history, then subscribe" atomic.  WAL with
``synchronous=NORMAL`` keeps every committed write across a process crash;
``?synchronous=full`` also survives power loss, at an fsync per write.

Leases live in the file too.  On open every lease gets its full TTL again,
as etcd does on a leader change, so a registry restart does not expire every
agent at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from federation.shared.clock import Clock, SystemClock
from federation.shared.tasks import stop_tasks
from federation.store.base import (
    MAX_VALUE_BYTES,
    PAGE_BYTES,
    PAGE_KEYS,
    Compacted,
    Compare,
    Delete,
    Event,
    EventType,
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
)
from federation.store.sqlite_rows import (
    DELETE,
    PUT,
    SCHEMA,
    Watcher,
    bounds,
    event_of,
    kv_of,
    size_of,
    synchronous_pragma,
)

WATCH_BUFFER = 4096
WATCH_BUFFER_BYTES = 16 * 1024 * 1024  # a live watcher's pending events, whatever their count
HISTORY_BATCH = 1000
HISTORY_BYTES = 256 * 1024 * 1024  # history kept, like etcd's compaction by size


class SqliteStore:
    """The Store protocol on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        history_limit: int = 100_000,
        history_bytes: int = HISTORY_BYTES,
        max_value_bytes: int = MAX_VALUE_BYTES,
        synchronous: str = "NORMAL",
    ) -> None:
        self._clock = clock or SystemClock()
        self._history_limit = history_limit
        self._history_max_bytes = history_bytes
        self._max_value = max_value_bytes
        self._watchers: set[Watcher] = set()
        self._closed = False
        self._path = str(path)
        self._readers: set[sqlite3.Connection] = set()
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous_pragma(synchronous)}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as err:
            raise Unavailable(f"cannot open SQLite store at {path}: {err}") from err
        self._revision = self._meta("revision")
        self._compacted = self._meta("compacted")
        self._history_bytes = self._history_size()
        self._renew_all_leases()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the lease sweeper; ``open_store`` calls this."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            await stop_tasks(self._sweeper)
        for watcher in self._watchers:
            watcher.wake.set()
        for reader in list(self._readers):
            reader.close()
        self._db.close()

    @property
    def revision(self) -> int:
        return self._revision

    # -- reads ----------------------------------------------------------------

    async def get(self, key: str) -> GetResult:
        row = self._query("SELECT * FROM kv WHERE key = ?", (check_key(key),)).fetchone()
        return GetResult(kv=kv_of(row) if row else None, revision=self._revision)

    async def range(self, prefix: str) -> RangeResult:
        """One statement on the writer's connection, so one revision; for
        small prefixes only (``pages`` reads the large ones)."""
        start, end = bounds(prefix)
        if end is None:
            rows = self._query("SELECT * FROM kv WHERE key >= ? ORDER BY key", (start,))
        else:
            rows = self._query(
                "SELECT * FROM kv WHERE key >= ? AND key < ? ORDER BY key", (start, end)
            )
        return RangeResult(kvs=tuple(kv_of(r) for r in rows), revision=self._revision)

    async def pages(
        self, prefix: str, *, limit: int = PAGE_KEYS, max_bytes: int = PAGE_BYTES
    ) -> AsyncIterator[RangeResult]:
        """Pages from one read transaction on a connection of their own: WAL
        keeps that transaction's snapshot while the writer goes on, so every
        page is at the revision the first one read."""
        self._check_open()
        start, end = bounds(prefix)
        sql = "SELECT * FROM kv WHERE key >= ?" + ("" if end is None else " AND key < ?")
        params = (start,) if end is None else (start, end)
        reader = self._reader()
        try:
            reader.execute("BEGIN")
            meta = reader.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            revision = int(meta[0])
            rows = reader.execute(sql + " ORDER BY key", params)
            while True:
                page, size = [], 0
                for row in rows:
                    page.append(kv_of(row))
                    size += len(row[0]) + len(row[1])
                    if len(page) >= limit or size >= max_bytes:
                        break
                last = len(page) < limit and size < max_bytes
                yield RangeResult(kvs=tuple(page), revision=revision)
                if last:
                    return
                self._check_open()
        except sqlite3.Error as err:
            raise Unavailable(f"SQLite read failed: {err}") from err
        finally:
            self._readers.discard(reader)
            with contextlib.suppress(sqlite3.Error):
                reader.close()

    def _reader(self) -> sqlite3.Connection:
        try:
            reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise Unavailable(f"cannot open a SQLite reader: {err}") from err
        self._readers.add(reader)
        return reader

    # -- writes ---------------------------------------------------------------

    async def put(self, key: str, value: bytes, lease: LeaseId | None = None) -> int:
        return self._commit((), (Put(key=key, value=value, lease=lease),)).revision

    async def delete(self, key: str) -> int:
        return self._commit((), (Delete(key=key),)).revision

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op]) -> TxnResult:
        return self._commit(compare, success)

    async def compact(self, revision: int) -> None:
        revision = min(revision, self._revision)
        if revision > self._compacted:
            with self._transaction():
                self._trim_history(revision)

    def _trim_history(self, revision: int) -> None:
        """Forget history before ``revision``; call inside a transaction."""
        self._history_bytes -= self._history_size(before=revision)
        self._db.execute("DELETE FROM history WHERE revision < ?", (revision,))
        self._set_meta("compacted", revision)
        self._compacted = revision

    def _history_size(self, before: int | None = None) -> int:
        sql = "SELECT COALESCE(SUM(length(key) + length(value)), 0) FROM history"
        if before is None:
            return int(self._db.execute(sql).fetchone()[0])
        return int(self._db.execute(sql + " WHERE revision < ?", (before,)).fetchone()[0])

    def _bytes_horizon(self) -> int:
        """The oldest revision to keep so that history is back to three
        quarters of its byte bound."""
        excess = self._history_bytes - self._history_max_bytes * 3 // 4
        rows = self._db.execute(
            """SELECT revision, SUM(length(key) + length(value)) FROM history
               GROUP BY revision ORDER BY revision"""
        )
        for revision, size in rows:
            if excess <= 0:
                return int(revision)
            excess -= size
        return self._revision

    def _commit(self, compare: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        check_ops(ops, self._max_value)
        self._check_open()
        revision = self._revision + 1
        events: list[Event] = []
        with self._transaction():
            if not self._compares_hold(compare):
                return TxnResult(succeeded=False, revision=self._revision)
            for op in ops:
                event = self._apply(op, revision)
                if event is not None:
                    events.append(event)
            if events:
                self._record(events)
        if events:
            self._advance(revision, events)
        return TxnResult(succeeded=True, revision=self._revision)

    def _compares_hold(self, compare: Sequence[Compare]) -> bool:
        """Every compare, in one query (a publish guards three keys)."""
        if not compare:
            return True
        wanted = [(check_key(c.key), c.mod_revision) for c in compare]
        marks = ",".join("?" * len(wanted))
        rows = self._db.execute(
            f"SELECT key, mod_rev FROM kv WHERE key IN ({marks})",
            [key for key, _ in wanted],
        )
        held = dict(rows.fetchall())
        return all(held.get(key, 0) == mod for key, mod in wanted)

    def _apply(self, op: Op, revision: int) -> Event | None:
        raw = check_key(op.key)
        if isinstance(op, Delete):
            gone = self._db.execute("DELETE FROM kv WHERE key = ? RETURNING value", (raw,))
            row = gone.fetchone()
            if row is None:
                return None
            gone_value = bytes(row[0])
            return Event(type=EventType.DELETE, key=op.key, revision=revision, previous=gone_value)
        if op.lease is not None and not self._lease_exists(op.lease):
            raise LeaseNotFound(op.lease)
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (raw,)).fetchone()
        self._db.execute(
            """INSERT INTO kv VALUES (?, ?, ?, ?, 1, ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value,
               mod_rev = excluded.mod_rev, version = version + 1, lease = excluded.lease""",
            (raw, op.value, revision, revision, op.lease),
        )
        previous = None if row is None else bytes(row[0])
        return Event(
            type=EventType.PUT, key=op.key, revision=revision, value=op.value, previous=previous
        )

    def _record(self, events: Sequence[Event]) -> None:
        revision = events[0].revision
        self._db.executemany(
            "INSERT INTO history VALUES (?, ?, ?, ?, ?)",
            [
                (
                    revision,
                    seq,
                    PUT if e.type is EventType.PUT else DELETE,
                    e.key.encode(),
                    e.value,
                )
                for seq, e in enumerate(events)
            ],
        )
        self._set_meta("revision", revision)
        self._history_bytes += sum(len(e.key.encode()) + len(e.value) for e in events)
        horizon = revision - self._history_limit
        if self._history_bytes > self._history_max_bytes:
            horizon = max(horizon, self._bytes_horizon())
        elif revision % 256:
            return
        if horizon > self._compacted:
            self._trim_history(horizon)

    def _advance(self, revision: int, events: Sequence[Event]) -> None:
        self._revision = revision
        keyed = [(seq, event, event.key.encode()) for seq, event in enumerate(events)]
        for watcher in self._watchers:
            delivered = False
            for seq, event, key in keyed:
                if not watcher.matches(key):
                    continue
                if (
                    len(watcher.pending) >= WATCH_BUFFER
                    or watcher.pending_bytes >= WATCH_BUFFER_BYTES
                ):
                    watcher.overflow = True  # it catches up from the history table
                else:
                    watcher.pending.append((revision, seq, event))
                    watcher.pending_bytes += size_of(event)
                delivered = True
            if delivered:
                watcher.wake.set()

    # -- watch ----------------------------------------------------------------

    async def watch(
        self, prefix: str, start_revision: int | None = None, *, with_previous: bool = False
    ) -> AsyncIterator[Event]:
        """Live events carry the value they replaced; events replayed from
        the history table do not (it keeps only new values)."""
        self._check_open()
        start, end = bounds(prefix)
        first = self._revision + 1 if start_revision is None else max(start_revision, 1)
        watcher = Watcher(start, end, (first - 1, 2**62))
        if first < self._compacted:
            raise Compacted(first, self._compacted)
        # Replay and subscribe with no await between them: nothing slips by.
        watcher.overflow = first <= self._revision
        self._watchers.add(watcher)
        try:
            while True:
                if watcher.overflow:
                    for event in self._catch_up(watcher):
                        yield event
                    continue
                while watcher.pending:
                    revision, seq, event = watcher.pending.popleft()
                    watcher.pending_bytes -= size_of(event)
                    if (revision, seq) > watcher.position:
                        watcher.position = (revision, seq)
                        yield event if with_previous else replace(event, previous=None)
                if watcher.overflow:
                    continue
                watcher.wake.clear()
                await watcher.wake.wait()
                self._check_open()
        finally:
            self._watchers.discard(watcher)

    def _catch_up(self, watcher: Watcher) -> list[Event]:
        """Read the next batch of history past the watcher's position."""
        after_rev, after_seq = watcher.position
        if after_rev + 1 < self._compacted:
            raise Compacted(after_rev + 1, self._compacted)
        watcher.pending.clear()
        watcher.pending_bytes = 0
        rows = self._query(
            """SELECT revision, seq, type, key, value FROM history
               WHERE (revision > ? OR (revision = ? AND seq > ?)) ORDER BY revision, seq LIMIT ?""",
            (after_rev, after_rev, after_seq, HISTORY_BATCH),
        ).fetchall()
        if len(rows) < HISTORY_BATCH:
            watcher.overflow = False  # the buffer follows from here
        events = []
        for revision, seq, kind, key, value in rows:
            watcher.position = (revision, seq)
            if watcher.matches(key):
                events.append(event_of(revision, kind, key, value))
        return events

    # -- leases ---------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        if ttl <= 0:
            raise StoreError(f"lease TTL must be positive, got {ttl}")
        self._check_open()
        with self._transaction():
            lease = LeaseId(self._meta("next_lease"))
            self._set_meta("next_lease", lease + 1)
            self._db.execute(
                "INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, self._clock.now() + ttl)
            )
        return Lease(id=lease, ttl=ttl)

    async def keepalive(self, lease: LeaseId) -> int:
        row = self._query("SELECT ttl, expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        if row is None:
            raise LeaseNotFound(lease)
        ttl, expires_at = row
        if expires_at <= self._clock.now():  # expired, the sweeper just has not run yet
            self._drop_lease(lease)
            raise LeaseNotFound(lease)
        with self._transaction():
            self._db.execute(
                "UPDATE leases SET expires_at = ? WHERE id = ?", (self._clock.now() + ttl, lease)
            )
        return int(ttl)

    async def revoke(self, lease: LeaseId) -> None:
        if not self._lease_exists(lease):
            raise LeaseNotFound(lease)
        self._drop_lease(lease)

    def _drop_lease(self, lease: LeaseId) -> None:
        keys = [r[0] for r in self._query("SELECT key FROM kv WHERE lease = ?", (lease,))]
        self._commit((), tuple(Delete(key=k.decode()) for k in keys))
        with self._transaction():
            self._db.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _expire_due(self) -> None:
        due = self._query(
            "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at", (self._clock.now(),)
        ).fetchall()
        for (lease,) in due:
            self._drop_lease(LeaseId(lease))

    async def _sweep_forever(self) -> None:
        while True:
            row = self._query("SELECT MIN(expires_at) FROM leases").fetchone()
            delay = 1.0 if row[0] is None else min(max(row[0] - self._clock.now(), 0.0), 1.0)
            await self._clock.sleep(delay)
            self._expire_due()

    def _lease_exists(self, lease: LeaseId) -> bool:
        row = self._query("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        return row is not None and row[0] > self._clock.now()

    def _renew_all_leases(self) -> None:
        with self._transaction():
            self._db.execute("UPDATE leases SET expires_at = ? + ttl", (self._clock.now(),))

    # -- plumbing -------------------------------------------------------------

    def _query(self, sql: str, params: Iterable[object] = ()) -> sqlite3.Cursor:
        self._check_open()
        try:
            return self._db.execute(sql, tuple(params))
        except sqlite3.Error as err:
            raise Unavailable(f"SQLite read failed: {err}") from err

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise Unavailable(f"SQLite write failed: {err}") from err
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._db.execute("ROLLBACK")
            raise Unavailable(f"SQLite commit failed: {err}") from err

    def _meta(self, name: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("store is closed")
