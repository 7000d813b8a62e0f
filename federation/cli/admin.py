"""``fedctl admin credential issue|list|revoke``: named admin credentials.

The registry writes one admin credential (``admin/admin``) into each
replica's data dir.  Give every person or pipeline its own instead: it is
issued under the issuing root, audited like every write, listed with its
expiry, and revoked at once on every replica when it is no longer wanted."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agents.client import RegistryClient
from federation.cli.common import admin_command, age, confirm_removal, emit, until
from federation.trust import ca as certs


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


async def issue(client: RegistryClient, args: argparse.Namespace) -> int:
    key = certs.new_key()
    issued = await client.issue_admin(args.name, certs.make_csr(key, f"admin/{args.name}"))
    out: Path = args.out
    _write(out / "tls.crt", (issued["certificate"] + issued.get("chain", "")).encode())
    _write(out / "tls.key", certs.plain_key_pem(key))
    _write(out / "ca.crt", issued["caBundle"].encode())
    config = {
        "registry": ",".join(client.urls),
        "ca": str((out / "ca.crt").resolve()),
        "cert": str((out / "tls.crt").resolve()),
        "key": str((out / "tls.key").resolve()),
    }
    _write(out / "admin.json", json.dumps(config, indent=2).encode() + b"\n")
    until_day = time.strftime("%Y-%m-%d", time.gmtime(issued["notAfter"]))
    sys.stdout.write(
        f"issued admin/{args.name} (until {until_day})\n"
        f"  export FEDERATION_CONFIG={(out / 'admin.json').resolve()}\n"
    )
    return 0


async def listing(client: RegistryClient, args: argparse.Namespace) -> int:
    items = await client.admins()
    now = time.time()
    columns: list[tuple[str, Any]] = [
        ("NAME", lambda a: a["name"]),
        ("ISSUED", lambda a: age(a["createdAt"], now) + " ago"),
        ("CERT EXPIRES", lambda a: until(a.get("certNotAfter"), now)),
    ]
    emit(items, args.output, columns)
    return 0


async def revoke(client: RegistryClient, args: argparse.Namespace) -> int:
    if not args.yes:
        confirm_removal(
            "admin credential", args.name, "Every copy of it is refused at once, everywhere."
        )
    await client.remove_admin(args.name)
    sys.stdout.write(f"admin/{args.name} revoked on every replica\n")
    return 0


def add_commands(commands: Any) -> None:
    admin = commands.add_parser("admin", help="admin credentials")
    nouns = admin.add_subparsers(dest="admin_noun", metavar="NOUN", required=True)
    credential = nouns.add_parser("credential", help="named admin credentials")
    verbs = credential.add_subparsers(dest="admin_verb", metavar="VERB", required=True)
    issuing = verbs.add_parser("issue", help="issue a named admin credential into a directory")
    issuing.add_argument("--name", required=True, help="whose (a DNS label)")
    issuing.add_argument("--out", required=True, type=Path, help="directory for it (0700)")
    issuing.set_defaults(handler=admin_command(issue))
    listed = verbs.add_parser("list", help="the named admin credentials")
    listed.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    listed.set_defaults(handler=admin_command(listing))
    revoking = verbs.add_parser("revoke", help="revoke one, at once, on every replica")
    revoking.add_argument("name")
    revoking.add_argument("--yes", "-y", action="store_true", help="do not ask")
    revoking.set_defaults(handler=admin_command(revoke))


__all__ = ["add_commands"]
