"""An agent that cannot reach the registry says so once, then once a
minute: not a line per retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest

from agents.client import RegistryClient
from federation.shared.clock import Backoff
from federation.trust import ca as certs
from tests.support import eventually


class Hurried:
    """A clock whose sleeps pass at once, moving its time on."""

    def __init__(self) -> None:
        self.time = 1_700_000_000.0

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += seconds
        await asyncio.sleep(0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


async def test_a_long_outage_is_a_warning_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    root = certs.new_root("cluster.local", 1_700_000_000.0)
    clock = Hurried()
    client = RegistryClient(
        f"https://127.0.0.1:{closed_port()}", None, ca_pem=certs.cert_pem(root.cert), clock=clock,
        backoff=Backoff(1.0, 5.0),
    )  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="agents.client")
    stream = client.changes()
    task = asyncio.create_task(anext(stream))
    try:
        await eventually(lambda: client.stream.breaks >= 40, what="40 broken attempts")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await task
        await stream.aclose()
        await client.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "watch" in r.message]
    minutes = (clock.time - 1_700_000_000.0) / 60
    assert client.stream.connected is False
    assert 1 <= len(warnings) <= minutes + 2, (len(warnings), minutes)
    assert len(warnings) < 40 / 4


class Beating:
    """A registry client that answers heartbeats with a 15 s TTL."""

    def __init__(self) -> None:
        self.beats = 0

    async def heartbeat(self, source: object, applied: object = None) -> dict[str, float]:
        self.beats += 1
        return {"ttlSeconds": 15}


class Recording(Hurried):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def test_heartbeats_are_jittered_so_a_fleet_drifts_out_of_step() -> None:
    """Agents that beat in step (started together, or answered together
    after a registry stall) stay in step without jitter: a burst of the
    whole fleet every period.  Each wait is a third of the TTL +-20%."""
    from agents.view import keep_alive
    from federation.model import SourceRef

    clocks = [Recording(), Recording()]
    clients = [Beating(), Beating()]
    tasks = [
        asyncio.create_task(keep_alive(client, SourceRef.parse("cluster:c"), clock))  # type: ignore[arg-type]
        for client, clock in zip(clients, clocks, strict=True)
    ]
    try:
        await eventually(lambda: all(len(c.sleeps) >= 50 for c in clocks), what="50 beats each")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for clock in clocks:
        assert all(4.0 <= s < 6.0 for s in clock.sleeps), clock.sleeps
        assert 4.6 < sum(clock.sleeps) / len(clock.sleeps) < 5.4
    first, second = (c.sleeps[:50] for c in clocks)
    assert abs(sum(first) - sum(second)) > 0.01  # the two fell out of step
