"""The etcd watch is read on a thread (decision 52).  What it has read and
the loop has not taken is bounded in bytes without losing or reordering
anything; closing a watch, or the store, is bounded even when gRPC or aetcd
never finishes, and leaves no task behind (the autouse fixture checks)."""

from __future__ import annotations

import asyncio
import threading

import aetcd.rpc as rpc
import pytest
from aetcd import watcher as etcd_watcher

from federation.sim.etcd_process import EtcdProcess
from federation.store import etcd as etcd_store
from federation.store.etcd import EtcdStore
from federation.store.etcd_watch import Created, WatchStream

HANG_BOUND = 15.0  # a hang fails the test here, not at pytest's timeout
VALUE = b"v" * 1000


def _stream(etcd: EtcdProcess, start: int, pending_bytes: int) -> WatchStream:
    request = rpc.WatchCreateRequest(key=b"/bp/", range_end=b"/bp0", start_revision=start)
    return WatchStream(
        f"{etcd.host}:{etcd.client_port}", None, request,
        max_message=1 << 20, pending_bytes=pending_bytes,
    )  # fmt: skip


async def test_a_slow_consumer_gets_everything_in_order_within_the_bound(
    etcd_server: EtcdProcess,
) -> None:
    store = EtcdStore([etcd_server.endpoint])
    await store.start()
    first = await store.put("/bp/0", VALUE)
    for n in range(1, 300):
        await store.put(f"/bp/{n % 7}", VALUE + b"%d" % n)
    stream = _stream(etcd_server, first, pending_bytes=4096)  # a few responses
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(HANG_BOUND):
            while len(seen) < 300:
                for item in await stream.take():
                    if isinstance(item, list):
                        seen += [event.value for event in item]
                    else:
                        assert isinstance(item, Created), item
                await asyncio.sleep(0)  # the thread refills, held at the bound
    finally:
        await stream.close(HANG_BOUND)
        await store.close()
    assert seen == [VALUE] + [VALUE + b"%d" % n for n in range(1, 300)]


async def test_a_watch_thread_stuck_in_grpc_does_not_hold_up_the_close(
    etcd_server: EtcdProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    monkeypatch.setattr(WatchStream, "_read", lambda self: release.wait(HANG_BOUND))
    stream = _stream(etcd_server, 0, pending_bytes=1 << 20)
    try:
        async with asyncio.timeout(HANG_BOUND):
            await stream.close(0.2)
    finally:
        release.set()
    assert "etcd watch thread still running" in caplog.text


async def test_an_aetcd_close_that_never_returns_is_bounded(
    etcd_server: EtcdProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = EtcdStore([etcd_server.endpoint])
    await store.start()
    await store.put("/stuck/k", b"0")
    never = asyncio.Event()

    async def stuck(self: object) -> None:
        await never.wait()

    monkeypatch.setattr(etcd_store, "SHUTDOWN_SECONDS", 0.2)
    monkeypatch.setattr(etcd_watcher.Watcher, "shutdown", stuck)
    async with asyncio.timeout(HANG_BOUND):
        await store.close()
    assert "etcd client close overran" in caplog.text
