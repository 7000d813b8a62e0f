"""``fedctl agent vm``: join once, then run the VM agent.

Started with the state dir of an earlier join, it needs no token while the
certificate there is valid.  Once it has expired, mint a new token
(``fedctl vm token NAME``) and start it with ``--join-token`` again.
Errors at start (a wrong token, the registry down) are one log line and a
retry with backoff, never a crash loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from agents.client import (
    Credentials,
    RegistryClient,
    RegistryError,
    Unauthorized,
    Unavailable,
)
from agents.vm import saved
from agents.vm.agent import Probe, VMAgent
from federation.cli.common import (
    REGISTRY_HELP,
    UsageError,
    log_flags,
    parse_listen,
    serve_until_signal,
    stop_on_signals,
)
from federation.model import ServiceRef, ValidationError, Workload
from federation.shared.clock import Backoff
from federation.shared.loop import run as run_loop
from federation.trust.ca import spiffe_ids

log = logging.getLogger("federation.agent.vm")


def add_command(kinds: Any) -> None:
    vm = kinds.add_parser("vm", help="the agent of one VM")
    log_flags(vm)
    vm.add_argument("--registry", dest="agent_registry", required=True, help=REGISTRY_HELP)
    vm.add_argument("--join-token", help="join with this token (not needed with a valid state dir)")
    vm.add_argument("--state-dir", type=Path, required=True, help="credentials, bundle, forwards")
    vm.add_argument("--probe", default="tcp", help="tcp, none, or an http:// URL (default tcp)")
    vm.add_argument("--probe-interval", type=float, default=1.0)
    vm.add_argument(
        "--forward",
        action="append",
        default=[],
        help="NS/NAME=HOST:PORT pins a service's local address (repeatable)",
    )
    vm.add_argument("--listen", default="127.0.0.1:9471", help="health and metrics")
    vm.add_argument(
        "--dns",
        metavar="HOST:PORT",
        help="answer <svc>.<ns>.svc.clusterset.local here (UDP and TCP) with the forwarders",
    )
    vm.set_defaults(handler=_run)


def _pinned(specs: list[str]) -> dict[ServiceRef, tuple[str, int]]:
    pinned = {}
    for spec in specs:
        service, _, target = spec.partition("=")
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--forward {spec!r} is not NS/NAME=HOST:PORT")
        try:
            pinned[ServiceRef.parse(service)] = (host, int(port))
        except ValidationError as err:
            raise UsageError(f"--forward {spec!r}: {err}") from None
    return pinned


def _run(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    pinned = _pinned(args.forward)
    return run_loop(_agent(args, host, port, pinned))


async def credentials_for(url: str, state_dir: Path, token: str | None) -> Credentials:
    """The kept credential while valid, else a join with ``token``."""
    kept = state_dir / "certs"
    if (kept / "tls.crt").exists():
        credentials = Credentials.load(kept)
        if credentials.certificate.not_valid_after_utc.timestamp() > time.time():
            return credentials
        if token is None:
            raise Unauthorized(
                f"the certificate in {kept} has expired; start again with a new --join-token "
                "(fedctl vm token NAME)",
                Unauthorized.EXPIRED,
            )
    if token is None:
        raise Unauthorized(
            f"no credential in {kept}: give --join-token", Unauthorized.NO_CREDENTIAL
        )
    credentials, _ = await RegistryClient.join(url, token)
    credentials.save(kept)
    return credentials


def _vm_name(credentials: Credentials) -> str:
    for uri in spiffe_ids(credentials.certificate):
        parts = uri.split("/")
        if len(parts) >= 2 and parts[-2] == "vm":
            return parts[-1]
    raise Unauthorized(
        "the credential is not a VM agent's (no .../federation/vm/NAME)",
        Unauthorized.NO_CREDENTIAL,
    )


async def start(
    url: str, state_dir: Path, token: str | None, stop: asyncio.Event
) -> tuple[RegistryClient, Workload] | None:
    """Join (or reuse the state dir) and read the VM's record, retrying
    with backoff; None if stopped first."""
    retry = Backoff(1.0, 60.0).retry()
    while not stop.is_set():
        client = None
        try:
            credentials = await credentials_for(url, state_dir, token)
            client = RegistryClient(url, credentials)
            name = _vm_name(credentials)
            try:
                record = await client.vm(name, retry=False)
            except RegistryError as err:
                kept = saved.load_record(state_dir)
                if not isinstance(err, Unavailable) or kept is None or kept.name != name:
                    raise
                log.warning("%s; starting from the record and view kept in %s", err, state_dir)
                return client, kept  # static stability: forward from what we had
            saved.save_record(state_dir, record)
            return client, record
        except (RegistryError, ValidationError, OSError) as err:
            if client is not None:
                await client.close()
            delay = retry.failed()
            log.warning("cannot start: %s; retrying in %.1fs", err, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None


async def _agent(
    args: argparse.Namespace, host: str, port: int, pinned: dict[ServiceRef, tuple[str, int]]
) -> int:
    started = await start(args.agent_registry, args.state_dir, args.join_token, stop_on_signals())
    if started is None:
        return 0
    client, record = started
    try:
        agent = VMAgent(
            client,
            record,
            args.state_dir,
            probe=Probe(args.probe),
            probe_interval=args.probe_interval,
            pinned=pinned,
            dns=parse_listen(args.dns) if args.dns else None,
        )
        print(
            f"vm {record.name}: endpoint of {record.namespace}/{record.service or '-'}; "
            f"forwards listed in {args.state_dir / 'hosts'}",
            flush=True,
        )
        await serve_until_signal(agent.run(), agent.health_app(), host, port)
        return 0
    finally:
        await client.close()
