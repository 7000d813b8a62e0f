"""Registry -> cluster, one imported service at a time: route it
(``federation.shared.routing`` with a per-service memo), materialize it
(``importer``), write it (``writer``), and remember what makes the next
reconcile of the same service cheap: the routing memo, the slice bodies,
when the saved view was last written."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from agents.cluster import canary, importer, istio
from agents.cluster.exporter import managed
from agents.cluster.kube import (
    ENDPOINT_SLICES,
    HTTP_ROUTES,
    SERVICE_ENTRIES,
    SERVICE_IMPORTS,
    SERVICES,
    WORKLOAD_ENTRIES,
    Informer,
    Kind,
)
from agents.cluster.metrics import AgentMetrics
from agents.cluster.writer import Writer
from agents.view import View
from federation.model import EndpointSet, Locality, ServiceRef
from federation.shared.logs import fields
from federation.shared.routing import Choice, Memo, choose, revisit_after

log = logging.getLogger(__name__)

# A saved view larger than SAVED_VIEW_SMALL is rewritten at most every
# SAVED_VIEW_EVERY seconds: at 255 sources it is the largest thing the agent
# writes on a change.  A small one is kept current with every change.
SAVED_VIEW_EVERY = 2.0
SAVED_VIEW_SMALL = 16 * 1024


class Imports:
    def __init__(
        self,
        *,
        view: View,
        informers: dict[Kind, Informer],
        writer: Writer,
        consumer: Locality,
        suffix: str,
        metrics: AgentMetrics,
        wall: Callable[[], float],
    ) -> None:
        self.view = view
        self.informers = informers
        self.writer = writer
        self.consumer = consumer
        self.suffix = suffix
        self.metrics = metrics
        self.wall = wall
        self.choices: dict[ServiceRef, Choice] = {}
        self.bodies = importer.Bodies()
        self.memos: dict[ServiceRef, Memo] = {}  # routing's per-source split, per service
        self._saved: dict[ServiceRef, tuple[float, dict[str, str]]] = {}  # saved view, when
        self._left_out: dict[ServiceRef, int] = {}
        self._unweighted: set[ServiceRef] = set()  # weighted policies kube-proxy cannot honour
        # Per service and source, the last generation the propagation metric saw.
        self._observed: dict[ServiceRef, dict[str, int]] = {}

    async def reconcile(
        self, service: ServiceRef, sets: list[EndpointSet], now: float
    ) -> float | None:
        """Materialize ``service`` from ``sets`` (the local one included);
        returns when to look again, if ever."""
        if not sets:
            await self.forget(service)
            return None
        policy = self.view.policies.get(service)
        memo = self.memos.setdefault(service, Memo())
        memo.keep_only(str(s.source) for s in sets)
        choice = choose(sets, self.consumer, policy, now, self.choices.get(service), memo)
        self.choices[service] = choice
        level = -1 if choice.priority is None else choice.priority
        self.metrics.route_priority.labels(service.namespace, service.name).set(level)
        saved_at, saved = self._saved.get(service, (0.0, None))
        behind = (
            saved is not None
            and now - saved_at < SAVED_VIEW_EVERY
            and len(saved.get(importer.SOURCES_ANNOTATION, "")) > SAVED_VIEW_SMALL
        )
        planes = canary.Planes(HTTP_ROUTES in self.informers, SERVICE_ENTRIES in self.informers)
        for _ in range(3):  # each round may learn addresses the apiserver refuses
            refused = self.writer.refused_addresses
            weighting, note = canary.objects(
                service, sets, choice, planes, self.suffix, refused, self.bodies
            )
            done = importer.materialize(
                service,
                sets,
                choice,
                self.suffix,
                refused,
                self.bodies,
                saved if behind else None,
                self._cluster_ips(service),
                note,
            )
            # The ServiceImport last: it says the weights are enforced only
            # once what enforces them is written.
            desired = [d for d in done.objects if d.kind is not SERVICE_IMPORTS] + weighting
            desired += [d for d in done.objects if d.kind is SERVICE_IMPORTS]
            keep = set[str]()
            if WORKLOAD_ENTRIES in self.informers:
                entries, keep = istio.workload_entries(
                    service, choice, self.view.workloads, self.suffix
                )
                desired += entries
            if await self.writer.apply(service, desired, self._owned(service), keep):
                break
        self.bodies.keep_only(service, (d.name for d in desired), (str(s.source) for s in sets))
        if not behind:
            self._saved[service] = (now, done.saved)
        self._count_left_out(service, len(done.left_out))
        self._say_weights(service, importer.weighted(choice) and note is None)
        self._observe(service, sets)
        self.metrics.imports.set(len(self.choices))
        revisit = revisit_after(choice, sets, policy, now)
        if behind:  # the saved view may lag this change: refresh it when due
            due = saved_at + SAVED_VIEW_EVERY - now
            revisit = due if revisit is None else min(revisit, due)
        return revisit

    def _cluster_ips(self, service: ServiceRef) -> tuple[str, ...]:
        """The derived Service's cluster IPs, once the apiserver assigned
        them (its informer event then brings this service back here)."""
        derived = self.informers[SERVICES].get(
            service.namespace, importer.global_name(service, self.suffix)
        )
        spec = (derived or {}).get("spec", {})
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        return tuple(ip for ip in ips if ip and ip != "None")

    async def forget(self, service: ServiceRef) -> None:
        """No source has the service (any more): once the registry's view is
        authoritative, its objects here go; before that they stay (static
        stability)."""
        if self.choices.pop(service, None) is not None:
            with contextlib.suppress(KeyError):
                self.metrics.route_priority.remove(service.namespace, service.name)
        self.memos.pop(service, None)
        self._saved.pop(service, None)
        self._observed.pop(service, None)
        self.bodies.forget(service)
        self._count_left_out(service, 0)
        self._say_weights(service, False)
        self.metrics.imports.set(len(self.choices))
        if not self.view.authoritative:
            return
        for kind, name in sorted(self._owned(service, every=True), key=lambda o: o[0].plural):
            log.info(
                "%s %s/%s: its service left the federation",
                kind.plural,
                service,
                name,
                extra=fields(namespace=service.namespace, service=service.name),
            )
            self.metrics.deleted_imports.inc()
            await self.writer.delete(kind, service.namespace, name)

    def _owned(self, service: ServiceRef, *, every: bool = False) -> set[tuple[Kind, str]]:
        """The managed objects of ``service`` here (kind, name): all but its
        ServiceImport, or (``every``) that too.  A reconcile always wants
        the -global Service, so only per-source Services can go with it."""
        kinds = [ENDPOINT_SLICES, WORKLOAD_ENTRIES, SERVICES, HTTP_ROUTES, SERVICE_ENTRIES]
        if every:
            kinds.append(SERVICE_IMPORTS)
        owned: set[tuple[Kind, str]] = set()
        for kind in kinds:
            if kind not in self.informers:
                continue
            for obj in self.informers[kind].by_label(
                importer.SERVICE_LABEL, service.namespace, service.name
            ):
                if managed(obj):
                    owned.add((kind, obj["metadata"]["name"]))
        return owned

    def _say_weights(self, service: ServiceRef, unenforced: bool) -> None:
        """Weights this cluster's data plane cannot honour: said once per
        service (a log line; the ServiceImport's annotation; a gauge)."""
        if unenforced and service not in self._unweighted:
            log.warning(
                "%s: a weighted policy is routed but %s",
                service,
                importer.WEIGHTS_UNENFORCED,
                extra=fields(namespace=service.namespace, service=service.name),
            )
            self._unweighted.add(service)
        elif not unenforced:
            self._unweighted.discard(service)
        self.metrics.unenforced_weights.set(len(self._unweighted))

    def _count_left_out(self, service: ServiceRef, count: int) -> None:
        if count:
            self._left_out[service] = count
        else:
            self._left_out.pop(service, None)
        self.metrics.left_out.set(sum(self._left_out.values()))

    def _observe(self, service: ServiceRef, sets: list[EndpointSet]) -> None:
        seen = self._observed.setdefault(service, {})
        for endpoint_set in sets:
            source = str(endpoint_set.source)
            if endpoint_set.generation == 0 or seen.get(source, -1) >= endpoint_set.generation:
                continue
            seen[source] = endpoint_set.generation
            if endpoint_set.changed_at > 0:
                self.metrics.propagation.observe(max(0.0, self.wall() - endpoint_set.changed_at))


__all__ = ["SAVED_VIEW_EVERY", "Imports"]
