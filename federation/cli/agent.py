"""``fedctl agent cluster``, ``route explain`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from agents.client import Credentials, RegistryClient, RegistryError, Unauthorized, Unavailable
from agents.cluster import secret
from agents.cluster import site as kept_site
from agents.cluster.agent import ClusterAgent
from agents.cluster.exporter import Site
from agents.cluster.kube import Kube, KubeError
from agents.credentials import Keep, keep_in
from federation.cli.common import (
    REGISTRY_HELP,
    UsageError,
    admin_command,
    emit,
    log_flags,
    parse_listen,
    serve_until_signal,
)
from federation.model import (
    Cluster,
    Locality,
    NetworkMode,
    ServiceRef,
    TrafficPolicy,
    ValidationError,
)
from federation.shared.heap import freeze_startup
from federation.shared.loop import run as run_loop
from federation.shared.routing import choose, explained
from federation.shared.tasks import stop_tasks
from federation.trust.ca import spiffe_ids

log = logging.getLogger(__name__)


def add_commands(commands: Any) -> Any:
    """Add ``agent cluster`` and the others; returns the agent kinds' subparsers."""
    agent = commands.add_parser("agent", help="run an agent")
    kinds = agent.add_subparsers(dest="agent_kind", metavar="KIND", required=True)
    cluster = kinds.add_parser("cluster", help="the agent of one Kubernetes cluster")
    log_flags(cluster)
    cluster.add_argument("--kubeconfig", type=Path, help="default: the pod's service account")
    cluster.add_argument("--context", help="kubeconfig context (default: current)")
    cluster.add_argument("--registry", dest="agent_registry", required=True, help=REGISTRY_HELP)
    cluster.add_argument(
        "--join-token",
        default=os.environ.get("FEDERATION_JOIN_TOKEN") or None,
        help="join with this token (default $FEDERATION_JOIN_TOKEN); keeps the credential",
    )
    keep = cluster.add_mutually_exclusive_group()
    keep.add_argument("--cert-dir", type=Path, help="tls.crt, tls.key, ca.crt of an earlier join")
    keep.add_argument(
        "--cert-secret",
        metavar="NAMESPACE/NAME",
        help="keep the credential in this Secret of the cluster (joins if it is missing)",
    )
    cluster.add_argument(
        "--state-dir",
        type=Path,
        default=Path("federation-agent"),
        help="where a joined credential is kept (default ./federation-agent)",
    )
    cluster.add_argument("--network-mode", choices=["flat", "gateway"], default="flat")
    cluster.add_argument("--suffix", default="-global", help="imported Service name suffix")
    cluster.add_argument("--listen", default="127.0.0.1:9470", help="health and metrics")
    cluster.add_argument(
        "--exit-when-removed",
        action="store_true",
        help="exit (status 1, one line) once the registry says this cluster was removed; "
        "by default it keeps its imports and asks again every 30 s",
    )
    cluster.set_defaults(handler=_run_agent)  # fmt: skip

    route = commands.add_parser("route", help="how a cluster routes a service")
    verbs = route.add_subparsers(dest="route_command", metavar="VERB", required=True)
    explain = verbs.add_parser("explain", help="the levels, counts and why the choice stands")
    explain.add_argument("service", help="NAMESPACE/NAME")
    explain.add_argument("--from", dest="consumer", required=True, help="consumer cluster")
    explain.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    explain.set_defaults(handler=admin_command(_route_explain))

    demo = commands.add_parser("demo", help="a local federation of simulated clusters")
    demo.add_argument("--keep-running", action="store_true")
    log_flags(demo)
    demo.set_defaults(handler=_demo)
    return kinds


# -- the agent ------------------------------------------------------------------


def _run_agent(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    return run_loop(_agent(args, host, port))


async def _agent(args: argparse.Namespace, host: str, port: int) -> int:
    # A credential in a Secret needs the cluster first; else the join goes first.
    kube = await _kube(args) if args.cert_secret is not None else None
    try:
        credentials, keep = await _credentials(args, kube)
        kube = kube or await _kube(args)
    except BaseException:
        if kube is not None:
            await kube.close()
        raise
    name = _cluster_name(credentials)
    client = RegistryClient(args.agent_registry, credentials)
    try:
        record = await _cluster_record(client, kube, name)
        site = Site(name, record.locality, NetworkMode(args.network_mode))
        agent = ClusterAgent(kube, client, site, suffix=args.suffix, keep_credentials=keep)
        work = agent.run() if not args.exit_when_removed else _until_removed(agent.run(), client)
        freeze_startup()
        await serve_until_signal(work, agent.health_app(), host, port)
        if args.exit_when_removed and client.revoked is not None:
            raise UsageError(client.revoked)
        return 0
    finally:
        await client.close()
        await kube.close()


async def _cluster_record(client: RegistryClient, kube: Kube, name: str) -> Cluster:
    """The cluster's registration: from the registry (and kept in the
    cluster), or, while the registry cannot be reached, the kept copy."""
    try:
        record = await client.cluster(name)
    except RegistryError as err:
        if not isinstance(err, Unavailable):
            raise UsageError(f"cannot read cluster {name} from the registry: {err}") from None
        kept = await kept_site.saved(kube, name)
        if kept is None:
            raise UsageError(
                f"cannot read cluster {name} from the registry ({err}) and no copy is kept in "
                f"ConfigMap {kept_site.NAMESPACE}/{kept_site.NAME} yet"
            ) from None
        log.warning("the registry is unreachable (%s): starting from the kept record", err)
        return kept
    await kept_site.keep(kube, record)
    return record


async def _until_removed(work: Coroutine[Any, Any, None], client: RegistryClient) -> None:
    """Run ``work`` until the registry says this member was removed."""
    task = asyncio.create_task(work)
    try:
        while not task.done() and client.revoked is None:
            await asyncio.wait({task}, timeout=1.0)
    finally:
        await stop_tasks(task)


async def _kube(args: argparse.Namespace) -> Kube:
    try:
        if args.kubeconfig is None:
            return Kube.in_cluster()
        return await Kube.from_kubeconfig(args.kubeconfig, args.context)
    except KubeError as err:
        raise UsageError(str(err)) from None


async def _credentials(args: argparse.Namespace, kube: Kube | None) -> tuple[Credentials, Keep]:
    """The agent's credential and where renewals go: a directory given,
    a Secret of the cluster (joining first if it is not there yet), or
    the state directory after a join."""
    if args.cert_dir is not None:
        try:
            return Credentials.load(args.cert_dir), keep_in(args.cert_dir)
        except OSError as err:
            raise UsageError(f"cannot read the credential in {args.cert_dir}: {err}") from None
    if args.cert_secret is not None:
        assert kube is not None
        try:
            namespace, name = secret.parse_ref(args.cert_secret)
            keep = secret.keep_in_secret(kube, namespace, name)
            found = await secret.load(kube, namespace, name)
        except (ValueError, KubeError) as err:
            raise UsageError(f"--cert-secret: {err}") from None
        if found is not None:
            return found, keep
        where = f"Secret {args.cert_secret}"
    else:
        keep = keep_in(args.state_dir / "certs")
        where = f"{args.state_dir / 'certs'} (use --cert-dir next time)"
    if args.join_token is None:
        raise UsageError("no credential yet: give --join-token (or $FEDERATION_JOIN_TOKEN)")
    try:
        credentials, _ = await RegistryClient.join(args.agent_registry, args.join_token)
        if args.cert_secret is not None:
            assert kube is not None
            await secret.write(kube, namespace, name, credentials)
        else:
            await keep(credentials)
    except RegistryError as err:
        refused = isinstance(err, Unauthorized) and err.reason == Unauthorized.REFUSED
        if args.cert_secret is not None and refused:  # another replica joined first?
            assert kube is not None
            found = await secret.load(kube, namespace, name)
            if found is not None:
                return found, keep
        raise UsageError(str(err)) from None
    except KubeError as err:
        raise UsageError(str(err)) from None
    print(f"joined; credential kept in {where}", flush=True)
    return credentials, keep


def _cluster_name(credentials: Credentials) -> str:
    for uri in spiffe_ids(credentials.certificate):
        parts = uri.split("/")
        if len(parts) >= 2 and parts[-2] == "cluster":
            return parts[-1]
    raise UsageError("the credential is not a cluster agent's (no .../federation/cluster/NAME)")


# -- policy and route -------------------------------------------------------------


async def _route_explain(client: RegistryClient, args: argparse.Namespace) -> int:
    try:
        service = ServiceRef.parse(args.service)
    except ValidationError as err:
        raise UsageError(str(err)) from None
    record = await client.cluster(args.consumer)
    sets = await client.endpoint_sets(service)
    if not sets:
        raise UsageError(f"no cluster or VM exports {service}")
    policies = await client.policies()
    policy = next(
        (TrafficPolicy.from_wire(p) for p in policies if p["service"] == service.to_wire()), None
    )
    consumer = Locality(
        region=record.locality.region, zone=record.locality.zone, cluster=record.name
    )
    choice = choose(sets, consumer, policy, now=0.0)
    explanation = explained(choice)
    levels = explanation["levels"]
    if args.output != "table":  # plain data: numbers and booleans, no glyphs
        emit(explanation, args.output, [])
        return 0
    emit(
        levels,
        "table",
        [
            ("PRIORITY", lambda lv: lv["priority"]),
            ("LEVEL", lambda lv: lv["level"]),
            ("SOURCES", lambda lv: ",".join(lv["sources"])),
            ("HEALTHY", lambda lv: f"{lv['healthy']}/{lv['endpoints']}"),
            ("ELIGIBLE", lambda lv: "yes" if lv["eligible"] else "no"),
            ("CHOSEN", lambda lv: "<-" if lv["chosen"] else ""),
        ],
    )
    sys.stdout.write(f"\n{service} from {args.consumer}: {choice.reason}\n")
    sys.stdout.write("(computed now, as a fresh consumer: an agent in a hold-down may differ)\n")
    return 0


# -- demo -------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from federation.sim.demo import run_demo

    # The demo speaks through its tables; only warnings and worse are logged.
    logging.getLogger().setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(sys.stdout, keep_running=args.keep_running))
    return 0


__all__ = ["add_commands"]
