"""``fedctl failover-test``: the failover scenario on simulated clusters
(no flags) or on real ones (``--kubeconfig`` and ``--cluster NAME=CONTEXT``).

On real clusters the registry and the cluster agents must already run (the
kind-configs scripts set them up), and this machine must reach the client
cluster's Service addresses (the scripts route the kind clusters' service
ranges to their nodes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from agents.cluster.kube import Kube, KubeError
from federation.cli.common import UsageError
from federation.sim.failover import Scenario
from federation.sim.kubelet import ECHO_IMAGE

DEFAULT_IMAGE = "federation:dev"


def add_command(commands: Any) -> None:
    test = commands.add_parser(
        "failover-test", help="measure a failover and failback (simulated or real clusters)"
    )
    test.add_argument("--kubeconfig", type=Path, help="real clusters: their kubeconfig")
    test.add_argument(
        "--cluster",
        dest="clusters",
        action="append",
        default=[],
        metavar="NAME[=CONTEXT]",
        help="a federated cluster and its context (default context kind-NAME); repeat",
    )
    test.add_argument("--client", help="the cluster whose pods go down (default: the first)")
    test.add_argument("--namespace", default="failover-test")
    test.add_argument("--image", help=f"echo image (default {DEFAULT_IMAGE}; simulated: its own)")
    test.add_argument("--replicas", type=int, default=2)
    test.add_argument("--hold-down", type=float, default=3.0, help="simulated: failback hold-down")
    test.add_argument("--settle", type=float, default=2.0, help="seconds traffic must stay put")
    test.add_argument("--timeout", type=float, default=120.0, help="per phase")
    test.add_argument("--report", type=Path, default=Path("failover-report.json"))
    test.add_argument("--keep", action="store_true", help="real clusters: leave the echo up")
    test.set_defaults(handler=_failover_test)


def _failover_test(args: argparse.Namespace) -> int:
    if args.replicas < 1 or args.settle <= 0 or args.timeout <= 0:
        raise UsageError("--replicas, --settle and --timeout must be positive")
    logging.getLogger().setLevel(logging.WARNING)  # the tables speak
    run = _real(args) if args.kubeconfig else _simulated(args)
    try:
        report = asyncio.run(run)
    except KubeError as err:
        raise UsageError(f"Kubernetes API: {err}") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nReport written to {args.report}.")
    if not report["passed"]:
        sys.stderr.write("fedctl: traffic did not settle in every phase (see the report)\n")
        return 1
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def clusters_of(args: argparse.Namespace) -> dict[str, str]:
    """--cluster NAME[=CONTEXT] flags -> {name: context}."""
    named: dict[str, str] = {}
    for flag in args.clusters:
        name, _, context = flag.partition("=")
        if not name or name in named:
            raise UsageError(f"--cluster {flag!r}: a name, once, then optionally =CONTEXT")
        named[name] = context or f"kind-{name}"
    if len(named) < 2:
        raise UsageError("give at least two --cluster NAME[=CONTEXT] with --kubeconfig")
    return named


async def _real(args: argparse.Namespace) -> dict[str, Any]:
    kubes: dict[str, Kube] = {}
    try:
        for name, context in clusters_of(args).items():
            kubes[name] = await Kube.from_kubeconfig(args.kubeconfig, context)
        scenario = _scenario(args, kubes, args.image or DEFAULT_IMAGE, "kubeconfig")
        try:
            return await scenario.run(_say)
        finally:
            if not args.keep:
                await scenario.cleanup()
    finally:
        for kube in kubes.values():
            await kube.close()


async def _simulated(args: argparse.Namespace) -> dict[str, Any]:
    from federation.model import ServiceRef, TrafficPolicy
    from federation.sim.demo import SPECS
    from federation.sim.world import World

    if args.clusters:
        raise UsageError("--cluster needs --kubeconfig (without it the clusters are simulated)")
    _say("SIMULATED clusters east1, east2 (us-east) and west (us-west), a registry on")
    _say("SQLite and the real cluster agents, all on this machine.")
    with tempfile.TemporaryDirectory(prefix="federation-failover-") as tmp:
        async with World(Path(tmp), SPECS, process_pods=True, lease_seconds=2.0) as world:
            policy = TrafficPolicy(
                service=ServiceRef(namespace=args.namespace, name="echo"),
                failback_hold_down_seconds=args.hold_down,
            )
            async with world.admin() as admin:
                await admin.put_policy(policy)
            kubes = {name: m.kube for name, m in world.members.items() if m.kube is not None}
            scenario = _scenario(args, kubes, args.image or ECHO_IMAGE, "simulated")
            return await scenario.run(_say)


def _scenario(args: argparse.Namespace, kubes: dict[str, Kube], image: str, mode: str) -> Scenario:
    return Scenario(
        kubes,
        client=args.client or next(iter(kubes)),
        image=image,
        namespace=args.namespace,
        replicas=args.replicas,
        settle=args.settle,
        timeout=args.timeout,
        mode=mode,
    )


__all__ = ["add_command", "clusters_of"]
