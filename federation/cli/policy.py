"""``fedctl policy apply|get|list|delete|diff``: traffic policies as
Kubernetes-style objects, so a GitOps job can reconcile a folder of them.

A policy file holds one or more YAML (or JSON) documents::

    apiVersion: federation.io/v1alpha1
    kind: TrafficPolicy
    metadata: {namespace: shop, name: cart}     # the service it governs
    spec:
      failover: [{region: eu}, {region: us}]
      minHealthy: 2
      failbackHoldDownSeconds: 30
      weights: {"cluster:east": 90, "cluster:west": 10}
      staleGraceSeconds: 300

Every document is validated before any is applied; an error names the
file, the document and the field path.  A policy for a service or cluster
the registry does not know yet is applied with a warning: GitOps may apply
it first."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.client import RegistryClient
from federation.cli.common import UsageError, admin_command, emit
from federation.model import ServiceRef, TrafficPolicy, ValidationError

API_VERSION = "federation.io/v1alpha1"
KIND = "TrafficPolicy"
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    where: str  # file and document number, for messages
    policy: TrafficPolicy


def to_object(policy: TrafficPolicy) -> dict[str, Any]:
    """A policy as the object ``get`` prints and ``apply`` reads."""
    spec = policy.to_wire()
    service = spec.pop("service")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"namespace": service["namespace"], "name": service["name"]},
        "spec": spec,
    }


def from_object(raw: object, where: str) -> TrafficPolicy:
    """A document as a policy; errors name ``where`` and the field path."""
    try:
        if not isinstance(raw, dict):
            raise ValidationError("", "expected a TrafficPolicy object")
        if "apiVersion" not in raw and "kind" not in raw:
            return TrafficPolicy.from_wire(raw)  # the API's own wire form
        unknown = sorted(set(raw) - {"apiVersion", "kind", "metadata", "spec"})
        if unknown:
            raise ValidationError(unknown[0], "unknown field")
        if raw.get("apiVersion") != API_VERSION:
            raise ValidationError("apiVersion", f"expected {API_VERSION}")
        if raw.get("kind") != KIND:
            raise ValidationError("kind", f"expected {KIND}")
        metadata = raw.get("metadata")
        if not isinstance(metadata, dict):
            raise ValidationError("metadata", "expected {namespace, name}")
        extra = sorted(set(metadata) - {"namespace", "name", "labels", "annotations"})
        if extra:
            raise ValidationError(f"metadata.{extra[0]}", "unknown field")
        spec = raw.get("spec", {})
        if not isinstance(spec, dict):
            raise ValidationError("spec", "expected an object")
        if "service" in spec:
            raise ValidationError("spec.service", "the service is metadata.namespace/name")
        service = {"namespace": metadata.get("namespace"), "name": metadata.get("name")}
        try:
            ServiceRef.from_wire(service)
        except ValidationError as err:
            raise err.within("metadata") from None
        try:
            return TrafficPolicy.from_wire({"service": service, **spec})
        except ValidationError as err:
            raise err.within("spec") from None
    except ValidationError as err:
        raise UsageError(f"{where}: {err}") from None


def documents(source: str) -> Iterator[Document]:
    """Every policy in a file, a directory's files (sorted), or stdin (-)."""
    if source == "-":
        yield from _parse(sys.stdin.read(), "stdin")
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise UsageError(f"{path} holds no .yaml, .yml or .json file")
    else:
        files = [path]
    for file in files:
        try:
            text = file.read_text()
        except OSError as err:
            raise UsageError(f"cannot read {file}: {err.strerror}") from None
        yield from _parse(text, str(file))


def _parse(text: str, name: str) -> Iterator[Document]:
    try:
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise UsageError(f"{name}: not YAML ({str(err).splitlines()[0]})") from None
    for number, raw in enumerate(loaded, start=1):
        where = name if len(loaded) == 1 else f"{name} (document {number})"
        yield Document(where, from_object(raw, where))


async def _warnings(client: RegistryClient, policy: TrafficPolicy) -> list[str]:
    """What an operator should know before relying on the policy."""
    said: list[str] = []
    services = await client.services()
    if not any(s["service"] == policy.service.to_wire() for s in services):
        said.append(f"no cluster or VM exports {policy.service} yet")
    clusters = {c["name"] for c in await client.members("clusters")}
    named = {f.cluster for f in policy.failover if f.cluster}
    named |= {w.split(":", 1)[1] for w in policy.weights if w.startswith("cluster:")}
    for missing in sorted(named - clusters):
        said.append(f"cluster {missing} is not registered")
    if policy.weights:
        said.append(
            "weights are computed by routing but kube-proxy spreads traffic evenly over the "
            "endpoints: no data plane here enforces them (docs/decisions.md, 18)"
        )
    return said


async def apply(client: RegistryClient, args: argparse.Namespace) -> int:
    chosen = list(documents(args.file))  # all valid before any is applied
    for document in chosen:
        for warning in await _warnings(client, document.policy):
            sys.stderr.write(f"warning: {document.policy.service}: {warning}\n")
        answer = await client.put_policy(document.policy)
        sys.stdout.write(
            f"trafficpolicy {document.policy.service} applied (revision {answer['revision']})\n"
        )
    return 0


async def _current(client: RegistryClient) -> dict[ServiceRef, TrafficPolicy]:
    items = await client.policies()
    policies = [TrafficPolicy.from_wire(item) for item in items]
    return {p.service: p for p in policies}


def _service(text: str) -> ServiceRef:
    try:
        return ServiceRef.parse(text)
    except ValidationError as err:
        raise UsageError(str(err)) from None


async def get(client: RegistryClient, args: argparse.Namespace) -> int:
    service = _service(args.service)
    policy = (await _current(client)).get(service)
    if policy is None:
        raise UsageError(f"no traffic policy for {service}")
    _print(to_object(policy), args.output)
    return 0


def _print(obj: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(obj, sort_keys=False))


async def listing(client: RegistryClient, args: argparse.Namespace) -> int:
    policies = sorted((await _current(client)).values(), key=lambda p: str(p.service))
    objects = [to_object(p) for p in policies]
    if args.output != "table":
        emit(objects, args.output, [])
        return 0
    emit(
        objects,
        "table",
        [
            ("NAMESPACE", lambda o: o["metadata"]["namespace"]),
            ("NAME", lambda o: o["metadata"]["name"]),
            ("FAILOVER", lambda o: _failover(o["spec"]) or "-"),
            ("MIN HEALTHY", lambda o: o["spec"]["minHealthy"]),
            ("WEIGHTS", lambda o: ",".join(f"{k}={v}" for k, v in o["spec"]["weights"].items())
             or "-"),
        ],
    )  # fmt: skip
    return 0


def _failover(spec: dict[str, Any]) -> str:
    steps = (
        "/".join(v for v in (s["region"], s["zone"], s["cluster"]) if v) for s in spec["failover"]
    )
    return " > ".join(steps)


async def delete(client: RegistryClient, args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.service):
        raise UsageError("policy delete takes NAMESPACE/NAME or -f FILE (one of them)")
    services = (
        [d.policy.service for d in documents(args.file)] if args.file else [_service(args.service)]
    )
    for service in services:
        await client.delete_policy(service)
        sys.stdout.write(f"trafficpolicy {service} deleted\n")
    return 0


async def diff(client: RegistryClient, args: argparse.Namespace) -> int:
    """What ``apply`` would change, as a unified diff; exit 1 if anything."""
    current = await _current(client)
    changed = False
    for document in documents(args.file):
        service = document.policy.service
        old = current.get(service)
        before = yaml.safe_dump(to_object(old), sort_keys=False) if old else ""
        after = yaml.safe_dump(to_object(document.policy), sort_keys=False)
        lines = list(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                f"registry/{service}",
                f"{document.where}",
            )
        )
        if lines:
            changed = True
            sys.stdout.writelines(lines)
    return 1 if changed else 0


def add_commands(commands: Any) -> None:
    policy = commands.add_parser("policy", help="traffic policies (TrafficPolicy objects)")
    verbs = policy.add_subparsers(dest="policy_command", metavar="VERB", required=True)
    source = "a file, a directory of .yaml/.yml/.json files, or - for stdin"
    applying = verbs.add_parser("apply", help="create or replace policies from files")
    applying.add_argument("-f", "--file", required=True, help=source)
    applying.set_defaults(handler=admin_command(apply))
    getting = verbs.add_parser("get", help="one policy as an object")
    getting.add_argument("service", help="NAMESPACE/NAME")
    getting.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    getting.set_defaults(handler=admin_command(get))
    listed = verbs.add_parser("list", help="every policy")
    listed.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    listed.set_defaults(handler=admin_command(listing))
    deleting = verbs.add_parser("delete", help="delete a policy, or those a file names")
    deleting.add_argument("service", nargs="?", help="NAMESPACE/NAME")
    deleting.add_argument("-f", "--file", help=source)
    deleting.set_defaults(handler=admin_command(delete))
    differing = verbs.add_parser("diff", help="what apply would change (exit 1 if anything)")
    differing.add_argument("-f", "--file", required=True, help=source)
    differing.set_defaults(handler=admin_command(diff))


__all__ = ["add_commands", "from_object", "to_object"]
