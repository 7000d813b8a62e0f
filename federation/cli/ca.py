"""``fedctl ca``: the trust domain's root and the clusters' intermediates.

- ``ca status``: the rotation phase, the roots, who has not acknowledged;
- ``ca rotate [--wait]``: rotate to a new generated root;
- ``ca import --cert F --key F [--wait]``: rotate to the operator's root;
- ``ca intermediate CLUSTER``: for a cluster not yet running an agent,
  make the key here, get it signed, and write Istio's ``cacerts`` files
  (``--out DIR``) or the secret itself (``--kubeconfig``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from agents.client import Credentials, RegistryClient
from agents.cluster.kube import SECRETS, Kube, KubeError
from agents.cluster.trust import (
    CACERTS,
    ISTIO_NAMESPACE,
    cacerts_data,
    request_intermediate,
    write_cacerts,
)
from federation.cli.common import (
    AdminClient,
    UsageError,
    admin_command,
    emit,
    keep_current,
    output_flag,
)
from federation.trust import ca as certs


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show(status: dict[str, Any], output: str) -> None:
    if output != "table":
        emit(status, output, [])
        return
    sys.stdout.write(
        f"phase {status['phase']} since {_when(status['since'])}; "
        f"bundle version {status['version']}\n"
    )
    emit(
        status["roots"],
        "table",
        [
            ("GENERATION", lambda r: r["generation"]),
            ("SHA256", lambda r: r["sha256"][:16]),
            ("NOT AFTER", lambda r: _when(r["notAfter"])),
            ("IN BUNDLE", lambda r: "yes" if r["inBundle"] else "no"),
            ("ISSUING", lambda r: "yes" if r["issuing"] else ""),
        ],
    )
    if status["pending"]:
        sys.stdout.write(f"waiting for: {', '.join(status['pending'])}\n")


async def _status(client: RegistryClient, args: argparse.Namespace) -> int:
    _show(await client.ca_status(), args.output)
    return 0


async def _start(client: RegistryClient, args: argparse.Namespace, body: dict[str, str]) -> int:
    key = certs.new_key()  # the caller's credential under the new root comes back with it
    status = await client.rotate(body, certs.make_csr(key))
    issued = status.pop("credential", None)
    if issued is not None and isinstance(client, AdminClient):
        renewed = Credentials(
            (issued["certificate"] + issued.get("chain", "")).encode(),
            certs.plain_key_pem(key),
            issued["caBundle"].encode(),
        )
        client.use(renewed)
        client.files.save(renewed)
    deadline = time.monotonic() + args.timeout
    while args.wait and status["phase"] != "Idle":
        if time.monotonic() > deadline:
            raise UsageError(
                f"the rotation is still in phase {status['phase']} after {args.timeout:.0f}s; "
                f"waiting for: {', '.join(status['pending']) or 'nothing'}"
            )
        await asyncio.sleep(0.5)
        await keep_current(client)  # so this credential outlives the old root
        status = await client.ca_status()
    if args.wait:
        await keep_current(client)  # the settled bundle, too
    _show(status, args.output)
    return 0


async def _rotate(client: RegistryClient, args: argparse.Namespace) -> int:
    return await _start(client, args, {})


async def _import(client: RegistryClient, args: argparse.Namespace) -> int:
    try:
        body = {"certificate": args.cert.read_text(), "key": args.key.read_text()}
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the root or its key: {err}") from None
    return await _start(client, args, body)


async def _intermediate(client: RegistryClient, args: argparse.Namespace) -> int:
    if (args.out is None) == (args.kubeconfig is None):
        raise UsageError("give --out DIR or --kubeconfig (and optionally --context)")
    lifetime = None if args.lifetime_days is None else args.lifetime_days * 86400
    cert, key, chain = await request_intermediate(client, args.cluster, lifetime)
    ca = await client.ca()
    data = cacerts_data(cert, key, chain, ca["bundle"].encode(), ca["certificate"].encode())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, value in data.items():
            path = args.out / name
            path.write_bytes(base64.b64decode(value))
            path.chmod(0o600)
        sys.stdout.write(f"wrote {', '.join(sorted(data))} to {args.out}\n")
        return 0
    try:
        kube = await Kube.from_kubeconfig(args.kubeconfig, args.context)
        try:
            existing = await kube.get(SECRETS, ISTIO_NAMESPACE, CACERTS)
            await write_cacerts(kube, data, existing)
        finally:
            await kube.close()
    except KubeError as err:
        raise UsageError(f"cannot write {ISTIO_NAMESPACE}/{CACERTS}: {err}") from None
    sys.stdout.write(f"wrote secret {ISTIO_NAMESPACE}/{CACERTS}\n")
    return 0


def add_commands(commands: Any) -> None:
    ca = commands.add_parser("ca", help="the mesh root CA and its rotation")
    sub = ca.add_subparsers(dest="ca_command", metavar="ACTION", required=True)

    status = sub.add_parser("status", help="rotation phase, roots, who has not acknowledged")
    output_flag(status)
    status.set_defaults(handler=admin_command(_status))

    for name, handler, text in (
        ("rotate", _rotate, "rotate to a new generated root"),
        ("import", _import, "rotate to your own root (a self-signed EC CA)"),
    ):
        verb = sub.add_parser(name, help=text)
        if name == "import":
            verb.add_argument("--cert", required=True, type=Path, help="the root (PEM)")
            verb.add_argument("--key", required=True, type=Path, help="its unencrypted key (PEM)")
        verb.add_argument("--wait", action="store_true", help="until the rotation is over")
        verb.add_argument("--timeout", type=float, default=600.0, help="seconds (with --wait)")
        output_flag(verb)
        verb.set_defaults(handler=admin_command(handler))

    inter = sub.add_parser(
        "intermediate", help="a cluster's Istio CA (cacerts) for a cluster without an agent"
    )
    inter.add_argument("cluster")
    inter.add_argument("--out", type=Path, help="write the four cacerts files here")
    inter.add_argument("--kubeconfig", type=Path, help="write the cacerts secret to this cluster")
    inter.add_argument("--context")
    inter.add_argument("--lifetime-days", type=float)
    inter.set_defaults(handler=admin_command(_intermediate))
