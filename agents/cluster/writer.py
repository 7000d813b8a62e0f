"""Writes the agent makes to its cluster for one imported service.

``Writer.apply`` creates or replaces the desired objects of one service and
deletes its other managed objects.  A write the apiserver refuses affects
only that service: a 422 that names endpoint addresses teaches the writer
those addresses (the service is materialized again without them), any
other refusal but 409 is one log line, a counter, and a ``Refused`` for the
work queue to retry with backoff.  An object of the same name that the
agent does not manage (a user's Service ``echo-west``, say) is never
overwritten: that is a refusal too.  A 409 means someone else wrote first:
the caller looks again.  ``differs`` and ``merged`` compare a desired body
with the live object and lay one over the other, keeping what the server
owns."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from agents.cluster import importer
from agents.cluster.exporter import managed
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    Conflict,
    Informer,
    Kind,
    Kube,
    KubeError,
    Obj,
    Unavailable,
    ensure_namespace,
)
from federation.model import ServiceRef
from federation.shared.logs import fields

log = logging.getLogger(__name__)

MAX_REFUSED = 10_000  # addresses remembered as refused by this apiserver
_REFUSED_ADDRESS = re.compile(
    r'addresses\[\d+\]: Invalid value: "([^"]+)": ([^(,\]]+(?:\([^)]*\))?)'
)


class Refused(Exception):
    """The apiserver refused a write for one service (4xx other than 409)."""


class Conflicted(Exception):
    """Someone else wrote the object first; reconcile the key again."""


@dataclass
class Writer:
    kube: Kube
    informers: dict[Kind, Informer]
    cluster: str
    refused_addresses: dict[str, str] = field(default_factory=dict)
    # What we last wrote per object: its resourceVersion and the very body
    # object, so an unchanged desired body is skipped without comparing.
    written: dict[tuple[str, str, str], tuple[object, Obj]] = field(default_factory=dict)
    on_refused: Callable[[Kind], None] = lambda kind: None  # the agent counts them

    async def apply(
        self,
        service: ServiceRef,
        desired: list[importer.Desired],
        owned: set[tuple[Kind, str]],
        keep: set[str],
    ) -> bool:
        """Create or update ``desired``; delete the service's other owned
        objects but those named in ``keep``.  False if the apiserver
        refused endpoint addresses (now in ``refused_addresses``): the
        caller materializes again without them."""
        namespace_known = False
        for item in desired:
            informer = self.informers[item.kind]
            current = informer.get(item.namespace, item.name)
            key = (item.kind.plural, item.namespace, item.name)
            last = self.written.get(key)
            version = None if current is None else current["metadata"].get("resourceVersion")
            if last is not None and last[1] is item.body and last[0] == version is not None:
                continue  # the body we wrote, and nobody wrote since
            if current is not None and not managed(current):
                self.refuse(service, item, "it exists and the federation agent does not manage it")
            if current is not None and not differs(current, item.body):
                self.written[key] = (current["metadata"].get("resourceVersion"), item.body)
                continue
            try:
                if current is None:
                    if not namespace_known:
                        await ensure_namespace(self.kube, item.namespace)
                        namespace_known = True
                    stored = await self.kube.create(item.kind, item.namespace, item.body)
                else:
                    body = merged(current, item.body)
                    stored = await self.kube.replace(item.kind, item.namespace, item.name, body)
                informer.store(stored)
                self.written[key] = (stored["metadata"].get("resourceVersion"), item.body)
            except Unavailable:
                raise
            except Conflict as err:
                raise Conflicted(str(err)) from err
            except KubeError as err:  # refused: this key's alone
                if item.kind == ENDPOINT_SLICES and self._learn(err):
                    return False
                self.refuse(service, item, err)
        wanted = {(d.kind, d.name) for d in desired}
        for kind, name in sorted(owned - wanted, key=lambda o: (o[0].plural, o[1])):
            if name not in keep:
                await self.delete(kind, service.namespace, name)
        return True

    def _learn(self, err: KubeError) -> bool:
        """Remember the addresses a 422 names; True if it named any new."""
        found = {a: why.strip() for a, why in _REFUSED_ADDRESS.findall(str(err))}
        new = {a: w for a, w in found.items() if a not in self.refused_addresses}
        if not new or len(self.refused_addresses) + len(new) > MAX_REFUSED:
            return False
        self.refused_addresses.update(new)
        log.warning(
            "the apiserver refuses endpoint addresses %s; leaving them out",
            ", ".join(sorted(new)),
            extra=fields(cluster=self.cluster),
        )
        return True

    def refuse(self, service: ServiceRef, item: importer.Desired, why: KubeError | str) -> NoReturn:
        """One log line, the counter, and ``Refused`` for this key alone:
        the apiserver's refusal, or the agent's own (``why`` a string)."""
        self.on_refused(item.kind)
        who = "the apiserver refused" if isinstance(why, KubeError) else "not writing"
        log.warning(
            "%s %s %s: %s",
            who,
            item.kind.plural,
            item.name,
            why,
            extra=fields(cluster=self.cluster, namespace=service.namespace, service=service.name),
        )
        refused = Refused(f"{item.kind.plural} {item.namespace}/{item.name}: {why}")
        if isinstance(why, KubeError):
            raise refused from why
        raise refused

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self.written.pop((kind.plural, namespace, name), None)
        if await self.kube.delete(kind, namespace, name):
            self.informers[kind].forget(namespace, name)


def differs(current: Obj, desired: Obj) -> bool:
    """True if ``current`` lacks what ``desired`` sets (server-added fields,
    such as a Service's clusterIP, are not differences)."""
    wanted = desired.get("metadata", {}).get("annotations")
    if wanted is not None and current.get("metadata", {}).get("annotations") != wanted:
        return True  # the agent owns its objects' annotations whole
    return not _contains(current, desired)


def _contains(current: Any, desired: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(current, dict):
            return False
        return all(
            (v is None and current.get(k) is None) or _contains(current.get(k), v)
            for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(_contains(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)


def merged(current: Obj, desired: Obj) -> Obj:
    """``desired`` over ``current``, keeping what the server owns
    (resourceVersion, uid, a Service's clusterIP)."""
    body = {**current, **{k: v for k, v in desired.items() if k != "metadata"}}
    body["metadata"] = {**current.get("metadata", {}), **desired["metadata"]}
    if "spec" in current and "spec" in desired:
        body["spec"] = {**current["spec"], **desired["spec"]}
    return body


__all__ = ["Conflicted", "Refused", "Writer", "differs", "merged"]
