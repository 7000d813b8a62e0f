"""The echo service the simulated clusters run as their "pods".

A minimal HTTP/1.1 server on a loopback address.  ``GET /healthz`` answers
200 while healthy and 503 otherwise (the simulated kubelet probes it); any
other request answers 200 with one JSON line naming who served it.  It runs
as an asyncio task inside the simulation, or as its own process
(``python -m federation.sim.echo --listen HOST:PORT --name POD --cluster C``)
so a demo can kill a real backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

MAX_HEADER_BYTES = 16 * 1024


class EchoServer:
    def __init__(self, host: str, port: int, *, pod: str, cluster: str) -> None:
        self.host, self.port = host, port
        self.identity = {"pod": pod, "cluster": cluster}
        self.healthy = True
        self.served = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEADER_BYTES:
                return
            path = head.split(b" ", 2)[1].decode("ascii", "replace") if b" " in head else "/"
            if path == "/healthz":
                status, body = (200, b"ok\n") if self.healthy else (503, b"unhealthy\n")
            else:
                self.served += 1
                status, body = 200, json.dumps(self.identity).encode() + b"\n"
            reason = "OK" if status == 200 else "Service Unavailable"
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def request(host: str, port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    """One HTTP GET to an echo server (directly or through a proxy)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError("no HTTP answer")
        return int(parts[1]), body

    return await asyncio.wait_for(go(), timeout)


async def _main(host: str, port: int, pod: str, cluster: str) -> None:
    server = EchoServer(host, port, pod=pod, cluster=cluster)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated echo backend")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--name", required=True)
    parser.add_argument("--cluster", required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(_main(host, int(port), args.name, args.cluster))


if __name__ == "__main__":
    main()
