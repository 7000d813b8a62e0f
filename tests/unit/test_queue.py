"""agents/cluster/queue.py: client-go's workqueue semantics on an injected clock."""

from __future__ import annotations

import asyncio
import random

from agents.cluster.queue import WorkQueue
from federation.shared.clock import ManualClock


async def test_a_dirty_key_is_queued_once() -> None:
    queue: WorkQueue[str] = WorkQueue(ManualClock())
    for key in ("a", "b", "a", "a"):
        queue.add(key)
    assert [await queue.get(), await queue.get()] == ["a", "b"]
    assert len(queue) == 0


async def test_a_key_added_while_processing_runs_once_more_never_twice_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue(ManualClock())
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # changed while a worker has it
    queue.add("a")
    assert len(queue) == 0  # not handed to a second worker
    queue.done(key)
    assert await queue.get() == "a"
    queue.done("a")
    assert queue.pending == 0


async def test_retries_back_off_per_key_and_forget_resets() -> None:
    clock = ManualClock()
    queue: WorkQueue[str] = WorkQueue(clock, base_delay=1.0, max_delay=8.0, jitter=random.Random(7))
    runner = asyncio.create_task(queue.run())
    try:
        delays = []
        for _ in range(5):
            queue.add("bad")
            key = await queue.get()
            delays.append(queue.retry(key))
            queue.done(key)
        assert all(0.5 * min(2**i, 8) <= d <= 1.5 * min(2**i, 8) for i, d in enumerate(delays))
        assert queue.failures("bad") == 5 and queue.failures("good") == 0
        queue.forget("bad")
        assert 0.5 <= queue.retry("bad") <= 1.5
        queue.add("good")  # another key is not held up by the failing one
        assert await queue.get() == "good"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_delayed_key_arrives_when_the_clock_says() -> None:
    clock = ManualClock()
    queue: WorkQueue[str] = WorkQueue(clock)
    runner = asyncio.create_task(queue.run())
    try:
        queue.add_after("later", 3.0)
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        clock.advance(2.0)
        await asyncio.sleep(0.01)
        assert not getter.done()
        clock.advance(1.5)
        assert await asyncio.wait_for(getter, 1.0) == "later"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
