"""The VM's way to the federation's services: one loopback address per
imported service, listening on the service's own ports, forwarding TCP to
the endpoints ``federation.shared.routing`` chooses for the VM's locality.

A connection tries the chosen endpoints in turn (a failed connect moves on
to the next, so a backend that just died costs a retry, not an error), then
the healthy endpoints of the lower levels.  Addresses are allocated from
127.77.0.0/16 in order of first sight and kept in ``forwards.json``, so
they survive restarts; ``hosts`` is a hosts-file snippet naming them
``<name>.<ns>.svc.clusterset.local``.  A configured map pins a service to
a HOST:PORT of your choosing instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

from federation.model import EndpointSet, Locality, ServiceRef, TrafficPolicy
from federation.shared.logs import fields
from federation.shared.routing import Choice, Chosen, choose

log = logging.getLogger(__name__)

BASE = ipaddress.IPv4Address("127.77.0.1")
CONNECT_TIMEOUT = 1.0
UNPRIVILEGED_OFFSET = 15000  # port 80 is served on 15080 when 80 may not be bound
Target = tuple[str, int]


def hostname(service: ServiceRef) -> str:
    return f"{service.name}.{service.namespace}.svc.clusterset.local"


class Forwarder:
    def __init__(
        self,
        consumer: Locality,
        state_dir: Path,
        *,
        pinned: dict[ServiceRef, Target] | None = None,
        now: Callable[[], float],
    ) -> None:
        self.consumer = consumer
        self.state_dir = state_dir
        self.pinned = pinned or {}
        self.now = now
        self.choices: dict[ServiceRef, Choice] = {}
        self.sets: dict[ServiceRef, list[EndpointSet]] = {}
        self.servers: dict[tuple[ServiceRef, int], asyncio.Server] = {}
        self.bound: dict[tuple[ServiceRef, int], Target] = {}  # where each listens
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._addresses: dict[str, str] = self._load()

    def _load(self) -> dict[str, str]:
        path = self.state_dir / "forwards.json"
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(path.read_text()))
        return {}

    def address(self, service: ServiceRef) -> str:
        key = str(service)
        if key not in self._addresses:
            used = {ipaddress.IPv4Address(a) for a in self._addresses.values()}
            candidate = BASE
            while candidate in used:
                candidate += 1
            self._addresses[key] = str(candidate)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / "forwards.json").write_text(json.dumps(self._addresses, indent=2))
        return self._addresses[key]

    def listeners(self, service: ServiceRef) -> list[tuple[int, Target]]:
        """(service port, where this VM listens for it)."""
        ports = sorted({p.port for s in self.sets.get(service, []) for p in s.ports}) or sorted(
            {p.port for s in self.sets.get(service, []) for e in s.endpoints for p in e.ports}
        )
        if service in self.pinned:
            return [(ports[0] if ports else 0, self.pinned[service])]
        return [(port, (self.address(service), port)) for port in ports]

    async def update(
        self, sets: dict[ServiceRef, list[EndpointSet]], policies: dict[ServiceRef, TrafficPolicy]
    ) -> None:
        """Route every service anew and open or close listeners to match."""
        self.sets = sets
        now = self.now()
        self.choices = {
            service: choose(
                found, self.consumer, policies.get(service), now, self.choices.get(service)
            )
            for service, found in sets.items()
        }
        wanted = {
            (service, port): target for service in sets for port, target in self.listeners(service)
        }
        for key in [k for k in self.servers if k not in wanted]:
            self.servers.pop(key).close()
            self.bound.pop(key, None)
        for (service, port), (host, listen_port) in wanted.items():
            if (service, port) in self.servers:
                continue
            accept = self._acceptor(service, port)
            try:
                try:
                    server = await asyncio.start_server(accept, host, listen_port)
                except PermissionError:  # a port under 1024 without the privilege
                    listen_port += UNPRIVILEGED_OFFSET
                    server = await asyncio.start_server(accept, host, listen_port)
            except OSError as err:
                log.warning(
                    "cannot listen on %s:%d for %s: %s",
                    host,
                    listen_port,
                    service,
                    err,
                    extra=fields(namespace=service.namespace, service=service.name),
                )
                continue
            self.servers[(service, port)] = server
            self.bound[(service, port)] = (host, listen_port)
            log.info(
                "forwarding %s:%d -> %s port %d",
                host,
                listen_port,
                service,
                port,
                extra=fields(namespace=service.namespace, service=service.name),
            )
        self._write_map()

    def _write_map(self) -> None:
        """``hosts`` (a hosts-file snippet) and ``forwards.txt`` (where each
        service port is reachable from here)."""
        hosts = [
            f"{self.address(s)} {hostname(s)}"
            for s in sorted(self.sets, key=str)
            if s not in self.pinned
        ]
        forwards = [
            f"{service} port {port} -> {host}:{listen}"
            for (service, port), (host, listen) in sorted(self.bound.items(), key=str)
        ]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for name, lines in (("hosts", hosts), ("forwards.txt", forwards)):
            (self.state_dir / name).write_text("".join(line + "\n" for line in lines))

    def candidates(self, service: ServiceRef) -> list[Chosen]:
        """Chosen endpoints in a weighted random order, then the rest,
        healthy, by level.  An endpoint comes first with a chance in
        proportion to its weight (each gets the key ``u ** (1/weight)`` and
        the keys are sorted, Efraimidis and Spirakis' sampling without
        replacement), so a 90/10 policy between sources splits connections
        90/10: this forwarder is a data plane that weights, where
        kube-proxy is not."""
        choice = self.choices.get(service)
        if choice is None:
            return []
        keys = {id(c): random.random() ** (1.0 / max(c.weight, 1)) for c in choice.endpoints}
        first = sorted(choice.endpoints, key=lambda c: -keys[id(c)])
        chosen = {c.address for c in first}
        rest = []
        for endpoint_set in sorted(self.sets.get(service, []), key=lambda s: str(s.source)):
            for endpoint in endpoint_set.endpoints:
                if endpoint.ready and endpoint.address not in chosen and not endpoint_set.stale:
                    rest.append(Chosen(endpoint.address, str(endpoint_set.source), 1, endpoint))
        return first + rest

    def _target_port(self, chosen: Chosen, service: ServiceRef, port: int) -> int:
        """The endpoint port behind service ``port`` (same name, else the first)."""
        names = {p.port: p.name for s in self.sets.get(service, []) for p in s.ports}
        for candidate in chosen.endpoint.ports:
            if names.get(port) and candidate.name == names[port]:
                return candidate.port
        return chosen.endpoint.ports[0].port if chosen.endpoint.ports else port

    def _acceptor(
        self, service: ServiceRef, port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(self._forward(reader, writer, service, port))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return accept

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        service: ServiceRef,
        port: int,
    ) -> None:
        self.connections += 1
        try:
            for chosen in self.candidates(service):
                target = (chosen.address, self._target_port(chosen, service, port))
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        up_reader, up_writer = await asyncio.open_connection(*target)
                except (OSError, TimeoutError):
                    log.info(
                        "%s: %s:%d refused; trying the next endpoint",
                        service,
                        *target,
                        extra=fields(namespace=service.namespace, service=service.name),
                    )
                    continue
                await _pipe(reader, writer, up_reader, up_writer)
                return
            log.warning(
                "%s: no endpoint answered",
                service,
                extra=fields(namespace=service.namespace, service=service.name),
            )
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        self.bound.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except OSError:
            pass

    try:
        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
    finally:
        up_writer.close()
        with contextlib.suppress(OSError):
            await up_writer.wait_closed()
