"""The store contract (DESIGN section 3), run against SQLite and etcd alike."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.store.base import (
    MAX_VALUE_BYTES,
    Compacted,
    Compare,
    Delete,
    Event,
    EventType,
    LeaseId,
    LeaseNotFound,
    Put,
    Store,
    ValueTooLarge,
)
from federation.store.sqlite import SqliteStore
from tests.contract.store.conftest import Backend


async def take(events: AsyncIterator[Event], count: int, timeout: float = 10.0) -> list[Event]:
    """The next ``count`` events, or fail after ``timeout`` seconds."""

    async def collect() -> list[Event]:
        out = []
        async for event in events:
            out.append(event)
            if len(out) == count:
                break
        return out

    return await asyncio.wait_for(collect(), timeout)


async def test_get_put_delete_round_trip(backend: Backend, store: Store) -> None:
    key = backend.key("a")
    assert (await store.get(key)).kv is None
    rev = await store.put(key, b"one")
    got = await store.get(key)
    assert got.kv is not None
    assert got.kv.value == b"one"
    assert got.kv.mod_revision == rev == got.kv.create_revision
    assert got.kv.version == 1
    assert got.revision >= rev
    rev2 = await store.put(key, b"two")
    got = await store.get(key)
    assert got.kv is not None and got.kv.version == 2 and got.kv.create_revision == rev
    assert got.kv.mod_revision == rev2
    await store.delete(key)
    assert (await store.get(key)).kv is None


async def test_range_returns_only_the_prefix_in_key_order(backend: Backend, store: Store) -> None:
    for name in ["b", "a", "c/x"]:
        await store.put(backend.key(name), name.encode())
    await store.put(backend.prefix.rstrip("/") + "-sibling", b"not mine")
    result = await store.range(backend.prefix)
    assert [kv.key for kv in result.kvs] == [backend.key(n) for n in ["a", "b", "c/x"]]
    assert result.revision >= max(kv.mod_revision for kv in result.kvs)


async def test_revisions_strictly_increase(backend: Backend, store: Store) -> None:
    revisions = [await store.put(backend.key(f"k{i % 3}"), b"%d" % i) for i in range(20)]
    revisions.append(await store.delete(backend.key("k0")))
    assert all(b > a for a, b in itertools.pairwise(revisions))


async def test_watch_yields_every_later_event_once_in_order(backend: Backend, store: Store) -> None:
    first = await store.put(backend.key("w0"), b"0")
    expected = [(EventType.PUT, backend.key("w0"), b"0", first)]
    for i in range(1, 30):
        key = backend.key(f"w{i % 4}")
        if i % 7 == 0:
            rev = await store.delete(key)
            expected.append((EventType.DELETE, key, b"", rev))
        else:
            rev = await store.put(key, b"%d" % i)
            expected.append((EventType.PUT, key, b"%d" % i, rev))
    async with contextlib.aclosing(store.watch(backend.prefix, first)) as events:
        seen = await take(events, len(expected))
    assert [(e.type, e.key, e.value, e.revision) for e in seen] == expected


async def test_watch_follows_live_writes(backend: Backend, store: Store) -> None:
    now = (await store.range(backend.prefix)).revision
    async with contextlib.aclosing(store.watch(backend.prefix, now + 1)) as events:
        waiter = asyncio.ensure_future(take(events, 3))
        written = [await store.put(backend.key(f"live{i}"), b"x") for i in range(3)]
        seen = await waiter
    assert [e.revision for e in seen] == written


async def test_live_watch_with_previous_carries_the_replaced_value(
    backend: Backend, store: Store
) -> None:
    now = (await store.range(backend.prefix)).revision
    key = backend.key("prev")
    async with contextlib.aclosing(
        store.watch(backend.prefix, now + 1, with_previous=True)
    ) as events:
        await store.put(backend.key("marker"), b"m")
        await take(events, 1)  # the watch is live: what follows is not replayed
        waiter = asyncio.ensure_future(take(events, 3))
        await store.put(key, b"first")
        await store.put(key, b"second")
        await store.delete(key)
        created, replaced, deleted = await waiter
    assert (created.value, created.previous) == (b"first", None)
    assert (replaced.value, replaced.previous) == (b"second", b"first")
    assert (deleted.type, deleted.previous) == (EventType.DELETE, b"second")


async def test_watch_without_previous_carries_none(backend: Backend, store: Store) -> None:
    now = (await store.range(backend.prefix)).revision
    key = backend.key("noprev")
    async with contextlib.aclosing(store.watch(backend.prefix, now + 1)) as events:
        waiter = asyncio.ensure_future(take(events, 2))
        await store.put(key, b"a")
        await store.put(key, b"b")
        seen = await waiter
    assert [e.previous for e in seen] == [None, None]


async def test_watch_resumed_after_reconnect_misses_nothing(backend: Backend, store: Store) -> None:
    start = await store.put(backend.key("r"), b"0")
    for i in range(1, 10):
        await store.put(backend.key("r"), b"%d" % i)
    async with contextlib.aclosing(store.watch(backend.prefix, start)) as events:
        first_half = await take(events, 5)
    await store.close()
    backend.stores.remove(store)

    again = await backend.open()
    for i in range(10, 15):
        await again.put(backend.key("r"), b"%d" % i)
    resume_from = first_half[-1].revision + 1
    async with contextlib.aclosing(again.watch(backend.prefix, resume_from)) as events:
        second_half = await take(events, 10)
    values = [e.value for e in first_half + second_half]
    assert values == [b"%d" % i for i in range(15)]


async def test_transaction_events_share_one_revision(backend: Backend, store: Store) -> None:
    start = await store.put(backend.key("t0"), b"before")
    result = await store.txn(
        [],
        [Put(key=backend.key("t1"), value=b"1"), Delete(key=backend.key("t0"))],
    )
    assert result.succeeded
    async with contextlib.aclosing(store.watch(backend.prefix, start + 1)) as events:
        seen = await take(events, 2)
    assert {e.revision for e in seen} == {result.revision}
    assert [e.type for e in seen] == [EventType.PUT, EventType.DELETE]


async def test_too_old_revision_raises_compacted(backend: Backend, store: Store) -> None:
    old = await store.put(backend.key("c"), b"0")
    for i in range(5):
        latest = await store.put(backend.key("c"), b"%d" % i)
    await store.compact(latest)
    with pytest.raises(Compacted):
        async with contextlib.aclosing(store.watch(backend.prefix, old)) as events:
            await take(events, 1)
    # The compaction point itself is still watchable.
    async with contextlib.aclosing(store.watch(backend.prefix, latest)) as events:
        assert (await take(events, 1))[0].revision == latest


async def test_compare_and_swap_loses_no_update_under_concurrent_writers(
    backend: Backend, store: Store
) -> None:
    key = backend.key("counter")
    await store.put(key, b"0")
    writers, increments = 8, 15
    conflicts = 0

    async def writer() -> None:
        nonlocal conflicts
        for _ in range(increments):
            while True:
                current = await store.get(key)
                assert current.kv is not None
                await asyncio.sleep(0)  # let the other writers interleave
                swapped = await store.txn(
                    [Compare(key=key, mod_revision=current.kv.mod_revision)],
                    [Put(key=key, value=b"%d" % (int(current.kv.value) + 1))],
                )
                if swapped.succeeded:
                    break
                conflicts += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(writers):
            group.create_task(writer())
    final = await store.get(key)
    assert final.kv is not None
    assert int(final.kv.value) == writers * increments
    assert conflicts > 0, "the writers never raced; the test proves nothing"


async def test_create_only_if_absent(backend: Backend, store: Store) -> None:
    key = backend.key("once")
    first = await store.txn([Compare(key=key, mod_revision=0)], [Put(key=key, value=b"a")])
    second = await store.txn([Compare(key=key, mod_revision=0)], [Put(key=key, value=b"b")])
    assert first.succeeded and not second.succeeded
    got = await store.get(key)
    assert got.kv is not None and got.kv.value == b"a"


async def test_expired_lease_deletes_keys_as_watch_events(backend: Backend, store: Store) -> None:
    lease = await store.grant(2)
    start = await store.put(backend.key("leased"), b"x", lease=lease.id)
    await store.put(backend.key("kept"), b"y")
    async with contextlib.aclosing(store.watch(backend.prefix, start)) as events:
        assert [e.type for e in await take(events, 2)] == [EventType.PUT, EventType.PUT]
        backend.let_time_pass(3)
        (gone,) = await take(events, 1, timeout=15)
    assert gone.type is EventType.DELETE and gone.key == backend.key("leased")
    assert (await store.get(backend.key("leased"))).kv is None
    assert (await store.get(backend.key("kept"))).kv is not None
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease.id)


async def test_keepalive_keeps_keys(backend: Backend, store: Store) -> None:
    lease = await store.grant(2)
    await store.put(backend.key("alive"), b"x", lease=lease.id)
    for _ in range(3):
        backend.let_time_pass(1)
        assert await store.keepalive(lease.id) >= 1
    got = await store.get(backend.key("alive"))
    assert got.kv is not None and got.kv.lease == lease.id


async def test_revoked_lease_deletes_keys_as_watch_events(backend: Backend, store: Store) -> None:
    lease = await store.grant(60)
    start = await store.put(backend.key("l1"), b"1", lease=lease.id)
    await store.put(backend.key("l2"), b"2", lease=lease.id)
    await store.revoke(lease.id)
    async with contextlib.aclosing(store.watch(backend.prefix, start)) as events:
        seen = await take(events, 4)
    assert [(e.type, e.key) for e in seen[2:]] == [
        (EventType.DELETE, backend.key("l1")),
        (EventType.DELETE, backend.key("l2")),
    ]
    assert not (await store.range(backend.prefix)).kvs
    with pytest.raises(LeaseNotFound):
        await store.put(backend.key("l3"), b"3", lease=lease.id)


async def test_put_with_unknown_lease_is_refused(backend: Backend, store: Store) -> None:
    with pytest.raises(LeaseNotFound):
        await store.put(backend.key("nope"), b"x", lease=LeaseId(987654321))
    assert (await store.get(backend.key("nope"))).kv is None


async def test_value_over_the_bound_is_refused_and_nothing_written(
    backend: Backend, store: Store
) -> None:
    key = backend.key("big")
    await store.put(key, b"small")
    with pytest.raises(ValueTooLarge, match="over the limit"):
        await store.put(key, b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(ValueTooLarge):
        await store.txn(
            [],
            [Put(key=backend.key("other"), value=b"1"), Put(key=key, value=b"x" * (2 << 20))],
        )
    got = await store.get(key)
    assert got.kv is not None and got.kv.value == b"small"
    assert (await store.get(backend.key("other"))).kv is None
    await store.put(key, b"x" * MAX_VALUE_BYTES)  # exactly the bound is fine


async def test_pages_read_more_than_16_mib_at_one_revision(backend: Backend, store: Store) -> None:
    """A prefix four times gRPC's default message limit reads in bounded
    pages, every page at the first page's revision, while writes go on."""
    value = b"x" * (256 * 1024)
    count = 68  # 17 MiB under one prefix
    for start in range(0, count, 4):
        await store.txn(
            [], [Put(key=backend.key(f"big/{i:03d}"), value=value) for i in range(start, start + 4)]
        )
    pages = store.pages(backend.key("big/"), limit=50, max_bytes=2 * 1024 * 1024)
    seen: list[str] = []
    revisions = set()
    async for page in pages:
        assert 1 <= len(page.kvs) <= 50
        assert sum(len(kv.value) for kv in page.kvs) <= 2 * 1024 * 1024 + len(value)
        revisions.add(page.revision)
        seen.extend(kv.key for kv in page.kvs)
        # Writes between pages are not part of this read.
        await store.put(backend.key(f"big/{len(seen):03d}"), b"changed")
        await store.put(backend.key("big/zzz-new"), b"new")
    assert len(revisions) == 1
    assert seen == [backend.key(f"big/{i:03d}") for i in range(count)]


async def test_pages_of_an_empty_prefix_still_tell_the_revision(
    backend: Backend, store: Store
) -> None:
    rev = await store.put(backend.key("other"), b"1")
    pages = [page async for page in store.pages(backend.key("none/"))]
    assert len(pages) == 1 and pages[0].kvs == () and pages[0].revision >= rev


async def test_pages_hold_what_each_key_had_at_the_pinned_revision(
    backend: Backend, store: Store
) -> None:
    for i in range(30):
        await store.put(backend.key(f"p/{i:02d}"), b"old")
    pages = store.pages(backend.key("p/"), limit=10)
    first = await anext(pages)
    for i in range(30):
        await store.put(backend.key(f"p/{i:02d}"), b"new")
    await store.delete(backend.key("p/29"))
    rest = [kv async for page in pages for kv in page.kvs]
    values = [kv.value for kv in (*first.kvs, *rest)]
    assert values == [b"old"] * 30


async def test_sqlite_history_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Large values compact the history by size, as etcd's size-based
    compaction would, and a watch from before the horizon is Compacted."""
    store = SqliteStore(tmp_path / "bounded.db", history_bytes=4 * 1024 * 1024)
    await store.start()
    try:
        first = await store.put("/h/k", b"x" * 200_000)
        for i in range(60):  # 12 MB written, three times the bound
            await store.put(f"/h/k{i % 5}", b"y" * 200_000)
        size = (tmp_path / "bounded.db").stat().st_size
        with contextlib.closing(sqlite3.connect(tmp_path / "bounded.db")) as db:
            (history,) = db.execute(
                "SELECT SUM(length(key) + length(value)) FROM history"
            ).fetchone()
        assert history <= 4 * 1024 * 1024
        with pytest.raises(Compacted):
            await anext(aiter(store.watch("/h/", first)))
        latest = await store.put("/h/last", b"z")
        events = await take(store.watch("/h/", latest), 1)
        assert events[0].key == "/h/last"
        assert size < 32 * 1024 * 1024
    finally:
        await store.close()


async def test_a_paged_read_overtaken_by_compaction_fails_or_stays_whole(
    backend: Backend, store: Store
) -> None:
    """etcd cannot read a compacted revision: the read raises Compacted.
    SQLite's read transaction keeps its snapshot: the read completes as of
    its revision.  Neither ever returns a mix of two revisions."""
    for i in range(30):
        await store.put(backend.key(f"c/{i:02d}"), b"old")
    pages = store.pages(backend.key("c/"), limit=10)
    first = await anext(pages)
    for i in range(30):
        latest = await store.put(backend.key(f"c/{i:02d}"), b"new")
    await store.compact(latest)
    try:
        rest = [kv async for page in pages for kv in page.kvs]
    except Compacted:
        assert backend.name == "etcd"
        return
    assert backend.name == "sqlite"
    assert [kv.value for kv in (*first.kvs, *rest)] == [b"old"] * 30


async def test_concurrent_transactions_each_get_their_own_answer(
    backend: Backend, store: Store
) -> None:
    """Transactions asked at once (etcd group-commits them, decision 57):
    each succeeds or fails on its own guard, each writes only its own keys,
    and two creating the same key cannot both succeed."""
    keys = [backend.key(f"c{i}") for i in range(40)]
    held = await store.put(keys[0], b"already")

    async def create(key: str, value: bytes) -> bool:
        result = await store.txn([Compare(key=key, mod_revision=0)], [Put(key=key, value=value)])
        return result.succeeded

    answers = await asyncio.gather(
        *(create(key, b"v%d" % i) for i, key in enumerate(keys)),
        create(keys[5], b"twice"),  # the same key again: only one creation wins
        store.txn([Compare(key=keys[0], mod_revision=held)], [Delete(key=backend.key("gone"))]),
    )
    assert answers[0] is False  # keys[0] existed
    assert answers[1:40] == [True] * 39
    assert answers[40] is False
    assert answers[41].succeeded
    stored = {kv.key: kv.value for kv in (await store.range(backend.key("c"))).kvs}
    assert stored[keys[0]] == b"already"
    assert stored[keys[5]] == b"v5"
    assert all(stored[key] == b"v%d" % i for i, key in enumerate(keys) if i)


async def test_a_watch_carries_every_change_of_concurrent_transactions(
    backend: Backend, store: Store
) -> None:
    now = (await store.range(backend.prefix)).revision
    keys = [backend.key(f"g{i}") for i in range(20)]
    async with contextlib.aclosing(store.watch(backend.prefix, now + 1)) as events:
        waiter = asyncio.ensure_future(take(events, len(keys)))
        results = await asyncio.gather(*(store.txn([], [Put(key=k, value=b"x")]) for k in keys))
        seen = await waiter
    assert sorted(e.key for e in seen) == sorted(keys)
    by_key = {e.key: e.revision for e in seen}
    assert [by_key[k] for k in keys] == [r.revision for r in results]
    assert [e.revision for e in seen] == sorted(e.revision for e in seen)


async def test_concurrent_renewals_each_get_their_own_answer(
    backend: Backend, store: Store
) -> None:
    """Renewals of many leases at once (the etcd store sends them as
    messages on one keepalive stream): each caller gets its own lease's
    TTL, and one that names a revoked lease fails alone."""
    leases = [await store.grant(30 + i) for i in range(20)]
    gone = await store.grant(30)
    await store.revoke(gone.id)

    async def renew(lease: LeaseId) -> int | str:
        try:
            return await store.keepalive(lease)
        except LeaseNotFound:
            return "gone"

    answers = await asyncio.gather(
        *(renew(lease.id) for lease in leases[:10]),
        renew(gone.id),
        *(renew(lease.id) for lease in leases[10:]),
    )
    assert answers[10] == "gone"
    ttls = answers[:10] + answers[11:]
    assert all(isinstance(t, int) and 1 <= t <= 30 + i for i, t in enumerate(ttls)), ttls
    assert ttls[-1] > ttls[0]  # each is its own lease's (granted for 30 .. 49 s)
