"""The cluster agent: one Deployment-shaped process per cluster.

It keeps informers on Services, EndpointSlices, Nodes, ServiceExports and
ServiceImports, follows the registry's watch, and, while it holds the
leader Lease, reconciles level-triggered: exports out (``exporter``),
imports in (``importer`` with ``federation.routing``).  Static stability:
with the registry unreachable it keeps its last view (or, after a restart,
the view saved on the ServiceImports) and keeps routing from it with
fresh local endpoints; it deletes imports only when the registry says a
service is gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agents.client import Event, RegistryClient, RegistryError, Reset
from agents.cluster import importer
from agents.cluster.exporter import (
    AGENT,
    GATEWAY_SUFFIX,
    MANAGED_BY,
    SERVICE_NAME,
    Exporter,
    Local,
    Site,
    companion_service,
    endpoint_set_of,
    has_node_ports,
)
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    NODES,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SERVICES,
    WORKLOAD_ENTRIES,
    Informer,
    Kind,
    Kube,
    KubeError,
    Obj,
    ensure_crds,
    ensure_namespace,
    key_of,
)
from agents.cluster.leader import LeaderElector
from agents.cluster.trust import ClusterTrust
from agents.credentials import CredentialKeeper, Keep
from agents.view import View, follow, keep_alive
from federation.clock import Clock, SystemClock
from federation.model import EndpointSet, NetworkMode, ServiceRef
from federation.routing import Choice, choose

log = logging.getLogger(__name__)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.propagation = Histogram(
            "federation_propagation_seconds",
            "From a source's change (its changedAt) to its materialization here",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.exports = Gauge("federation_exports", "Services exported", registry=self.registry)
        self.imports = Gauge("federation_imports", "Services imported", registry=self.registry)
        self.errors = Counter(
            "federation_reconcile_errors_total", "Failed reconcile steps", registry=self.registry
        )
        self.leader = Gauge(
            "federation_agent_leader", "1 while this replica leads", registry=self.registry
        )


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
        self.choices: dict[ServiceRef, Choice] = {}
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
        self._dirty = asyncio.Event()
        self._export_after = 0.0  # clock time before which no export is tried
        self._export_delay = 0.1
        self._seen: set[tuple[ServiceRef, str, int]] = set()
        self.deleted_imports = 0  # objects of imports this agent deleted, for fault tests
        self.informers = {
            kind: Informer(kube, kind, self._changed)
            for kind in (SERVICES, ENDPOINT_SLICES, NODES, SERVICE_EXPORTS, SERVICE_IMPORTS)
        }

    def _changed(self) -> None:
        self._dirty.set()

    @property
    def ready(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values()) and self.view.loaded

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await ensure_crds(self.kube)
        except KubeError as err:
            log.warning("cannot install the MCS CRDs (%s); assuming they are there", err)
        try:
            if await self.kube.served(WORKLOAD_ENTRIES):
                log.info("Istio is installed: VM endpoints also get WorkloadEntries")
                self.informers[WORKLOAD_ENTRIES] = Informer(
                    self.kube, WORKLOAD_ENTRIES, self._changed
                )
        except KubeError as err:
            log.warning("cannot tell whether Istio is installed (%s); no WorkloadEntries", err)
        async with asyncio.TaskGroup() as group:
            for informer in self.informers.values():
                group.create_task(informer.run())
            group.create_task(self._follow_registry())
            group.create_task(self.credentials.run())
            group.create_task(self.elector.run(self._lead))

    async def _lead(self) -> None:
        self.metrics.leader.set(1)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat())
                group.create_task(self._reconcile_loop())
                group.create_task(self.trust.run())
        finally:
            self.metrics.leader.set(0)

    async def _follow_registry(self) -> None:
        await follow(self.registry, self.clock, self._registry_changed)

    def _registry_changed(self, change: Reset | Event) -> None:
        if isinstance(change, Reset):
            self.view = View.of(change)
            self.exporter.adopt(s for sets in self.view.sets.values() for s in sets.values())
        else:
            self.view.apply(
                change.kind, change.object if change.type == "PUT" else None, change.key
            )
        if self.view.bundle is not None and self.view.bundle is not self.credentials.bundle:
            self.credentials.observe(self.view.bundle)
            self.trust.wake()
        self._dirty.set()

    async def _heartbeat(self) -> None:
        await keep_alive(self.registry, self.site.source, self.clock)

    async def _reconcile_loop(self) -> None:
        for informer in self.informers.values():
            await informer.synced.wait()
        if not self.view.loaded:
            self._seed_from_imports()
        delay = 0.1
        while True:
            self._dirty.clear()
            try:
                wake = await self.reconcile()
                delay = 0.1
            except (KubeError, RegistryError) as err:
                self.metrics.errors.inc()
                log.warning("reconcile: %s; retrying in %.1fs", err, delay)
                await self.clock.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            timeout = 1.0 if wake is None else min(wake, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)

    def _seed_from_imports(self) -> None:
        """Registry unreachable at start: take the view saved on our imports."""
        for obj in self.informers[SERVICE_IMPORTS].items():
            if obj["metadata"].get("labels", {}).get(MANAGED_BY) != AGENT:
                continue
            for endpoint_set in importer.sets_from_import(obj):
                self.view.sets.setdefault(endpoint_set.service, {})[str(endpoint_set.source)] = (
                    endpoint_set
                )
        self.view.loaded = True
        log.info("started from %d materialized imports", len(self.view.sets))

    # -- one pass ------------------------------------------------------------------

    async def reconcile(self) -> float | None:
        """Export and import side by side; returns when to look again
        (coalescing, or a publish to retry).  The import never waits for
        the registry: a local failover is written while the publish is on
        its way, and a registry that does not answer delays exports only."""
        local = await self._export_desired()
        self.metrics.exports.set(len(local))
        export = asyncio.ensure_future(self._export_step(local))
        try:
            await self._import(local)
        finally:
            wake = await export
        return wake

    async def _export_step(self, local: dict[ServiceRef, Local]) -> float | None:
        wake: float | None = None
        now = self.clock.now()
        if now >= self._export_after:
            try:
                wake = await self._export(local)
                self._export_delay = 0.1
            except RegistryError as err:
                self.metrics.errors.inc()
                log.warning("export: %s; retrying in %.1fs", err, self._export_delay)
                self._export_after = now + self._export_delay
                self._export_delay = min(self._export_delay * 2, 5.0)
        if now < self._export_after:
            wake = self._export_after - now
        return wake

    async def _export(self, local: dict[ServiceRef, Local]) -> float | None:
        publish, withdraw, wake = self.exporter.plan(local)
        for endpoint_set in publish:
            await self.registry.publish(endpoint_set, retry=False)
            self.exporter.published(endpoint_set)
        for service in withdraw:
            try:
                await self.registry.withdraw(service, self.site.source, retry=False)
            except RegistryError as err:
                if err.status != 404:
                    raise
            self.exporter.withdrawn(service)
            await self._delete(SERVICES, service.namespace, service.name + GATEWAY_SUFFIX)
        return wake

    async def _export_desired(self) -> dict[ServiceRef, Local]:
        services = self.informers[SERVICES].cache
        slices: dict[tuple[str, str], list[Obj]] = {}  # (namespace, service) -> its slices
        for obj in self.informers[ENDPOINT_SLICES].items():
            meta = obj["metadata"]
            owner = meta.get("labels", {}).get(SERVICE_NAME)
            if owner and not _managed(obj):
                slices.setdefault((meta.get("namespace", ""), owner), []).append(obj)
        nodes = {o["metadata"]["name"]: o for o in self.informers[NODES].items()}
        desired = {}
        for export in self.informers[SERVICE_EXPORTS].items():
            meta = export["metadata"]
            service = services.get(f"{meta['namespace']}/{meta['name']}")
            if service is None or _managed(service):
                continue
            own = slices.get((meta["namespace"], meta["name"]), [])
            ported = None
            if self.site.mode is NetworkMode.GATEWAY and not has_node_ports(service):
                ported = await self._companion(service)
            ref = ServiceRef(namespace=meta["namespace"], name=meta["name"])
            desired[ref] = endpoint_set_of(self.site, service, own, nodes, ported)
        return desired

    async def _companion(self, service: Obj) -> Obj:
        wanted = companion_service(service)
        key = f"{service['metadata']['namespace']}/{wanted['metadata']['name']}"
        current = self.informers[SERVICES].cache.get(key)
        if current is None:
            current = await self.kube.create(SERVICES, service["metadata"]["namespace"], wanted)
            self.informers[SERVICES].cache[key] = current
        return current

    async def _import(self, local: dict[ServiceRef, Local]) -> None:
        own = str(self.site.source)
        wanted: set[ServiceRef] = set()
        now = self.clock.now()
        istio = WORKLOAD_ENTRIES in self.informers
        owned = self._owned((ENDPOINT_SLICES, WORKLOAD_ENTRIES) if istio else (ENDPOINT_SLICES,))
        for service in sorted(set(self.view.sets) | set(local), key=str):
            sets = [s for src, s in self.view.sets.get(service, {}).items() if src != own]
            if service in local:
                endpoints, ports = local[service]
                sets.append(
                    EndpointSet(
                        service=service,
                        source=self.site.source,
                        generation=0,
                        endpoints=endpoints,
                        ports=ports,
                    )
                )
            if not sets:
                continue
            wanted.add(service)
            previous = self.choices.get(service)
            choice = choose(sets, self.consumer, self.view.policies.get(service), now, previous)
            self.choices[service] = choice
            desired = importer.materialize(service, sets, choice, self.suffix)
            keep: set[str] = set()
            if istio:
                entries, keep = importer.workload_entries(
                    service, choice, self.view.workloads, self.suffix
                )
                desired += entries
            await self._apply(desired, owned.get(service, set()), keep)
            self._observe(sets)
        self.metrics.imports.set(len(wanted))
        if self.view.authoritative:
            await self._collect(wanted)

    def _observe(self, sets: list[EndpointSet]) -> None:
        for endpoint_set in sets:
            key = (endpoint_set.service, str(endpoint_set.source), endpoint_set.generation)
            if endpoint_set.generation == 0 or key in self._seen:
                continue
            self._seen.add(key)
            if endpoint_set.changed_at > 0:
                self.metrics.propagation.observe(max(0.0, self.wall() - endpoint_set.changed_at))

    def _owned(self, kinds: tuple[Kind, ...]) -> dict[ServiceRef, set[tuple[Kind, str]]]:
        """Per service, the managed objects of ``kinds`` it has (kind, name)."""
        owned: dict[ServiceRef, set[tuple[Kind, str]]] = {}
        for kind in kinds:
            for obj in self.informers[kind].items():
                meta = obj["metadata"]
                name = meta.get("labels", {}).get(importer.SERVICE_LABEL)
                if name is not None and _managed(obj):
                    ref = ServiceRef(namespace=meta["namespace"], name=name)
                    owned.setdefault(ref, set()).add((kind, meta["name"]))
        return owned

    async def _apply(
        self, desired: list[importer.Desired], owned: set[tuple[Kind, str]], keep: set[str]
    ) -> None:
        """Create or update ``desired``; delete the service's other owned
        slices and WorkloadEntries, but those named in ``keep``."""
        namespace_known = False
        for item in desired:
            cache = self.informers[item.kind].cache
            key = f"{item.namespace}/{item.name}"
            current = cache.get(key)
            if current is not None and not importer.differs(current, item.body):
                continue
            try:
                if current is None:
                    if not namespace_known:
                        await ensure_namespace(self.kube, item.namespace)
                        namespace_known = True
                    cache[key] = await self.kube.create(item.kind, item.namespace, item.body)
                else:
                    body = importer.merged(current, item.body)
                    cache[key] = await self.kube.replace(item.kind, item.namespace, item.name, body)
            except KubeError as err:
                if err.status != 409:
                    raise
                self._dirty.set()  # someone else wrote it: look again
        wanted = {(d.kind, d.name) for d in desired}
        for kind, name in sorted(owned - wanted, key=lambda o: (o[0].plural, o[1])):
            if name not in keep:
                await self._delete(kind, desired[0].namespace, name)

    async def _collect(self, wanted: set[ServiceRef]) -> None:
        """Delete imports of services the registry no longer has."""
        for kind in (SERVICE_IMPORTS, ENDPOINT_SLICES, WORKLOAD_ENTRIES, SERVICES):
            if kind not in self.informers:
                continue
            for obj in list(self.informers[kind].cache.values()):
                meta = obj["metadata"]
                name = meta.get("labels", {}).get(importer.SERVICE_LABEL)
                if not _managed(obj) or name is None:
                    continue
                if ServiceRef(namespace=meta["namespace"], name=name) not in wanted:
                    log.info("%s %s: its service left the federation", kind.plural, key_of(obj))
                    self.deleted_imports += 1
                    await self._delete(kind, meta["namespace"], meta["name"])

    async def _delete(self, kind: Kind, namespace: str, name: str) -> None:
        if await self.kube.delete(kind, namespace, name):
            self.informers[kind].cache.pop(f"{namespace}/{name}", None)

    # -- health ----------------------------------------------------------------------

    def health_app(self) -> web.Application:
        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def readyz(request: web.Request) -> web.Response:
            if not self.ready:
                return web.json_response({"status": "syncing"}, status=503)
            return web.json_response({"status": "ready", "leader": self.elector.leading})

        async def metrics(request: web.Request) -> web.Response:
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        return app


def _managed(obj: Obj) -> bool:
    return bool(obj["metadata"].get("labels", {}).get(MANAGED_BY) == AGENT)


__all__ = ["AgentMetrics", "ClusterAgent"]
