"""The emulator's object store: what etcd plus the apiserver's registry do.

One global resourceVersion counter, bumped by every write, as in a real
apiserver backed by etcd.  A bounded history of events serves watches from a
resourceVersion; older than the history is 410 Gone.  Metadata follows the
real rules: uid, creationTimestamp, generation (bumped when anything but
metadata and status changes), resourceVersion preconditions (409 on a stale
one), generateName, and deletion with finalizers (deletionTimestamp set,
object removed when the last finalizer goes).
"""

from __future__ import annotations

import asyncio
import copy
import random
import string
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.selectors import Selector

Obj = dict[str, Any]
HISTORY_LIMIT = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    # A CRD's: whether it declares the status subresource (None: built in).
    # With it, writes to the object keep the stored status and only
    # ``/status`` changes it; without it, ``/status`` is not served.
    status_subresource: bool | None = None
    # A CRD version's additionalPrinterColumns: (name, type, priority, jsonPath).
    printer_columns: tuple[tuple[str, str, int, str], ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    revision: int
    resource: str
    obj: Obj


@dataclass(eq=False)
class Subscription:
    resource: str
    namespace: str | None
    selector: Selector
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: WatchEvent) -> bool:
        if event.resource != self.resource:
            return False
        meta = event.obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.selector.matches(meta)


def assign_name(rt: ResourceType, obj: Obj) -> dict[str, Any]:
    """Give the object its name, generating one from generateName; returns
    its metadata.  Done before validation, so the final name is checked."""
    meta: dict[str, Any] = obj.setdefault("metadata", {})
    if not meta.get("name"):
        base = meta.get("generateName")
        if not base:
            raise KubeError.invalid(rt, "", "metadata.name", "name or generateName is required")
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        meta["name"] = base + suffix
    return meta


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    """All objects of one emulated cluster."""

    def __init__(self, history_limit: int = HISTORY_LIMIT) -> None:
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._revision = 1
        self._history: deque[WatchEvent] = deque(maxlen=history_limit)
        self._compacted = 1
        self._subscriptions: set[Subscription] = set()

    @property
    def revision(self) -> int:
        return self._revision

    # -- reads ----------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._objects.get((rt.key, namespace, name))
        if obj is None:
            raise KubeError.not_found(rt, name)
        return copy.deepcopy(obj)

    def exists(self, rt: ResourceType, namespace: str, name: str) -> bool:
        return (rt.key, namespace, name) in self._objects

    def list(
        self, rt: ResourceType, namespace: str | None, selector: Selector
    ) -> tuple[list[Obj], int]:
        items = [
            obj
            for (key, ns, _), obj in self._objects.items()
            if key == rt.key
            and (namespace is None or ns == namespace)
            and selector.matches(obj["metadata"])
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return [copy.deepcopy(o) for o in items], self._revision

    # -- writes ---------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Store a new object; ``dry_run`` answers what would be stored
        (no resourceVersion) and stores nothing."""
        meta = assign_name(rt, obj)
        name = meta["name"]
        if (rt.key, namespace, name) in self._objects:
            raise KubeError.already_exists(rt, name)
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if dry_run:
            meta.pop("resourceVersion", None)
            return copy.deepcopy(obj)
        return self._write(rt, namespace, obj, "ADDED")

    def update(
        self, rt: ResourceType, namespace: str, name: str, obj: Obj, *, dry_run: bool = False
    ) -> Obj:
        current = self._objects.get((rt.key, namespace, name))
        if current is None:
            raise KubeError.not_found(rt, name)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise KubeError.bad_request(
                f"the name of the object ({meta['name']}) does not match the URL ({name})"
            )
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise KubeError.conflict(rt, name)
        old_meta = current["metadata"]
        for immutable in ("uid", "creationTimestamp", "deletionTimestamp", "namespace"):
            if immutable in old_meta:
                meta[immutable] = old_meta[immutable]
        meta["name"] = name
        meta["generation"] = old_meta["generation"] + (1 if _spec(obj) != _spec(current) else 0)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if _without_rv(obj) == _without_rv(current):
            return copy.deepcopy(current)  # a no-op update writes nothing
        if dry_run:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            return copy.deepcopy(obj)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rt, namespace, name, obj)
        return self._write(rt, namespace, obj, "MODIFIED")

    def delete(self, rt: ResourceType, namespace: str, name: str, *, dry_run: bool = False) -> Obj:
        current = self._objects.get((rt.key, namespace, name))
        if current is None:
            raise KubeError.not_found(rt, name)
        if dry_run:
            return copy.deepcopy(current)
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(current)
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._write(rt, namespace, marked, "MODIFIED")
        return self._remove(rt, namespace, name, copy.deepcopy(current))

    def _write(self, rt: ResourceType, namespace: str, obj: Obj, kind: str) -> Obj:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        self._objects[(rt.key, namespace, obj["metadata"]["name"])] = obj
        self._publish(WatchEvent(kind, self._revision, rt.key, copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    def _remove(self, rt: ResourceType, namespace: str, name: str, final: Obj) -> Obj:
        del self._objects[(rt.key, namespace, name)]
        self._revision += 1
        final["metadata"]["resourceVersion"] = str(self._revision)
        self._publish(WatchEvent("DELETED", self._revision, rt.key, copy.deepcopy(final)))
        return final

    # -- watch ----------------------------------------------------------------

    def _publish(self, event: WatchEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].revision
        self._history.append(event)
        for sub in self._subscriptions:
            if sub.wants(event):
                sub.queue.put_nowait(event)

    def subscribe(
        self, rt: ResourceType, namespace: str | None, selector: Selector, since: int | None
    ) -> Subscription:
        """Subscribe, replaying history after ``since``; None replays the
        current objects as ADDED (resourceVersion unset or "0")."""
        sub = Subscription(rt.key, namespace, selector)
        if since is None:
            items, revision = self.list(rt, namespace, selector)
            for obj in items:
                sub.queue.put_nowait(WatchEvent("ADDED", revision, rt.key, obj))
        else:
            if since < self._compacted:
                raise KubeError.gone(since)
            for event in self._history:
                if event.revision > since and sub.wants(event):
                    sub.queue.put_nowait(event)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    @property
    def watchers(self) -> int:
        """Watches open now (kube-apiserver counts them as registered watchers)."""
        return len(self._subscriptions)

    def drop_watches(self) -> None:
        """Fault injection: end every watch stream now."""
        for sub in self._subscriptions:
            sub.queue.put_nowait(None)
        self._subscriptions.clear()

    def compact(self) -> None:
        """Fault injection: forget all history; older resourceVersions get 410."""
        self._history.clear()
        self._compacted = self._revision

    def check_fresh(self, revision: int) -> None:
        if revision < self._compacted:
            raise KubeError.gone(revision)


def _spec(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in {"metadata", "status", "apiVersion", "kind"}}


def _without_rv(obj: Obj) -> Obj:
    clean = copy.deepcopy(obj)
    clean["metadata"].pop("resourceVersion", None)
    return clean
