"""The VM agent: one process per VM.

- credentials: the client certificate (joined once, kept in the state dir,
  renewed by ``CredentialKeeper``), the workload's X.509 SVID
  ``spiffe://<td>/ns/<ns>/sa/<sa>`` in ``workload/`` (renewed at 2/3 of its
  lifetime and when the issuing root changes) and the trust bundle in
  ``bundle.pem``;
- registration: the VM's workload is an endpoint of ``<ns>/<service>``
  with the VM's locality, ready while the probe (HTTP or TCP) passes; a
  heartbeat keeps its lease, so a silent VM goes stale;
- forwarding: every other service of the federation on a local address
  (``forwarder``), routed for the VM's locality.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.client import Event, RegistryClient, RegistryError, Relist, Synced
from agents.credentials import CredentialKeeper, keep_in, renew_at, run_steps
from agents.telemetry import LinkMetrics, health_app
from agents.view import View, follow, keep_alive
from agents.vm import saved
from agents.vm.forwarder import Forwarder
from agents.vm.resolver import VMResolver
from federation.model import (
    Endpoint,
    EndpointSet,
    ServiceRef,
    SourceKind,
    SourceRef,
    Workload,
)
from federation.shared.clock import Clock, SystemClock
from federation.trust import ca as certs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """``tcp`` (connect to the workload's first port), ``http://...`` (GET,
    under 400 is ready) or ``none`` (always ready)."""

    spec: str = "tcp"
    timeout: float = 1.0

    async def check(self, workload: Workload) -> bool:
        try:
            if self.spec == "none":
                return True
            if self.spec == "tcp":
                if not workload.ports:
                    return True
                # asyncio.timeout, not wait_for: 3.11's wait_for can lose a
                # cancellation that lands as the connection completes.
                async with asyncio.timeout(self.timeout):
                    _, writer = await asyncio.open_connection(
                        workload.address, workload.ports[0].port
                    )
                writer.close()
                return True
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(self.spec) as answer,
            ):
                return answer.status < 400
        except (OSError, TimeoutError, aiohttp.ClientError):
            return False


@dataclass
class VMMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.ready = Gauge(
            "federation_vm_workload_ready", "1 while the probe passes", registry=self.registry
        )
        self.publishes = Counter(
            "federation_vm_publishes_total", "Endpoint publishes", registry=self.registry
        )
        self.imports = Gauge(
            "federation_imports", "Services forwarded here", registry=self.registry
        )
        self.errors = Counter(
            "federation_vm_errors_total", "Failed steps, retried", registry=self.registry
        )
        self.link = LinkMetrics(self.registry)
        self.applied = self.link.applied


class VMAgent:
    def __init__(
        self,
        client: RegistryClient,
        record: Workload,
        state_dir: Path,
        *,
        probe: Probe | None = None,
        probe_interval: float = 1.0,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        pinned: dict[ServiceRef, tuple[str, int]] | None = None,
        dns: tuple[str, int] | None = None,
    ) -> None:
        self.client = client
        self.record = record
        self.state_dir = state_dir
        self.probe = probe or Probe()
        self.probe_interval = probe_interval
        self.clock = clock or SystemClock()
        self.wall = wall
        self.source = SourceRef(kind=SourceKind.VM, name=record.name)
        self.service = (  # the service this VM is an endpoint of, if any
            ServiceRef(namespace=record.namespace, name=record.service) if record.service else None
        )
        self.credentials = CredentialKeeper(client, self.clock, keep_in(state_dir / "certs"))
        self.forwarder = Forwarder(record.locality, state_dir, pinned=pinned, now=self.clock.now)
        # clusterset.local for the VM's applications, if asked for (--dns).
        self.resolver = VMResolver(self.forwarder, *dns) if dns is not None else None
        self.metrics = VMMetrics()
        self.view = View()
        self.healthy: bool | None = None
        self.published_generation = 0
        self._workload_changed = asyncio.Event()
        self._routed_revision = 0
        self._probe_now = asyncio.Event()

    # -- running -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.resolver is not None:
                await self.resolver.start()
                log.info("answering clusterset.local on %s:%d", *self.resolver.address)
            if not self.view.loaded and saved.seed_view(self.state_dir, self.view):
                log.info("starting from the view saved in %s", self.state_dir / "view.json")
                await self._route()  # forward now, whatever the registry's state
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow())
                group.create_task(self.credentials.run())
                group.create_task(
                    run_steps(
                        self._workload_cert, self._workload_changed, self.clock, "workload cert"
                    )
                )
                group.create_task(self._heartbeat())
                group.create_task(self._reroute())
                if self.service is not None:
                    group.create_task(self._health())
        finally:
            if self.resolver is not None:
                await self.resolver.stop()
            await self.forwarder.close()

    async def _follow(self) -> None:
        await follow(self.client, self.clock, self._registry_changed, self.metrics.errors.inc)

    async def _registry_changed(self, change: Relist | Synced | Event) -> None:
        self.view.take(change)
        if not self.view.loaded:
            return  # the first snapshot is not complete yet
        if self.view.bundle is not None and self.view.bundle is not self.credentials.bundle:
            self.credentials.observe(self.view.bundle)
            self._workload_changed.set()
        await self._route()

    async def _reroute(self, every: float = 1.0) -> None:
        """Route again as time passes: a hold-down ends, a stale grace runs out."""
        while True:
            await self.clock.sleep(every)
            if self.view.loaded:
                await self._route()

    async def _route(self) -> None:
        """Forward every service but our own source's view of itself."""
        imported = {
            service: [s for source, s in by_source.items() if source != str(self.source)]
            for service, by_source in self.view.sets.items()
        }
        imported = {service: sets for service, sets in imported.items() if sets}
        revision = self.view.revision
        await self.forwarder.update(imported, self.view.policies)
        self.metrics.imports.set(len(imported))
        saved.save_view(self.state_dir, self.view)
        self._routed_revision = revision
        self.metrics.applied.set(revision)

    # -- the workload: certificate, health, publishing -----------------------------

    async def _workload_cert(self) -> float:
        """Keep ``workload/`` and ``bundle.pem`` current; seconds to the next step."""
        bundle = self.credentials.bundle
        if bundle is None:
            return 60.0
        directory = self.state_dir / "workload"
        roots = bundle.roots_pem
        _write(self.state_dir / "bundle.pem", roots)
        cert_path = directory / "cert.pem"
        if cert_path.exists():
            due = renew_at(x509.load_pem_x509_certificate(cert_path.read_bytes()), bundle)
            if self.clock.now() < due:
                _write(directory / "bundle.pem", roots)
                return due - self.clock.now()
        key = certs.new_key()
        answer = await self.client.workload_certificate(
            certs.make_csr(key), self.record.namespace, self.record.service_account
        )
        _write(directory / "key.pem", certs.plain_key_pem(key))
        _write(cert_path, (answer["certificate"] + answer["chain"]).encode())
        _write(directory / "bundle.pem", answer["caBundle"].encode())
        log.info("wrote the workload certificate for %s", answer["identity"])
        cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
        return certs.renewal_time(cert) - self.clock.now()

    async def _health(self) -> None:
        while True:
            healthy = await self.probe.check(self.record)
            self.metrics.ready.set(1 if healthy else 0)
            if healthy != self.healthy:
                try:
                    await self.publish(healthy)
                    self.healthy = healthy
                    log.info("workload %s", "ready" if healthy else "not ready")
                except RegistryError as err:
                    self.metrics.errors.inc()
                    log.warning("publish: %s; retrying", err)
            await self.clock.sleep(self.probe_interval)

    async def publish(self, healthy: bool) -> None:
        assert self.service is not None, "a VM without a service publishes nothing"
        generation = max(int(self.wall() * 1000), self.published_generation + 1)
        endpoint = Endpoint(
            address=self.record.address,
            ports=self.record.ports,
            locality=self.record.locality,
            ready=healthy,
            serving=healthy,
        )
        await self.client.publish(
            EndpointSet(
                service=self.service,
                source=self.source,
                generation=generation,
                endpoints=(endpoint,),
                ports=self.record.ports,
                changed_at=self.wall(),
            )
        )
        self.published_generation = generation
        self.metrics.publishes.inc()

    async def _heartbeat(self) -> None:
        await keep_alive(
            self.client, self.source, self.clock, self.metrics.errors.inc, self._applied
        )

    def _applied(self) -> int | None:
        """What the forwarders carry: the view as of the last routing pass."""
        return self._routed_revision if self.view.authoritative else None

    # -- health and metrics --------------------------------------------------------

    def health_app(self) -> web.Application:
        def ready() -> tuple[bool, dict[str, Any]]:
            ok = self.view.loaded and self.client.credentials is not None
            return ok, {"ready": ok}

        return health_app(ready, self.metrics.registry, self.metrics.link, self.client)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_bytes() == data:
        return
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
