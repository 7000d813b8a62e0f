"""A watch on the etcd store survives an etcd restart: it resumes from the
revision after the last event it delivered, missing nothing, repeating
nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest

from federation.sim.etcd_process import EtcdProcess
from federation.store.base import Event, Unavailable
from federation.store.etcd import EtcdStore
from tests.support import eventually


@pytest.fixture
def etcd() -> Iterator[EtcdProcess]:
    with EtcdProcess() as server:
        yield server


async def test_watch_resumes_across_an_etcd_restart(
    etcd: EtcdProcess, caplog: pytest.LogCaptureFixture
) -> None:
    writer = EtcdStore([etcd.endpoint], timeout=2.0)
    watcher = EtcdStore([etcd.endpoint], timeout=2.0)
    await writer.start()
    await watcher.start()
    seen: list[Event] = []
    try:
        start = await writer.put("/restart/k", b"0")

        async def follow() -> None:
            async with contextlib.aclosing(watcher.watch("/restart/", start)) as events:
                async for event in events:
                    seen.append(event)
                    if event.value == b"19":
                        return

        async with asyncio.TaskGroup() as group:
            group.create_task(follow())
            for i in range(1, 10):
                await writer.put("/restart/k", b"%d" % i)

            async def caught_up() -> bool:
                return len(seen) == 10

            await eventually(caught_up, what="the first ten events")
            await asyncio.to_thread(etcd.stop)
            await asyncio.to_thread(etcd.start)
            for i in range(10, 20):
                await _put_retrying(writer, b"%d" % i)
    finally:
        await writer.close()
        await watcher.close()
    assert "etcd watch broke" in caplog.text, "the restart never broke the watch"
    assert [e.value for e in seen] == [b"%d" % i for i in range(20)]
    revisions = [e.revision for e in seen]
    assert revisions == sorted(set(revisions))


async def _put_retrying(store: EtcdStore, value: bytes) -> None:
    for _ in range(50):
        try:
            await store.put("/restart/k", value)
            return
        except Unavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("etcd did not come back")


async def test_lease_renewals_resume_across_an_etcd_restart(etcd: EtcdProcess) -> None:
    """Renewals share one keepalive stream; etcd's restart breaks it, the
    renewal then fails as Unavailable (for the heartbeat's caller to
    retry), and the next one opens a new stream and renews the same lease."""
    store = EtcdStore([etcd.endpoint], timeout=2.0)
    await store.start()
    try:
        lease = await store.grant(60)
        assert await store.keepalive(lease.id) > 0
        await asyncio.to_thread(etcd.stop)
        with pytest.raises(Unavailable):
            await store.keepalive(lease.id)
        await asyncio.to_thread(etcd.start)

        async def renewed() -> bool:
            try:
                return await store.keepalive(lease.id) > 0
            except Unavailable:
                return False

        await eventually(renewed, what="a renewal after the restart")
        assert await store.keepalive(lease.id) > 0
    finally:
        await store.close()


def test_a_fresh_member_whose_port_was_taken_starts_on_new_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port is free when picked and taken before etcd binds it (another
    test's or another federation's connection): the member starts again
    on new ports instead of failing the test that needed it."""
    from federation.sim import etcd_process

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = int(taken.getsockname()[1])
    picks = iter([port])
    real = etcd_process.free_port
    monkeypatch.setattr(etcd_process, "free_port", lambda host: next(picks, 0) or real(host))
    try:
        with EtcdProcess() as server:
            assert server.running and port not in (server.client_port, server.peer_port)
    finally:
        taken.close()
