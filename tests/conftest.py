"""Fixtures shared by every test: no asyncio task may outlive its test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from federation.sim.etcd_process import EtcdProcess

# Tasks that are already unwinding (a gRPC call being cancelled, say) get this
# long to finish on their own before they count as leaked.
UNWIND_SECONDS = 2.0


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()

    def stragglers() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() if t not in before and t is not current}

    pending = stragglers()
    if pending:
        await asyncio.wait(pending, timeout=UNWIND_SECONDS)
    leaked = [t for t in stragglers() if not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"tasks outlived the test: {leaked}"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdProcess]:
    """One real etcd for the session, on a free loopback port; never skipped."""
    with EtcdProcess() as server:
        yield server
