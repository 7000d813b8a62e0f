"""``fedctl registry serve`` and the admin commands that talk to a registry:
``cluster``, ``vm``, ``services``, ``status``.

Admin commands read the admin credential file that ``registry serve`` writes
(``<data-dir>/admin.json``), named by ``--config`` or ``$FEDERATION_CONFIG``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.client import MemberPlural, RegistryClient
from federation.cli.common import (
    CONFIG_ENV,
    KEY_ENV,
    REGISTRY_HELP,
    CommandError,
    UsageError,
    admin_command,
    age,
    confirm_removal,
    emit,
    log_flags,
    output_flag,
    parse_listen,
    until,
)
from federation.model import Cluster, EndpointPort, Locality, NetworkMode, Workload
from federation.shared.loop import run as run_loop
from federation.shared.tasks import cancel_and_wait


def _passphrase(args: argparse.Namespace) -> bytes | None:
    if args.encryption_key_file:
        try:
            key = Path(args.encryption_key_file).read_bytes().strip()
        except OSError as err:
            raise UsageError(f"cannot read --encryption-key-file: {err.strerror}") from None
        if not key:
            raise UsageError(f"--encryption-key-file {args.encryption_key_file} is empty")
        return key
    env = os.environ.get(KEY_ENV, "").strip()
    return env.encode() if env else None


def _serve(args: argparse.Namespace) -> int:
    from federation.api.http import Settings
    from federation.api.listener import Limits
    from federation.api.server import RegistryServer
    from federation.registry import Registry
    from federation.registry import RegistryError as DomainError
    from federation.shared.heap import freeze_startup
    from federation.store import StoreError, open_store
    from federation.trust.identity import check_trust_domain

    host, port = parse_listen(args.listen)
    data_dir = Path(args.data_dir)
    store_url = args.store or f"sqlite:///{(data_dir / 'registry.db').resolve()}"
    check_trust_domain(args.trust_domain)

    async def run() -> int:
        passphrase = _passphrase(args)
        store = await open_store(store_url)
        registry = Registry(
            store,
            trust_domain=args.trust_domain,
            passphrase=passphrase,
            heartbeat_ttl=args.heartbeat_ttl,
            intermediate_lifetime=dt.timedelta(days=args.intermediate_lifetime_days),
            rotation_overlap=args.rotation_overlap,
            replica=args.replica or None,
            leader_ttl=args.leader_ttl,
        )
        server = RegistryServer(
            registry,
            data_dir,
            host=host,
            port=port,
            hostnames=tuple(args.hostname),
            passphrase=passphrase or b"",
            settings=Settings(
                bookmark_interval=args.bookmark_interval,
                woken_streams=os.environ.get(WOKEN_STREAMS_ENV) == "1",
            ),
            limits=Limits(
                max_connections=args.max_connections,
                header_timeout=args.header_timeout,
                handshake_timeout=args.header_timeout,
                idle_timeout=args.idle_timeout,
            ),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await server.start()
            freeze_startup()
            sys.stdout.write(
                f"registry serving {server.url} (store {store_url.split('?')[0]})\n"
                f"mesh root sha256 {registry.ca.fingerprint}"
                f"{' (created now)' if server.created_root else ''}\n"
                f"admin credential {server.admin_config}\n"
                f"  export {CONFIG_ENV}={server.admin_config}\n"
            )
            sys.stdout.flush()
            crash = asyncio.ensure_future(server.crashed())
            waiting = asyncio.ensure_future(stop.wait())
            await asyncio.wait({crash, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if crash.done():
                await cancel_and_wait(waiting)
                raise CommandError(f"{crash.result()}; the replica stops")
            await cancel_and_wait(crash)
        finally:
            await server.stop()
            await store.close()
        return 0

    try:
        return run_loop(run())
    except (DomainError, StoreError) as err:
        raise UsageError(str(err)) from None


# A diagnostic (docs/operations.md): every watch stream writes its own lines.
WOKEN_STREAMS_ENV = "FEDERATION_WOKEN_STREAMS"


# -- admin commands ----------------------------------------------------------


def _locality(args: argparse.Namespace, cluster: str = "") -> Locality:
    return Locality(region=args.region, zone=args.zone[0], cluster=cluster, network=args.network)


async def _cluster_add(client: RegistryClient, args: argparse.Namespace) -> int:
    record = Cluster(
        name=args.name,
        locality=_locality(args, args.name),
        network_mode=NetworkMode(args.network_mode),
        zones=tuple(args.zone),
    )
    answer = await client.register(record, token_ttl=args.token_ttl)
    return _print_token(answer, args)


def _ports(specs: Sequence[str]) -> tuple[EndpointPort, ...]:
    ports = []
    for spec in specs:
        name, _, number = spec.rpartition(":")
        if not number.isdigit():
            raise UsageError(f"--port {spec!r} is not [NAME:]PORT")
        ports.append(EndpointPort(name=name, port=int(number)))
    return tuple(ports)


async def _vm_add(client: RegistryClient, args: argparse.Namespace) -> int:
    record = Workload(
        name=args.name,
        namespace=args.namespace,
        service_account=args.service_account,
        address=args.address,
        locality=_locality(args),
        ports=_ports(args.port),
        service=args.service,
    )
    answer = await client.register(record, token_ttl=args.token_ttl)
    return _print_token(answer, args)


def _print_token(answer: dict[str, Any], args: argparse.Namespace) -> int:
    if args.output in ("json", "yaml"):
        emit(answer, args.output, [])
    else:
        sys.stdout.write(
            f"{answer.get('record', {}).get('name', args.name)} registered; its join token "
            f"(single use, shown once):\n{answer['token']}\n"
        )
    return 0


def _member_commands(commands: Any, role: str) -> None:
    plural: MemberPlural = "clusters" if role == "cluster" else "vms"
    group = commands.add_parser(role, help=f"{role}s of the federation")
    sub = group.add_subparsers(dest=f"{role}_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help=f"register a {role} and mint its join token")
    add.add_argument("name")
    add.add_argument("--region", required=True)
    add.add_argument(
        "--zone",
        required=True,
        action="append",
        help="its zone; a cluster may give one --zone per zone its nodes are in "
        "(it may publish endpoints in those only)"
        if role == "cluster"
        else "its zone",
    )
    add.add_argument("--network", default="")
    add.add_argument("--token-ttl", type=float, default=3600.0, help="seconds (default 3600)")
    if role == "cluster":
        add.add_argument("--network-mode", choices=("flat", "gateway"), default="flat")
        add.set_defaults(handler=admin_command(_cluster_add))
    else:
        add.add_argument("--namespace", required=True)
        add.add_argument("--service-account", required=True)
        add.add_argument("--address", required=True, help="the VM's IP address")
        add.add_argument("--service", default="", help="the service of NAMESPACE it serves")
        add.add_argument("--port", action="append", default=[], help="[NAME:]PORT, repeatable")
        add.set_defaults(handler=admin_command(_vm_add))
    output_flag(add)

    async def listing(client: RegistryClient, args: argparse.Namespace) -> int:
        items = await client.members(plural)
        columns: list[tuple[str, Callable[[Any], object]]] = [
            ("NAME", lambda r: r["name"]),
            ("REGION", lambda r: r["locality"]["region"]),
            ("ZONE", lambda r: r["locality"]["zone"]),
        ]
        if role == "cluster":
            columns.append(("MODE", lambda r: r["networkMode"]))
        else:
            columns += [
                ("NAMESPACE", lambda r: r["namespace"]),
                ("ADDRESS", lambda r: r["address"]),
            ]
        if args.output == "wide":  # and what `status` says of each
            status = (await client.status()).get("members", [])
            state = {m["name"]: m for m in status if m["kind"] == role}
            now = time.time()
            for item in items:
                item["status"] = state.get(item["name"], {})
            if role == "cluster":
                columns.append(("ZONES", lambda r: ",".join(r.get("zones", []))))
            columns += [
                ("JOINED", lambda r: "yes" if r["status"].get("joined") else "no"),
                ("ALIVE", lambda r: age(r["status"]["aliveSince"], now)
                 if r["status"].get("alive") else "no"),
                ("STALE SHARDS", lambda r: r["status"].get("staleShards", 0)),
                ("LAG", lambda r: lag(r["status"])),
                ("CERT EXPIRES", lambda r: until(r["status"].get("certNotAfter"), now)),
            ]  # fmt: skip
        emit(items, "table" if args.output == "wide" else args.output, columns)
        return 0

    ls = sub.add_parser("list", help=f"list {plural}")
    ls.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"), default="table")
    ls.set_defaults(handler=admin_command(listing))

    async def remove(client: RegistryClient, args: argparse.Namespace) -> int:
        if not args.yes:
            confirm_removal(role, args.name)
        await client.remove(plural, args.name)
        sys.stdout.write(
            f"{role} {args.name} removed: its credential is revoked, its endpoints withdrawn\n"
        )
        return 0

    rm = sub.add_parser("remove", help=f"remove a {role} and everything it published")
    rm.add_argument("name")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(handler=admin_command(remove))

    async def token(client: RegistryClient, args: argparse.Namespace) -> int:
        answer = await client.new_token(plural, args.name, args.token_ttl)
        return _print_token(answer, args)

    tk = sub.add_parser("token", help=f"mint another join token for a {role}")
    tk.add_argument("name")
    tk.add_argument("--token-ttl", type=float, default=3600.0)
    output_flag(tk)
    tk.set_defaults(handler=admin_command(token))


async def _services(client: RegistryClient, args: argparse.Namespace) -> int:
    items = await client.services()
    rows = [{"service": i["service"], **s} for i in items for s in i["sources"]]
    now = time.time()
    emit(
        rows if args.output == "table" else items,
        args.output,
        [
            ("SERVICE", lambda r: r["service"]),
            ("SOURCE", lambda r: r["source"]),
            ("CHANGED", lambda r: age(r.get("changedAt", 0.0), now)),
            ("HEALTHY", lambda r: f"{r['healthy']}/{r['endpoints']}"),
            ("SHARDS", lambda r: r["shards"]),
            ("STALE", lambda r: "stale" if r["stale"] else ""),
        ],
    )
    return 0


async def _status(client: RegistryClient, args: argparse.Namespace) -> int:
    status = await client.status()
    status["registry"] = client.url
    if args.output != "table":
        emit(status, args.output, [])
        return 0
    emit(
        status,
        "table",
        [
            ("REGISTRY", lambda r: r["registry"]),
            ("REVISION", lambda r: r["revision"]),
            ("CLUSTERS", lambda r: r["clusters"]),
            ("VMS", lambda r: r["vms"]),
            ("ENDPOINT SETS", lambda r: r["endpointSets"]),
            ("STALE", lambda r: ",".join(r["staleSources"]) or "-"),
            ("ROTATION", lambda r: r.get("rotation", {}).get("phase", "-")),
            ("LEADER", lambda r: (r.get("leader") or {}).get("replica", "-")),
        ],
    )
    members = status.get("members") or []
    if members:
        now = time.time()
        sys.stdout.write("\n")
        emit(
            members,
            "table",
            [
                ("MEMBER", lambda m: f"{m['kind']}/{m['name']}"),
                ("JOINED", lambda m: "yes" if m["joined"] else "no"),
                ("ALIVE", lambda m: f"yes, {age(m['aliveSince'], now)}" if m["alive"] else "no"),
                ("STALE SHARDS", lambda m: m["staleShards"]),
                ("LAG", lag),
                ("CERT EXPIRES", lambda m: until(m["certNotAfter"], now)),
            ],
        )
    return 0


def lag(member: dict[str, Any]) -> str:
    """``in sync``, or how many changes and seconds the member's agent is
    behind; ``-`` when its agent does not say (not alive, or too old)."""
    behind = member.get("changesBehind")
    if behind is None:
        return "-"
    if behind == 0:
        return "in sync"
    more = "+" if member.get("behindBuffer") else ""
    return f"{behind}{more} changes, {float(member.get('lagSeconds') or 0):.1f}s"


def add_commands(commands: Any) -> None:
    registry = commands.add_parser("registry", help="run the registry")
    sub = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="serve the registry API over TLS")
    log_flags(serve)
    serve.add_argument(
        "--store", help="sqlite:///FILE or etcd://H:P[,H:P] (default: DATA_DIR/registry.db)"
    )
    serve.add_argument(
        "--listen", default="127.0.0.1:8443", help="HOST:PORT (default 127.0.0.1:8443)"
    )
    serve.add_argument("--data-dir", required=True, help="serving certificate and admin credential")
    serve.add_argument("--encryption-key-file", help=f"key that encrypts CA keys (else ${KEY_ENV})")
    serve.add_argument("--trust-domain", default="cluster.local")
    serve.add_argument("--heartbeat-ttl", type=int, default=15, help="seconds (default 15)")
    serve.add_argument("--bookmark-interval", type=float, default=5.0)
    serve.add_argument(
        "--intermediate-lifetime-days", type=float, default=90.0, help="cluster CAs (default 90)"
    )
    serve.add_argument(
        "--rotation-overlap",
        type=float,
        default=0.0,
        help="least seconds both roots stay in force after the switch (e.g. the workload "
        "certificate lifetime, so workloads get new certificates first; default 0)",
    )
    serve.add_argument(
        "--hostname", action="append", default=[], help="extra name for the serving cert"
    )
    serve.add_argument(
        "--replica",
        default=os.environ.get("FEDERATION_REPLICA", ""),
        help="this replica's stable name, shown as leader (default $FEDERATION_REPLICA, "
        "else host, pid and a random suffix)",
    )
    serve.add_argument(
        "--max-connections", type=int, default=4096, help="open connections at most (4096)"
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a new connection has for its TLS handshake and its first request head (10)",
    )
    serve.add_argument(
        "--idle-timeout", type=float, default=60.0, help="idle keep-alive seconds (60)"
    )
    serve.add_argument(
        "--leader-ttl",
        type=int,
        default=10,
        help="seconds the leader's lease lives without renewal: the longest the singleton "
        "work (stale marking, rotation steps) waits after the leader dies (default 10)",
    )
    serve.set_defaults(handler=_serve)

    for role in ("cluster", "vm"):
        _member_commands(commands, role)
    services = commands.add_parser("services", help="exported services and their sources")
    output_flag(services)
    services.set_defaults(handler=admin_command(_services))
    status = commands.add_parser("status", help="the registry's state at a glance")
    output_flag(status)
    status.set_defaults(handler=admin_command(_status))


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"admin credential file (default ${CONFIG_ENV})")
    parser.add_argument("--registry", help=REGISTRY_HELP + " (default: the config's)")
