"""One store contract, two real backends: a SQLite file and an etcd process.

The etcd process is started once per session on a free loopback port; if it
cannot start the run fails (it is never skipped).  Each test gets its own key
prefix, so tests do not see each other's keys.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from federation.shared.clock import ManualClock
from federation.sim.etcd_process import EtcdProcess
from federation.store.base import Store
from federation.store.etcd import EtcdStore
from federation.store.sqlite import SqliteStore

_prefixes = itertools.count()


@dataclass
class Backend:
    """A store under test plus the knobs the contract needs."""

    name: str
    prefix: str
    path: Path | None = None
    etcd: EtcdProcess | None = None
    clock: ManualClock | None = None
    stores: list[Store] = field(default_factory=list)

    async def open(self, history_limit: int = 100_000) -> Store:
        """A new connection to the same data: a 'reconnect'."""
        store: Store
        if self.path is not None:
            sqlite = SqliteStore(self.path, clock=self.clock, history_limit=history_limit)
            await sqlite.start()
            store = sqlite
        else:
            assert self.etcd is not None
            etcd = EtcdStore([self.etcd.endpoint])
            await etcd.start()
            store = etcd
        self.stores.append(store)
        return store

    def let_time_pass(self, seconds: float) -> None:
        """Move a manual clock; etcd's own clock moves by itself."""
        if self.clock is not None:
            self.clock.advance(seconds)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


@pytest.fixture(params=["sqlite", "etcd"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    prefix = f"/federation-test/{next(_prefixes)}/"
    if request.param == "sqlite":
        chosen = Backend(
            name="sqlite", prefix=prefix, path=tmp_path / "store.db", clock=ManualClock()
        )
    else:
        chosen = Backend(name="etcd", prefix=prefix, etcd=request.getfixturevalue("etcd_server"))
    yield chosen
    for store in chosen.stores:
        await store.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()
