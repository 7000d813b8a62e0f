"""federation/api/http.py Health: a background task that stops is reported, not lost."""

from __future__ import annotations

import asyncio

from federation.api.http import Health


async def test_a_task_that_dies_is_named_and_a_cancelled_one_is_not() -> None:
    health = Health()

    async def broken() -> None:
        raise RuntimeError("the store said no")

    async def forever() -> None:
        await asyncio.Event().wait()

    dying = asyncio.create_task(broken())
    cancelled = asyncio.create_task(forever())
    health.supervise(dying, "liveness")
    health.supervise(cancelled, "rotation")
    await asyncio.gather(dying, return_exceptions=True)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert health.failed == {"liveness": "RuntimeError: the store said no"}
