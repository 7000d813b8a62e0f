"""The registry's listening socket, guarded against connections that hold
it without asking anything.

aiohttp bounds idle keep-alive connections but not a client that opens a
connection and trickles its request head a byte at a time, nor how many
connections are open.  The guard wraps aiohttp's protocol factory:

- at most ``max_connections`` open; one more is closed at once;
- the TLS handshake must finish within ``handshake_timeout``;
- the first request head (through its blank line) must arrive within
  ``header_timeout`` of the connection opening, or the connection is closed;
- an idle keep-alive connection is closed after ``idle_timeout`` (aiohttp's
  own keep-alive timer, set from the same limits).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger("federation.api")

HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    max_connections: int = 4096
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 60.0


class Guard:
    """A protocol factory around aiohttp's, counting and timing connections."""

    def __init__(self, factory: web.Server, limits: Limits) -> None:
        self.factory = factory
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.expired = 0

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self, self.factory())


class _Connection(asyncio.Protocol):
    def __init__(self, guard: Guard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.open >= guard.limits.max_connections:
            guard.refused += 1
            if guard.refused in (1, 10, 100) or guard.refused % 1000 == 0:
                log.warning("connection cap of %d reached: refused %d connections so far",
                            guard.limits.max_connections, guard.refused)  # fmt: skip
            transport.close()
            return
        guard.open += 1
        self._counted = True
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(guard.limits.header_timeout, self._too_slow)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._timer is not None:
            seen = self._tail + data
            if HEAD_END in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-(len(HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self._counted:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self._guard.open -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._counted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._counted:
            self._inner.resume_writing()

    def _too_slow(self) -> None:
        self._timer = None
        self._guard.expired += 1
        if self._transport is not None:
            self._transport.close()


async def listen(
    runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext, limits: Limits
) -> tuple[asyncio.Server, Guard]:
    """Serve ``runner``'s app on ``host:port`` over TLS behind the guard."""
    assert runner.server is not None, "the runner is not set up"
    guard = Guard(runner.server, limits)
    server = await asyncio.get_running_loop().create_server(
        guard, host, port, ssl=context, ssl_handshake_timeout=limits.handshake_timeout
    )
    return server, guard


__all__ = ["Guard", "Limits", "listen"]
