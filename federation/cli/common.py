"""What every fedctl command group shares: the one-line error
(``UsageError``), output (``emit``, ages), the ``-o`` flag, confirmation,
and the admin client, which reads the credential file ``registry serve``
writes and follows root rotations with it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from cryptography import x509

from agents.client import Credentials, RegistryClient, RegistryError
from federation.model import ValidationError
from federation.shared import logs
from federation.shared.clock import Backoff
from federation.shared.tasks import stop_tasks

KEY_ENV = "FEDERATION_ENCRYPTION_KEY"
CONFIG_ENV = "FEDERATION_CONFIG"


class CommandError(Exception):
    """A failure worth one line to the user (a long-running command that
    cannot go on)."""


class UsageError(ValueError):
    """A flag or a config file is wrong; one line for the user."""


# -- output -------------------------------------------------------------------


REGISTRY_HELP = "registry URL, or the replicas' URLs comma-separated (tried in turn)"


def emit(data: Any, output: str, columns: Sequence[tuple[str, Callable[[Any], object]]]) -> None:
    """Print records as json, yaml or a table (``data`` is a list or one object)."""
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=True))
        return
    rows = data if isinstance(data, list) else [data]
    table = [[title for title, _ in columns]]
    table += [[str(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for row in table:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def age(then: float, now: float) -> str:
    """``then`` as kubectl prints an age: 45s, 3m12s, 5h3m, 2d4h (- if never)."""
    if then <= 0:
        return "-"
    seconds = max(int(now - then), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")


# -- registry serve -------------------------------------------------------------


# -- admin commands ----------------------------------------------------------


def _client(args: argparse.Namespace) -> RegistryClient:
    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        raise UsageError(
            f"no admin credential: pass --config or set {CONFIG_ENV} "
            "(registry serve writes DATA_DIR/admin.json)"
        )
    try:
        config = json.loads(Path(path).read_text())
    except OSError as err:
        raise UsageError(f"cannot read the admin credential {path}: {err.strerror}") from None
    except ValueError:
        raise UsageError(f"{path} is not an admin credential file") from None
    try:
        credentials = Credentials.from_files(
            Path(config["cert"]), Path(config["key"]), Path(config["ca"])
        )
        url = args.registry or config["registry"]
    except OSError as err:
        raise UsageError(f"cannot read {err.filename} (named in {path}): {err.strerror}") from None
    except (KeyError, TypeError):
        raise UsageError(f"{path} is not an admin credential file") from None
    files = AdminFiles(Path(config["cert"]), Path(config["key"]), Path(config["ca"]))
    try:
        return AdminClient(url, credentials, files)
    except RegistryError as err:
        raise UsageError(str(err)) from None


@dataclass(frozen=True)
class AdminFiles:
    """Where an admin credential lives, so a renewal is written back."""

    cert: Path
    key: Path
    ca: Path

    def save(self, credentials: Credentials) -> None:
        for path, data in (
            (self.cert, credentials.cert_pem),
            (self.key, credentials.key_pem),
            (self.ca, credentials.ca_pem),
        ):
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            tmp.replace(path)


class AdminClient(RegistryClient):
    """An admin's client, which knows where its credential is kept."""

    def __init__(self, url: str, credentials: Credentials, files: AdminFiles) -> None:
        super().__init__(url, credentials, retries=2, backoff=Backoff(0.2, 5.0), timeout=10)
        self.files = files


async def keep_current(client: RegistryClient) -> bool:
    """Follow a root rotation with this admin credential: trust the bundle
    in force, renew under the issuing root once it has changed, and write
    both back where the credential came from.  True if anything changed.
    (A copy not used between the switch and the old root's retirement is
    locked out: set ``--rotation-overlap`` on the registry to widen that.)"""
    credentials = client.credentials
    if credentials is None or not isinstance(client, AdminClient):
        return False
    ca = await client.ca()
    bundle = str(ca["bundle"]).encode()
    issuing = x509.load_pem_x509_certificate(str(ca["certificate"]).encode())
    changed = False
    if bundle != credentials.ca_pem:
        client.trust(bundle)
        changed = True
    if credentials.certificate.issuer != issuing.subject:
        await client.renew()
        changed = True
    if changed and client.credentials is not None:
        client.files.save(client.credentials)
    return changed


def admin_command(
    action: Callable[[RegistryClient, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def go() -> int:
            async with _client(args) as client:
                await keep_current(client)
                return await action(client, args)

        try:
            return asyncio.run(go())
        except RegistryError as err:
            raise UsageError(str(err)) from None
        except ValidationError as err:
            raise UsageError(str(err)) from None

    return run


def confirm_removal(
    role: str,
    name: str,
    consequence: str = "Its credential is revoked at once and everything it published is "
    "withdrawn from every cluster.",
) -> None:
    """Ask on a terminal; refuse without one (a script says --yes)."""
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to remove {role} {name} without confirmation: pass --yes")
    sys.stderr.write(f"Remove {role} {name}? {consequence} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise UsageError(f"{role} {name} was not removed")


def until(when: float | None, now: float) -> str:
    """How long until ``when``, as an age (``expired`` if past, - if none)."""
    if not when:
        return "-"
    if when <= now:
        return "expired"
    return "in " + age(now - (when - now), now)


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve_until_signal(
    work: Coroutine[Any, Any, None], health: web.Application, host: str, port: int
) -> None:
    """Run an agent and its health endpoints until SIGINT or SIGTERM."""
    runner = web.AppRunner(health)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = stop_on_signals()
    tasks = [asyncio.create_task(work), asyncio.create_task(stop.wait())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    try:
        await stop_tasks(*tasks)
    finally:
        await runner.cleanup()


def log_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level``: every long-running command has them."""
    parser.add_argument(
        "--log-format", choices=logs.FORMATS, default="text", help="text or json (default text)"
    )
    parser.add_argument("--log-level", choices=logs.LEVELS, default="info", help="default info")


def parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"{flag} {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)
