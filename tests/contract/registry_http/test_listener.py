"""A slow-header flood cannot hold the registry: connections that do not
finish their request head in time are closed, the number open is capped,
and real requests are served throughout."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.api.listener import Limits
from tests.contract.registry_http.conftest import Harness, clock, running

CAP = 20


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Harness]:
    limits = Limits(max_connections=CAP, handshake_timeout=2.0, header_timeout=1.0)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    made = Harness("sqlite", tmp_path / "data", url, "/federation/v1/", clock(), limits=limits)
    async with running(made) as started:
        yield started


async def trickle(harness: Harness, closed: list[float]) -> None:
    """Open a TLS connection and send a request head one byte a second."""
    context = ssl.create_default_context(cadata=harness.registry.trust.state.bundle_pem.decode())
    assert harness.server is not None
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", harness.server.port, ssl=context, server_hostname="127.0.0.1"
        )
    except (ConnectionError, ssl.SSLError, OSError):
        closed.append(time.monotonic())
        return
    try:
        for byte in b"GET /v1/ca HTTP/1.1\r\nHost: x\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                    break
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    closed.append(time.monotonic())
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
        await writer.wait_closed()


async def test_slow_headers_are_cut_off_and_real_requests_still_served(
    guarded: Harness,
) -> None:
    closed: list[float] = []
    admin = guarded.admin()
    await admin.request("GET", "/v1/status")  # its keep-alive connection is open first
    started = time.monotonic()
    flood = [asyncio.create_task(trickle(guarded, closed)) for _ in range(3 * CAP)]
    try:
        for _ in range(5):  # served while the flood holds what it can
            status = await admin.request("GET", "/v1/status")
            assert status["clusters"] == 0
        await asyncio.wait_for(asyncio.gather(*flood), 15)
    finally:
        for task in flood:
            task.cancel()
    assert len(closed) == 3 * CAP
    # Every trickler was cut off by the header deadline (1 s), not by its own
    # 30 bytes at a byte a second.
    assert max(closed) - started < 8, max(closed) - started
    assert guarded.server is not None and guarded.server.guard is not None
    assert guarded.server.guard.open <= 1  # only the admin's keep-alive connection
    assert (await guarded.admin().request("GET", "/v1/status"))["clusters"] == 0
