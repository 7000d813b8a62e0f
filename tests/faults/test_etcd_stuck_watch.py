"""A watch whose gRPC stream never finishes cancelling cannot hold up the
store's close: the cancel and the close are bounded, and an overrunning close
ends the channel, so no task of the watch outlives it (the autouse fixture
checks that)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aetcd import watcher as etcd_watcher

from federation.sim.etcd_process import EtcdProcess
from federation.store import etcd as etcd_store
from federation.store.etcd import EtcdStore

HANG_BOUND = 15.0  # a hang fails the test here, not at pytest's timeout


async def test_a_stuck_watch_does_not_hold_up_the_close(
    etcd_server: EtcdProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = EtcdStore([etcd_server.endpoint], timeout=2.0)
    await store.start()
    first = await store.put("/stuck/k", b"0")
    events = store.watch("/stuck/", first)
    assert (await anext(events)).value == b"0"

    never = asyncio.Event()

    async def stuck(self: object, *args: object) -> None:
        await never.wait()

    monkeypatch.setattr(etcd_store, "SHUTDOWN_SECONDS", 0.2)
    monkeypatch.setattr(etcd_watcher.Watcher, "cancel", stuck)
    monkeypatch.setattr(etcd_watcher.Watcher, "shutdown", stuck)
    async with asyncio.timeout(HANG_BOUND):
        with contextlib.suppress(etcd_store.Unavailable):
            await events.aclose()
        await store.close()
    assert "etcd watch cancel overran" in caplog.text
    assert "etcd client close overran" in caplog.text
