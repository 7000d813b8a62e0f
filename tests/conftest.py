"""Fixtures shared by every test: no asyncio task may outlive its test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    for _ in range(3):  # let cancelled tasks finish unwinding
        await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks outlived the test: {leaked}"
