"""``fedctl sim ...``: run simulated clusters on their own."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from federation.sim.kube.app import SimKubeServer


class SimUsageError(ValueError):
    """A flag of ``fedctl sim`` is wrong."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SimUsageError(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def add_commands(subparsers: Any) -> None:
    sim = subparsers.add_parser("sim", help="simulated clusters (no real Kubernetes)")
    commands = sim.add_subparsers(dest="sim_command", metavar="SIMCOMMAND", required=True)
    cluster = commands.add_parser("cluster", help="run one simulated cluster's API server")
    cluster.add_argument("name")
    cluster.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default a free port)")
    cluster.add_argument(
        "--kubeconfig", required=True, type=Path, help="where to write its kubeconfig"
    )
    cluster.set_defaults(handler=run_cluster)


def run_cluster(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    return asyncio.run(_serve(args.name, host, port, args.kubeconfig))


async def _serve(name: str, host: str, port: int, kubeconfig: Path) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SimKubeServer(name, host=host, port=port) as server:
        server.write_kubeconfig(kubeconfig)
        sys.stdout.write(
            f"SIMULATED cluster sim-{name} (an API emulator, not a real Kubernetes cluster)\n"
            f"  api server  {server.url}\n  kubeconfig  {kubeconfig}\n"
            f"  try: kubectl --kubeconfig {kubeconfig} get namespaces\n"
        )
        sys.stdout.flush()
        await stop.wait()
    return 0
