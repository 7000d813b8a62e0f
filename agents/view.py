"""What an agent knows of the registry, and the loop that keeps it.

``View`` holds the endpoint sets by service and source, the policies, the
VM workloads and the trust bundle; ``follow`` runs the registry's snapshot-then-watch stream
into a callback, with one log line and capped backoff when it breaks;
``keep_alive`` renews a source's liveness lease.  Cluster and VM agents
share all three."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.client import Bookmark, Event, RegistryClient, RegistryError, Reset
from federation.clock import Clock
from federation.model import EndpointSet, ServiceRef, SourceRef, TrafficPolicy, Workload

log = logging.getLogger(__name__)


@dataclass
class View:
    sets: dict[ServiceRef, dict[str, EndpointSet]] = field(default_factory=dict)
    policies: dict[ServiceRef, TrafficPolicy] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)  # VMs by name
    bundle: dict[str, Any] | None = None  # the TrustBundle
    authoritative: bool = False  # from a registry snapshot in this process
    loaded: bool = False  # from the registry, or (cluster agent) from its saved imports

    def apply(self, kind: str, obj: dict[str, Any] | None, key: str) -> None:
        if kind == "EndpointSet":
            service_text, _, source = key.removeprefix("endpoints/").rpartition("/")
            namespace, _, name = service_text.partition("/")
            service = ServiceRef(namespace=namespace, name=name)
            if obj is None:
                self.sets.get(service, {}).pop(source, None)
                if not self.sets.get(service):
                    self.sets.pop(service, None)
            else:
                self.sets.setdefault(service, {})[source] = EndpointSet.from_wire(obj)
        elif kind == "TrafficPolicy":
            namespace, _, name = key.removeprefix("policies/").partition("/")
            service = ServiceRef(namespace=namespace, name=name)
            if obj is None:
                self.policies.pop(service, None)
            else:
                self.policies[service] = TrafficPolicy.from_wire(obj)
        elif kind == "Workload":
            name = key.removeprefix("vms/")
            if obj is None:
                self.workloads.pop(name, None)
            else:
                self.workloads[name] = Workload.from_wire(obj)
        elif kind == "TrustBundle" and obj is not None:
            self.bundle = obj

    @classmethod
    def of(cls, reset: Reset) -> View:
        view = cls(authoritative=True, loaded=True)
        for item in reset.items:
            view.apply(item["kind"], item["object"], item["key"])
        return view


async def follow(
    client: RegistryClient,
    clock: Clock,
    on_change: Callable[[Reset | Event], Any],
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Every Reset and Event of the registry's stream to ``on_change``
    (awaited if it returns an awaitable), until cancelled."""
    delay = 0.1
    while True:
        try:
            async for change in client.changes():
                delay = 0.1
                if isinstance(change, Bookmark):
                    continue
                done = on_change(change)
                if done is not None:
                    await done
        except RegistryError as err:
            on_error()
            log.warning("registry: %s; retrying in %.1fs", err, delay)
            await clock.sleep(delay)
            delay = min(delay * 2, 5.0)


async def keep_alive(
    client: RegistryClient,
    source: SourceRef,
    clock: Clock,
    on_error: Callable[[], None] = lambda: None,
) -> None:
    """Heartbeat ``source`` three times per lease TTL, until cancelled."""
    interval = 5.0
    while True:
        try:
            answer = await client.heartbeat(source)
            interval = max(float(answer.get("ttlSeconds", 15)) / 3, 0.2)
        except RegistryError as err:
            on_error()
            log.warning("heartbeat: %s", err)
        await clock.sleep(interval)
