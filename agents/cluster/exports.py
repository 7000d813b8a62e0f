"""The exports of one cluster, per key: what the cluster exports of a
service (``local``), published as the exporter plans it (shards written,
dropped, withdrawn), and the MCS conditions written on its ServiceExport."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from agents.client import RegistryClient, Rejected
from agents.cluster import export_status, mcs
from agents.cluster.exporter import (
    GATEWAY_SUFFIX,
    SERVICE_NAME,
    Exporter,
    Local,
    Site,
    companion_service,
    endpoint_set_of,
    has_node_ports,
    local_set,
    managed,
)
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    NODES,
    SERVICE_EXPORTS,
    SERVICES,
    Informer,
    Kind,
    Kube,
    Obj,
)
from agents.cluster.metrics import AgentMetrics
from agents.cluster.writer import Writer
from agents.view import View
from federation.model import NetworkMode, ServiceRef


class Exports:
    def __init__(
        self,
        *,
        kube: Kube,
        registry: RegistryClient,
        site: Site,
        view: View,
        informers: dict[Kind, Informer],
        writer: Writer,
        exporter: Exporter,
        metrics: AgentMetrics,
        wall: Callable[[], float],
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.site = site
        self.view = view
        self.informers = informers
        self.writer = writer
        self.exporter = exporter
        self.metrics = metrics
        self.wall = wall
        self._nodes: dict[str, Obj] | None = None  # by name, rebuilt after a Node change

    def nodes_changed(self) -> None:
        self._nodes = None

    async def reconcile(self, service: ServiceRef) -> float | None:
        local = await self.local(service)
        plan = self.exporter.plan(service, local)
        for endpoint_set in plan.publish:
            await self.registry.publish(endpoint_set, retry=False)
            self.exporter.published(endpoint_set)
        for shard in plan.drop:
            await self._withdraw(service, shard)
            self.exporter.dropped(service, shard)
        if plan.withdraw:
            await self._withdraw(service, None)
            self.exporter.withdrawn(service)
            await self.writer.delete(SERVICES, service.namespace, service.name + GATEWAY_SUFFIX)
        self.metrics.exports.set(len(self.exporter.sent))
        # After the publish: a status the apiserver refuses retries this key
        # (the publish is then a no-op), it never holds the publish back.
        await self._export_status(service, local)
        return plan.wake

    async def _export_status(self, service: ServiceRef, local: Local | None) -> None:
        """The MCS conditions on our ServiceExport: valid or not, and in
        conflict with other clusters' exports or not (``mcs``)."""
        export = self.informers[SERVICE_EXPORTS].get(service.namespace, service.name)
        if export is None:
            return
        obj = self.informers[SERVICES].get(service.namespace, service.name)
        if obj is not None and managed(obj):
            obj = None
        derived = None
        if obj is not None and local is not None:
            own = str(self.site.source)
            sets = [s for src, s in self.view.sets.get(service, {}).items() if src != own]
            sets.append(local_set(self.site.source, service, local))
            derived = mcs.derive(sets)
        now = dt.datetime.fromtimestamp(self.wall(), dt.UTC)
        wanted = mcs.export_conditions(export, obj, derived, now)
        if mcs.same_conditions(export, wanted):
            return
        written = await export_status.write_conditions(self.kube, export, wanted)
        self.informers[SERVICE_EXPORTS].store(written)
        await export_status.record_events(self.kube, export, wanted)

    async def _withdraw(self, service: ServiceRef, shard: int | None) -> None:
        try:
            await self.registry.withdraw(service, self.site.source, shard=shard, retry=False)
        except Rejected as err:
            if err.status != 404:  # already withdrawn
                raise

    async def local(self, service: ServiceRef) -> Local | None:
        """This cluster's endpoints of ``service``, if it exports it."""
        export = self.informers[SERVICE_EXPORTS].get(service.namespace, service.name)
        if export is None:
            return None
        obj = self.informers[SERVICES].get(service.namespace, service.name)
        if obj is None or managed(obj):
            return None
        slices = self.informers[ENDPOINT_SLICES].by_label(
            SERVICE_NAME, service.namespace, service.name
        )
        own = [s for s in slices if not managed(s)]
        ported = None
        if self.site.mode is NetworkMode.GATEWAY and not has_node_ports(obj):
            ported = await self._companion(obj)
        return endpoint_set_of(self.site, obj, own, self._nodes_by_name(), ported, export)

    def _nodes_by_name(self) -> dict[str, Obj]:
        if self._nodes is None:
            self._nodes = {o["metadata"]["name"]: o for o in self.informers[NODES].items()}
        return self._nodes

    async def _companion(self, service: Obj) -> Obj:
        wanted = companion_service(service)
        namespace = service["metadata"]["namespace"]
        current = self.informers[SERVICES].get(namespace, wanted["metadata"]["name"])
        if current is None:
            current = await self.kube.create(SERVICES, namespace, wanted)
            self.informers[SERVICES].store(current)
        return current


__all__ = ["Exports"]
