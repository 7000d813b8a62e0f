"""``fedctl dashboard``: the registry's dashboard on a loopback port, read
through the admin credential, as ``kubectl proxy`` and ``istioctl
dashboard`` do.  It opens nothing by itself; it prints the URL.

Only what the page reads is forwarded, and only ``GET``: the page, its
data, the watch stream, the status and the trust status.  Anyone who can
reach the loopback port reads what the admin credential reads, so it
listens on loopback addresses only."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

from agents.client import RegistryClient
from federation.cli.common import UsageError, admin_command

FORWARDED = ("/v1/dashboard", "/v1/watch", "/v1/status", "/v1/ca/status")
CLIENT_KEY = web.AppKey("client", RegistryClient)


def proxy_app(client: RegistryClient) -> web.Application:
    """The forwarding app, on its own (tests serve it too)."""
    app = web.Application()
    app[CLIENT_KEY] = client
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


async def _forward(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path != "/" and not any(path == p or path.startswith(p + "/") for p in FORWARDED):
        return web.json_response({"code": 404, "message": f"{path} is not forwarded"}, status=404)
    if request.method != "GET":
        return web.json_response(
            {"code": 405, "message": "the dashboard proxy forwards GET only"},
            status=405,
            headers={"Allow": "GET"},
        )
    client = request.app[CLIENT_KEY]
    target = request.path_qs
    try:
        async with client.get_raw(target) as answer:
            headers = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "cache-control", "content-security-policy")
            }
            response = web.StreamResponse(status=answer.status, headers=headers)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        message = f"cannot reach the registry at {client.url}: {err}"
        return web.json_response({"code": 502, "message": message}, status=502)


def _loopback(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--listen {text!r} is not HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"--listen {host}: the dashboard proxy listens on loopback only")
    return host, int(port)


async def _serve(client: RegistryClient, args: argparse.Namespace) -> int:
    host, port = _loopback(args.listen)
    runner = web.AppRunner(proxy_app(client))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    bound = runner.addresses[0]  # the port picked, for :0
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    sys.stdout.write(f"Dashboard of {client.url} at http://{shown}:{bound[1]}/ (Ctrl-C to stop)\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def add_commands(commands: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard", help="serve the registry's dashboard on a loopback port"
    )
    dashboard.add_argument(
        "--listen",
        default="127.0.0.1:9480",
        help="loopback HOST:PORT (default 127.0.0.1:9480; port 0 picks one)",
    )
    dashboard.set_defaults(handler=admin_command(_serve))


__all__ = ["FORWARDED", "add_commands", "proxy_app"]
