"""The registry server's background tasks are owned: one that crashes is
reported at once (``/readyz`` 503 naming it) and ends ``crashed()``, on
which ``fedctl registry serve`` exits non-zero."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from federation.api.server import RegistryServer
from federation.registry import Registry
from federation.store import open_store


async def test_a_crashed_trust_watch_stops_the_replica_loudly(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'registry.db'}")
    real_watch = store.watch

    def watch(key: str, start: int, **kwargs: Any) -> AsyncIterator[Any]:
        if not key.endswith("trust/bundle"):
            return real_watch(key, start, **kwargs)

        async def broken() -> AsyncIterator[Any]:
            raise RuntimeError("a bug in the bundle watch")
            yield  # an async generator

        return broken()

    store.watch = watch  # type: ignore[method-assign]
    server = RegistryServer(Registry(store, passphrase=b"key"), tmp_path, passphrase=b"key")
    try:
        await server.start()
        async with asyncio.timeout(10):
            why = await server.crashed()
        assert why == "the trust bundle task stopped (RuntimeError: a bug in the bundle watch)"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.url}/readyz", ssl=False) as answer,
        ):
            assert answer.status == 503
            assert "trust bundle" in (await answer.json())["message"]
    finally:
        await server.stop()
        await store.close()
