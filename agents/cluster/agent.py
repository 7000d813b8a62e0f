"""The cluster agent: one Deployment-shaped process per cluster.

It keeps informers on Services, EndpointSlices, Nodes, ServiceExports and
ServiceImports, follows the registry's watch, and, while it holds the
leader Lease, reconciles per key from a work queue (``queue``): an
``ExportKey`` publishes one service (``exporter``), an ``ImportKey``
materializes one imported service (``importer`` with
``federation.shared.routing``, written by ``writer``).  An informer event or a
registry event for service X queues X's keys alone; a refused write or a
failed publish retries that key with its own backoff while the others go
on.  Time-driven changes (a hold-down ending) are scheduled per key, not
polled.  Static stability:
with the registry unreachable it keeps its last view (or, after a restart,
the view saved on the ServiceImports) and keeps routing from it with
fresh local endpoints; it deletes imports only when the registry says a
service is gone."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from agents.client import (
    REVOKED_RETRY,
    Event,
    RegistryClient,
    RegistryError,
    Relist,
    Revoked,
    Synced,
)
from agents.cluster import importer
from agents.cluster.crds import ensure_crds
from agents.cluster.exporter import (
    SERVICE_NAME,
    Exporter,
    Site,
    local_set,
    managed,
)
from agents.cluster.exports import Exports
from agents.cluster.imports import Imports
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    HTTP_ROUTES,
    NODES,
    SERVICE_ENTRIES,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SERVICES,
    WORKLOAD_ENTRIES,
    Informer,
    Kind,
    Kube,
    KubeError,
    Obj,
)
from agents.cluster.leader import LeaderElector
from agents.cluster.metrics import AgentMetrics
from agents.cluster.queue import WorkQueue
from agents.cluster.trust import ClusterTrust
from agents.cluster.writer import Conflicted, Refused, Writer
from agents.credentials import CredentialKeeper, Keep
from agents.progress import Progress
from agents.telemetry import health_app
from agents.view import View, follow, keep_alive
from federation.model import ServiceRef
from federation.shared.clock import Clock, SystemClock
from federation.shared.logs import fields
from federation.shared.routing import Choice

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportKey:
    """This cluster's export of one service (cluster -> registry)."""

    service: ServiceRef


@dataclass(frozen=True, slots=True)
class ImportKey:
    """One imported service's objects in this cluster (registry -> cluster)."""

    service: ServiceRef


Key = ExportKey | ImportKey
WORKERS = 4
# Kinds the agent writes only where their CRDs are served, and what for.
OPTIONAL_KINDS = {
    WORKLOAD_ENTRIES: "VM endpoints also get Istio WorkloadEntries",
    SERVICE_ENTRIES: "weighted splits get an Istio ServiceEntry",
    HTTP_ROUTES: "weighted splits get Gateway API HTTPRoutes and per-source Services",
}
CONFLICT_DELAY = 0.05


class ClusterAgent:
    def __init__(
        self,
        kube: Kube,
        registry: RegistryClient,
        site: Site,
        *,
        suffix: str = "-global",
        window: float = 0.1,
        clock: Clock | None = None,
        lease_seconds: float = 15.0,
        identity: str | None = None,
        wall: Callable[[], float] = time.time,
        keep_credentials: Keep | None = None,
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.site = site
        self.consumer = replace(site.locality, cluster=site.cluster)  # who routing serves
        self.suffix = suffix
        self.clock = clock or SystemClock()
        self.wall = wall
        self.metrics = AgentMetrics()
        self.view = View()
        self.exporter = Exporter(site, window=window, wall=wall)
        self.queue: WorkQueue[Key] = WorkQueue(self.clock)
        self.progress: Progress[ImportKey] = Progress()
        self.elector = LeaderElector(
            kube,
            identity or f"{socket.gethostname()}-{os.getpid()}",
            duration=lease_seconds,
            clock=self.clock,
        )
        self.credentials = CredentialKeeper(registry, self.clock, keep_credentials)
        self.trust = ClusterTrust(
            kube, registry, site.cluster, self.credentials, self.clock, lambda: self.elector.leading
        )
        indexed = {
            SERVICES: (importer.SERVICE_LABEL,),
            ENDPOINT_SLICES: (SERVICE_NAME, importer.SERVICE_LABEL),
            SERVICE_IMPORTS: (importer.SERVICE_LABEL,),
            NODES: (),
            SERVICE_EXPORTS: (),
        }
        self.informers = {
            kind: Informer(kube, kind, self._kube_changed(kind), index_labels=labels)
            for kind, labels in indexed.items()
        }
        self.writer = Writer(
            kube,
            self.informers,
            site.cluster,
            on_refused=lambda kind: self.metrics.refused.labels(kind.plural).inc(),
        )
        self.exports = Exports(
            kube=kube,
            registry=registry,
            site=site,
            view=self.view,
            informers=self.informers,
            writer=self.writer,
            exporter=self.exporter,
            metrics=self.metrics,
            wall=wall,
        )
        self.imports = Imports(
            view=self.view,
            informers=self.informers,
            writer=self.writer,
            consumer=self.consumer,
            suffix=suffix,
            metrics=self.metrics,
            wall=wall,
        )

    @property
    def ready(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values()) and self.view.loaded

    # -- what changed -> which keys -----------------------------------------------

    def _kube_changed(self, kind: Kind) -> Callable[[Obj | None], None]:
        def changed(obj: Obj | None) -> None:
            if kind is NODES:  # addresses and zones of every export's endpoints
                self.exports.nodes_changed()
                self._enqueue_exports()
                return
            if obj is None:
                self._enqueue_all()
                return
            for key in self._keys_of(kind, obj):
                self.queue.add(key)

        return changed

    def _keys_of(self, kind: Kind, obj: Obj) -> list[Key]:
        meta = obj["metadata"]
        namespace, labels = meta.get("namespace", ""), meta.get("labels") or {}
        if managed(obj):
            owner = labels.get(importer.SERVICE_LABEL)
            if owner is not None:
                return [ImportKey(ServiceRef(namespace=namespace, name=owner))]
            gateway_for = labels.get("federation.io/gateway-for")
            if gateway_for is not None:
                return [ExportKey(ServiceRef(namespace=namespace, name=gateway_for))]
            return []
        name = labels.get(SERVICE_NAME) if kind is ENDPOINT_SLICES else meta["name"]
        if not name or kind is SERVICE_IMPORTS:
            return []
        service = ServiceRef(namespace=namespace, name=name)
        return [ExportKey(service), ImportKey(service)]

    def _exported(self) -> set[ServiceRef]:
        return {
            ServiceRef(namespace=o["metadata"]["namespace"], name=o["metadata"]["name"])
            for o in self.informers[SERVICE_EXPORTS].items()
        } | set(self.exporter.exported())

    def _enqueue_exports(self) -> None:
        for service in self._exported():
            self.queue.add(ExportKey(service))
            self.queue.add(ImportKey(service))  # its local part

    def _enqueue_all(self) -> None:
        self._enqueue_exports()
        for service in set(self.view.sets) | self._owned_services():
            self._import_dirty(ImportKey(service))

    def _owned_services(self) -> set[ServiceRef]:
        """Every service that has managed objects in this cluster."""
        owned: set[ServiceRef] = set()
        for kind in (SERVICE_IMPORTS, ENDPOINT_SLICES, SERVICES, *OPTIONAL_KINDS):
            if kind in self.informers:
                owned |= {
                    ServiceRef(namespace=ns, name=name)
                    for ns, name in self.informers[kind].label_values(importer.SERVICE_LABEL)
                }
        return owned

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await ensure_crds(self.kube)
        except KubeError as err:
            log.warning("cannot install the MCS CRDs (%s); assuming they are there", err)
        for kind, served_means in OPTIONAL_KINDS.items():
            try:
                if await self.kube.served(kind):
                    log.info("%s are served: %s", kind.plural, served_means)
                    self.informers[kind] = Informer(
                        self.kube,
                        kind,
                        self._kube_changed(kind),
                        index_labels=(importer.SERVICE_LABEL,),
                    )
            except KubeError as err:
                log.warning("cannot tell whether %s are served (%s); none", kind.plural, err)
        async with asyncio.TaskGroup() as group:
            for informer in self.informers.values():
                group.create_task(informer.run())
            group.create_task(self._follow_registry())
            group.create_task(self.credentials.run())
            group.create_task(self.elector.run(self._lead))

    async def _lead(self) -> None:
        self.metrics.leader.set(1)
        try:
            for informer in self.informers.values():
                await informer.synced.wait()
            if not self.view.loaded:
                self._seed_from_imports()
            self._enqueue_all()  # a new leader trusts nothing its predecessor did
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat())
                group.create_task(self.queue.run())
                for _ in range(WORKERS):
                    group.create_task(self._work())
                group.create_task(self.trust.run())
        finally:
            self.metrics.leader.set(0)

    async def _follow_registry(self) -> None:
        await follow(self.registry, self.clock, self._registry_changed)

    def _registry_changed(self, change: Relist | Synced | Event) -> None:
        touched = self.view.take(change)
        if self.view.bundle is not None and self.view.bundle is not self.credentials.bundle:
            self.credentials.observe(self.view.bundle)
            self.trust.wake()
        if isinstance(change, Synced):
            # What a snapshot built is long-lived and acyclic: keep the
            # cyclic collector from walking it on every allocation burst.
            gc.freeze()
            self._adopt_exports()
            self._enqueue_all()  # the orphans of services the registry lost, too
        elif touched.all:
            self._enqueue_all()
        else:
            for service in touched.services:
                self._import_dirty(ImportKey(service))

    def _import_dirty(self, key: ImportKey) -> None:
        self.progress.dirtied(key, self.view.revision)
        self.queue.add(key)
        service = key.service
        if self.informers[SERVICE_EXPORTS].get(service.namespace, service.name) is not None:
            self.queue.add(ExportKey(service))  # another cluster's export may conflict with ours

    def _adopt_exports(self) -> None:
        """After a complete snapshot, the exporter's memory is what the
        registry holds from us: what it lacks is published again."""
        own = str(self.site.source)
        held = {k[0]: v for k, v in self.view.shards.items() if k[1] == own}
        for service in self.exporter.exported():
            if service not in held:
                self.exporter.withdrawn(service)
        for service, shards in held.items():
            self.exporter.adopt(service, shards.values())

    async def _heartbeat(self) -> None:
        await keep_alive(self.registry, self.site.source, self.clock, applied=self._applied)

    def _applied(self) -> int | None:
        """The revision this cluster has materialized, once a snapshot was."""
        if not self.view.authoritative:
            return None
        applied = self.progress.applied(self.view.revision)
        self.metrics.applied.set(applied)
        return applied

    def _seed_from_imports(self) -> None:
        """Registry unreachable at start: take the view saved on our imports."""
        for obj in self.informers[SERVICE_IMPORTS].items():
            if managed(obj):
                for endpoint_set in importer.sets_from_import(obj):
                    self.view.seed(endpoint_set)
        self.view.loaded = True
        log.info("started from %d materialized imports", len(self.view.sets))

    # -- the work queue ------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            succeeded = False
            if isinstance(key, ImportKey):
                self.progress.started(key, self.view.revision)
            try:
                wake = await self.reconcile(key)
            except Revoked:  # the client said it once; imports stay, exports wait
                self.queue.forget(key)
                self.queue.add_after(key, REVOKED_RETRY)
            except (KubeError, RegistryError, Refused) as err:
                self.metrics.errors.inc()
                delay = self.queue.retry(key)
                if not isinstance(err, Refused):  # a refusal was logged where it happened
                    log.warning(
                        "%s: %s; retrying in %.1fs",
                        "export" if isinstance(key, ExportKey) else "import",
                        err,
                        delay,
                        extra=fields(
                            cluster=self.site.cluster,
                            namespace=key.service.namespace,
                            service=key.service.name,
                        ),
                    )
            except Conflicted:
                self.queue.add_after(key, CONFLICT_DELAY)  # our cache is behind: look again
            else:
                succeeded = True
                self.queue.forget(key)
                if wake is not None:
                    self.queue.add_after(key, wake)
            finally:
                if isinstance(key, ImportKey):
                    self.progress.finished(key, succeeded)
                self.queue.done(key)
                self.metrics.queue_depth.set(self.queue.pending)

    async def reconcile(self, key: Key) -> float | None:
        """One key: re-read desired and actual state, write the difference;
        returns when to look again (coalescing, a hold-down), if ever."""
        if isinstance(key, ExportKey):
            return await self.exports.reconcile(key.service)
        return await self._import(key.service)

    # -- imports ---------------------------------------------------------------------

    async def _import(self, service: ServiceRef) -> float | None:
        own = str(self.site.source)
        sets = [s for src, s in self.view.sets.get(service, {}).items() if src != own]
        local = await self.exports.local(service)
        if local is not None:
            sets.append(local_set(self.site.source, service, local))
        return await self.imports.reconcile(service, sets, self.clock.now())

    @property
    def choices(self) -> dict[ServiceRef, Choice]:
        return self.imports.choices

    # -- health ----------------------------------------------------------------------

    def health_app(self) -> web.Application:
        def ready() -> tuple[bool, dict[str, Any]]:
            if not self.ready:
                return False, {"status": "syncing"}
            return True, {"status": "ready", "leader": self.elector.leading}

        return health_app(ready, self.metrics.registry, self.metrics.link, self.registry)


__all__ = ["AgentMetrics", "ClusterAgent", "ExportKey", "ImportKey"]
