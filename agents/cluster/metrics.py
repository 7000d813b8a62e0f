"""The cluster agent's Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agents.telemetry import LinkMetrics


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
        self.refused = Counter(
            "federation_agent_refused_writes",
            "Writes the apiserver refused (4xx other than 409), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.left_out = Gauge(
            "federation_agent_left_out_endpoints",
            "Chosen endpoints left out of this cluster's slices: Kubernetes cannot hold them",
            registry=self.registry,
        )
        self.unenforced_weights = Gauge(
            "federation_agent_unenforced_weights",
            "Imported services whose policy weights sources but whose data plane here cannot",
            registry=self.registry,
        )
        self.deleted_imports = Counter(
            "federation_agent_deleted_imports",
            "Imported services whose objects this agent deleted: they left the federation",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "federation_agent_queue_depth", "Keys waiting to reconcile", registry=self.registry
        )
        self.link = LinkMetrics(self.registry)
        self.applied = self.link.applied
        self.route_priority = Gauge(
            "federation_agent_route_priority",
            "The routing level each imported service uses now (0 same cluster, 1 same zone, "
            "2 same region, 3 elsewhere, or a policy's order; -1 a weighted split or nothing)",
            ["namespace", "service"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "federation_agent_leader", "1 while this replica leads", registry=self.registry
        )


__all__ = ["AgentMetrics"]
