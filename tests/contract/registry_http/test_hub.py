"""The watch hub: one store watch fanned out to every stream, bounded, with
cursors that fall out of the buffer ending in Compacted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.api.hub import (
    COALESCE,
    LOADED,
    MAX_STRETCH,
    PER_STREAM,
    SINK_BUFFER,
    SLICE,
    Sink,
    WatchHub,
    window,
)
from federation.model import Cluster, Locality
from federation.registry import Registry
from federation.store import Compacted, open_store
from federation.trust.identity import Identity, Role
from tests.contract.registry_http.test_smoke import endpoint_set
from tests.support import eventually


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = await open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    made = Registry(store, passphrase=b"hub-test")
    await made.open()
    await made.add_member(
        Cluster(name="east", locality=Locality(region="r1", zone="z1")), token_ttl=60
    )
    try:
        yield made
    finally:
        await store.close()


async def _hub(registry: Registry, capacity: int) -> WatchHub:
    hub = WatchHub(registry, capacity=capacity)
    await hub.start()
    return hub


async def test_every_subscriber_gets_each_change_once(registry: Registry) -> None:
    hub = await _hub(registry, capacity=64)
    try:
        subscribers = [hub.subscribe(None) for _ in range(3)]
        revisions = [(await registry.publish(endpoint_set("east", g)))[0] for g in (1, 2)]
        for subscription in subscribers:
            assert subscription is not None
            got = []
            while len(got) < 2:
                got += await subscription.next(1.0)
            assert [e.revision for e in got] == revisions
            assert json.loads(got[1].line)["object"]["generation"] == 2
            assert subscription.revision == revisions[-1]
            assert await subscription.next(0.01) == []
    finally:
        await hub.stop()


async def test_a_quiet_stream_bookmarks_the_hub_head(registry: Registry) -> None:
    hub = await _hub(registry, capacity=64)
    try:
        subscription = hub.subscribe(None)
        assert subscription is not None
        # tokens are not a watched kind: the revision moves, no event is sent
        await registry.mint_token(Identity(Role.CLUSTER, "east"), token_ttl=60)
        await eventually(lambda: hub.head > subscription.revision)
        assert await subscription.next(0.01) == []
        assert subscription.revision == hub.head
    finally:
        await hub.stop()


async def test_since_before_the_buffer_is_not_served_and_laggards_are_cut(
    registry: Registry,
) -> None:
    hub = await _hub(registry, capacity=2)
    try:
        start = hub.head
        laggard = hub.subscribe(start)
        assert laggard is not None
        for generation in range(1, 7):
            await registry.publish(endpoint_set("east", generation))
        await eventually(lambda: hub.subscribe(start) is None)
        with pytest.raises(Compacted):
            await laggard.next(0.01)
        fresh = hub.subscribe(hub.head - 1)
        assert fresh is not None
        assert [e.revision for e in await fresh.next(0.01)] == [hub.head]
    finally:
        await hub.stop()


def test_the_window_grows_with_streams_and_stretches_on_a_loaded_loop() -> None:
    assert window(3, 0.1) == pytest.approx(3 * PER_STREAM)  # a few streams wait next to nothing
    assert window(255, 0.1) == pytest.approx(255 * PER_STREAM)
    assert window(1000, 0.1) == pytest.approx(COALESCE)  # at most the cap, unloaded
    assert window(255, LOADED) == pytest.approx(255 * PER_STREAM)
    assert window(255, 0.8) == pytest.approx(255 * PER_STREAM * 0.8 / LOADED)
    assert window(255, 5.0) == pytest.approx(255 * PER_STREAM * MAX_STRETCH)
    assert window(1000, 5.0) == pytest.approx(COALESCE * MAX_STRETCH)


async def test_the_hub_measures_its_loop_load_on_its_tick(registry: Registry) -> None:
    loop = asyncio.get_running_loop()
    busy = [0.9]  # of each loop second, on the injected CPU clock
    cpu = [0.0]
    last = [loop.time()]

    def clock() -> float:
        now = loop.time()
        cpu[0] += (now - last[0]) * busy[0]
        last[0] = now
        return cpu[0]

    hub = WatchHub(registry, tick=0.02, cpu=clock)
    await hub.start()
    try:
        # The hub and the clock read the loop's time a moment apart: equal
        # to within that moment over a tick, not to the last digit.
        await eventually(lambda: hub.load == pytest.approx(0.9, abs=0.02), what="a loaded loop")
        busy[0] = 0.1
        await eventually(lambda: hub.load == pytest.approx(0.1, abs=0.02), what="an idle loop")
    finally:
        await hub.stop()


class Transport:
    """What the hub writes to a parked stream: every chunk, and a buffer
    size and a closing flag the test sets."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.closing = False

        self.written = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.written.set()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def _lines(chunks: list[bytes]) -> list[dict[str, object]]:
    out = []
    for framed in chunks:
        size, _, rest = framed.partition(b"\r\n")
        assert rest.endswith(b"\r\n") and len(rest) == int(size, 16) + 2, "not one HTTP chunk"
        out += [json.loads(line) for line in rest[:-2].splitlines()]
    return out


async def test_a_parked_stream_is_written_by_the_hub_until_it_cannot_be(
    registry: Registry,
) -> None:
    hub = await _hub(registry, capacity=64)
    admitted = [True]
    transport = Transport()
    try:
        subscription = hub.subscribe(None)
        assert subscription is not None
        subscription.sink = Sink(transport, False, lambda: admitted[0])  # type: ignore[arg-type]
        parked = asyncio.create_task(subscription.next())
        await asyncio.sleep(0)  # one loop step: the task runs up to its wait
        first = (await registry.publish(endpoint_set("east", 1)))[0]
        await eventually(lambda: bool(transport.chunks), what="the hub's own write")
        assert [line["revision"] for line in _lines(transport.chunks)] == [first]
        assert not parked.done(), "a stream the hub wrote for stays parked"
        transport.buffered = SINK_BUFFER  # the client stopped reading: the stream writes
        second = (await registry.publish(endpoint_set("east", 2)))[0]
        assert [e.revision for e in await asyncio.wait_for(parked, 5.0)] == [second]
        assert len(transport.chunks) == 1
        transport.buffered = 0
        admitted[0] = False  # its caller was removed: woken, to end with Revoked
        parked = asyncio.create_task(subscription.next())
        await asyncio.sleep(0)
        third = (await registry.publish(endpoint_set("east", 3)))[0]
        assert [e.revision for e in await asyncio.wait_for(parked, 5.0)] == [third]
        assert len(transport.chunks) == 1
    finally:
        await hub.stop()


async def test_a_wake_writes_a_slice_of_streams_per_loop_step_and_loses_none(
    registry: Registry,
) -> None:
    hub = await _hub(registry, capacity=64)
    transports = [Transport() for _ in range(10 * SLICE + 5)]
    streams = []
    try:
        for transport in transports:
            subscription = hub.subscribe(None)
            assert subscription is not None
            subscription.sink = Sink(transport, False, lambda: True)  # type: ignore[arg-type]
            streams.append(asyncio.create_task(subscription.next()))
        await asyncio.sleep(0)  # every stream parked
        first = (await registry.publish(endpoint_set("east", 1)))[0]
        await transports[0].written.wait()  # resumed before the wake's next step
        assert sum(1 for t in transports if t.chunks) == SLICE
        assert not any(stream.done() for stream in streams)
    finally:
        await hub.stop()  # wakes every stream, those not written yet too
    returned = await asyncio.wait_for(asyncio.gather(*streams), 5.0)
    for transport, entries in zip(transports, returned, strict=True):
        got = [line["revision"] for line in _lines(transport.chunks)] + [
            e.revision for e in entries
        ]
        assert got == [first], "each stream gets the change once, written or returned"
    assert any(returned), "the stop came before the wake's last step: those streams were woken"
