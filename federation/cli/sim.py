"""``fedctl sim ...``: run simulated clusters on their own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from federation.cli.common import UsageError, log_flags, parse_listen, stop_on_signals
from federation.shared.loop import run as run_loop
from federation.sim.cluster import SimCluster
from federation.sim.kube import thirdparty
from federation.sim.kube.resources import CRD


def add_commands(subparsers: Any) -> None:
    sim = subparsers.add_parser("sim", help="simulated clusters (no real Kubernetes)")
    commands = sim.add_subparsers(dest="sim_command", metavar="SIMCOMMAND", required=True)
    cluster = commands.add_parser("cluster", help="run one simulated cluster's API server")
    log_flags(cluster)
    cluster.add_argument("name")
    cluster.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default a free port)")
    cluster.add_argument(
        "--kubeconfig", required=True, type=Path, help="where to write its kubeconfig"
    )
    cluster.add_argument(
        "--index", type=int, default=1, help="1-250: the cluster owns 127.INDEX.0.0/16 (default 1)"
    )
    cluster.add_argument("--region", default="sim-region-1")
    cluster.add_argument("--zones", default="a", help="comma-separated zone names (default a)")
    cluster.add_argument(
        "--serve",
        default="",
        help="other projects' CRDs to serve, comma-separated: gateway-api (HTTPRoute), "
        "istio (ServiceEntry); an agent then hands weighted splits to them",
    )
    cluster.set_defaults(handler=run_cluster)


SERVABLE = {
    "gateway-api": "httproutes.gateway.networking.k8s.io",
    "istio": "serviceentries.networking.istio.io",
}


def run_cluster(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    if not 1 <= args.index <= 250:
        raise UsageError(f"--index {args.index} is outside 1-250")
    zones = [z for z in args.zones.split(",") if z]
    if not zones:
        raise UsageError("--zones names no zone")
    crds = []
    for name in (n for n in args.serve.split(",") if n):
        if name not in SERVABLE:
            raise UsageError(f"--serve {name}: not one of {', '.join(SERVABLE)}")
        try:
            crds.append(thirdparty.load(SERVABLE[name]))
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
    cluster = SimCluster(
        args.name, index=args.index, region=args.region, zones=zones, api_host=host, api_port=port
    )
    return run_loop(_serve(cluster, args.kubeconfig, crds))


async def _serve(cluster: SimCluster, kubeconfig: Path, crds: list[dict[str, Any]]) -> int:
    stop = stop_on_signals()
    async with cluster:
        for crd in crds:
            cluster.client.create(CRD, "", crd)
        cluster.write_kubeconfig(kubeconfig)
        name = cluster.name
        sys.stdout.write(
            f"SIMULATED cluster sim-{name} (an API emulator with a simulated kubelet,\n"
            f"EndpointSlice controller and kube-proxy; not a real Kubernetes cluster)\n"
            f"  api server  {cluster.url}\n  kubeconfig  {kubeconfig}\n"
            f"  dns         {cluster.dns.host}:{cluster.dns.port} (clusterset.local)\n"
            f"  addresses   127.{cluster.index}.0.0/16 (nodes, pods, service IPs)\n"
            + "".join(f"  serves      {c['metadata']['name']}\n" for c in crds)
            + f"  try: kubectl --kubeconfig {kubeconfig} get namespaces\n"
        )
        sys.stdout.flush()
        await stop.wait()
    return 0
