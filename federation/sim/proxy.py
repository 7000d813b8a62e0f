"""The simulated kube-proxy: real TCP forwarding to a Service's endpoints.

It listens on every Service's cluster IP and port (and, for NodePort
Services, on every node address at the node port), and forwards each
accepted connection to one endpoint of the Service's EndpointSlices, round
robin.  Like kube-proxy it uses ready endpoints, falls back to endpoints that
are serving and terminating when none is ready, and refuses the connection
when there is nothing at all.  It reads the slices at connection time, so a
slice written by anyone (the EndpointSlice controller, or the federation
agent for a selector-less ``-global`` Service) takes effect on the next
connection.  Forwarding is per connection, not per packet: an open
connection stays on its endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass

from federation.sim.kube.objects import Obj
from federation.sim.kube.resources import ENDPOINT_SLICE, SERVICE
from federation.sim.local import LocalClient

SERVICE_NAME = "kubernetes.io/service-name"
CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class _Route:
    namespace: str
    service: str
    port_name: str


class KubeProxy:
    def __init__(self, client: LocalClient, node_ips: list[str]) -> None:
        self.client = client
        self.node_ips = node_ips
        self._listeners: dict[tuple[str, int], tuple[_Route, asyncio.Server]] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._turn = itertools.count()
        self.forwarded = 0
        self.refused = 0

    async def run(self) -> None:
        try:
            await self.client.follow(SERVICE, self._service_changed)
        finally:
            for _, server in self._listeners.values():
                server.close()
            self._listeners.clear()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _service_changed(self, kind: str, obj: Obj) -> None:
        await self._sync()

    async def _sync(self) -> None:
        wanted: dict[tuple[str, int], _Route] = {}
        for service in self.client.list(SERVICE):
            meta, spec = service["metadata"], service.get("spec", {})
            ip = spec.get("clusterIP")
            for port in spec.get("ports", []):
                if port.get("protocol", "TCP") != "TCP":
                    continue
                route = _Route(meta["namespace"], meta["name"], port.get("name", ""))
                if ip and ip != "None":
                    wanted[(ip, port["port"])] = route
                if port.get("nodePort"):
                    for node_ip in self.node_ips:
                        wanted[(node_ip, port["nodePort"])] = route
        for address in [a for a in self._listeners if wanted.get(a) != self._listeners[a][0]]:
            _, server = self._listeners.pop(address)
            server.close()
        for address, route in wanted.items():
            if address not in self._listeners:
                await self._listen(address, route)

    async def _listen(self, address: tuple[str, int], route: _Route) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(route, reader, writer)

        try:
            server = await asyncio.start_server(accept, address[0], address[1], reuse_address=True)
        except OSError as err:
            self.client.log.warning("kube-proxy cannot listen on %s:%d: %s", *address, err)
            return
        self._listeners[address] = (route, server)

    def endpoints(self, namespace: str, service: str, port_name: str) -> list[tuple[str, int]]:
        """Where a new connection may go: ready endpoints, else serving and
        terminating ones (kube-proxy's fallback)."""
        ready, fallback = [], []
        for slice_ in self.client.list(ENDPOINT_SLICE, namespace, f"{SERVICE_NAME}={service}"):
            port = next(
                (
                    p.get("port")
                    for p in slice_.get("ports") or []
                    if p.get("name", "") == port_name
                ),
                None,
            )
            if port is None:
                continue
            for endpoint in slice_.get("endpoints") or []:
                conditions = endpoint.get("conditions") or {}
                target = (endpoint["addresses"][0], int(port))
                if conditions.get("ready") is not False:  # unset means ready
                    ready.append(target)
                elif conditions.get("serving") and conditions.get("terminating"):
                    fallback.append(target)
        return sorted(ready or fallback)

    async def _forward(
        self, route: _Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            targets = self.endpoints(route.namespace, route.service, route.port_name)
            if not targets:  # like kube-proxy's REJECT: the client sees a reset
                self.refused += 1
                writer.transport.abort()
                return
            host, port = targets[next(self._turn) % len(targets)]
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                self.refused += 1
                return
            upstream = up_writer
            self.forwarded += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._connections.discard(task)
            for w in (upstream, writer):
                if w is not None:
                    w.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            sink.close()
