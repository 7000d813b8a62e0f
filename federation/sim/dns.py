"""``clusterset.local`` DNS for a simulated cluster, from its ServiceImports.

What CoreDNS's ``multicluster`` plugin answers in a real cluster (KEP-1645's
DNS specification), served over real UDP and TCP on a loopback address:

- ``<svc>.<ns>.svc.clusterset.local`` A/AAAA: the ServiceImport's
  ``spec.ips`` for a ClusterSetIP import; for a Headless one, every ready
  endpoint of its MCS EndpointSlices;
- ``_<port>._<proto>.<svc>.<ns>.svc.clusterset.local`` SRV: each named port,
  pointing at the service name;
- ``<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local``: a headless
  endpoint by the hostname its slice gives it.

Anything else under the zone is NXDOMAIN; a name outside it is REFUSED (it
is not a recursive resolver).  Messages are built with dnslib."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from typing import Any, cast

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSError, DNSRecord

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import ResourceType
from federation.sim.kube.resources import ENDPOINT_SLICE
from federation.sim.local import LocalClient

log = logging.getLogger(__name__)

ZONE = ("svc", "clusterset", "local")
TTL = 5
MCS_SERVICE_NAME = "multicluster.kubernetes.io/service-name"
MCS_SOURCE_CLUSTER = "multicluster.kubernetes.io/source-cluster"


class ClusterSetDNS:
    def __init__(self, client: LocalClient, host: str, port: int = 53) -> None:
        self.client = client
        self.host = host
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        """Listen on ``host:port``; where port 53 is not ours to bind
        (no privilege), on a free port instead (``address`` says which)."""
        loop = asyncio.get_running_loop()
        try:
            self._tcp = await asyncio.start_server(self._stream, self.host, self.port)
        except (PermissionError, OSError) as err:
            if self.port == 0:
                raise
            log.info("cannot listen on %s:%d (%s); taking a free port", self.host, self.port, err)
            self._tcp = await asyncio.start_server(self._stream, self.host, 0)
        self.port = int(self._tcp.sockets[0].getsockname()[1])
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.host, self.port)
        )
        self._udp = transport

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                answer = self.answer(await reader.readexactly(size))
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, raw: bytes) -> bytes:
        try:
            query = DNSRecord.parse(raw)
        except DNSError:
            return _format_error(raw)
        reply = query.reply()
        reply.header.aa = 1
        reply.header.ra = 0
        for question in query.questions:
            labels = tuple(str(question.qname).lower().rstrip(".").split("."))
            if labels[-3:] != ZONE:
                reply.header.rcode = RCODE.REFUSED
                reply.header.aa = 0
                continue
            found = self.records(labels[:-3], question.qtype)
            if found is None:
                reply.header.rcode = RCODE.NXDOMAIN
                continue
            for rr in found:
                reply.add_answer(rr)
        return bytes(reply.pack())

    def records(self, name: tuple[str, ...], qtype: int) -> list[RR] | None:
        """The answers for ``name`` (labels before the zone), [] for a name
        that exists without records of ``qtype``, None for no such name."""
        fqdn = ".".join((*name, *ZONE)) + "."
        if len(name) == 2:
            service, namespace = name
            found = self._import(namespace, service)
            if found is None:
                return None
            return [_address(fqdn, ip) for ip in self._addresses(found, namespace, service)
                    if _wanted(ip, qtype)]  # fmt: skip
        if len(name) == 4 and name[0].startswith("_") and name[1].startswith("_"):
            port_name, protocol, service, namespace = name[0][1:], name[1][1:], name[2], name[3]
            found = self._import(namespace, service)
            if found is None:
                return None
            target = f"{service}.{namespace}.{'.'.join(ZONE)}."
            ports = [
                p
                for p in found.get("spec", {}).get("ports") or []
                if (p.get("name") or "") == port_name
                and str(p.get("protocol") or "TCP").lower() == protocol
            ]
            if not ports:
                return None
            if qtype not in (QTYPE.SRV, QTYPE.ANY):
                return []  # the name exists; it has no records of that type
            return [
                RR(fqdn, QTYPE.SRV, ttl=TTL,
                   rdata=SRV(priority=0, weight=100, port=int(p["port"]), target=target))
                for p in ports
            ]  # fmt: skip
        if len(name) == 4:
            hostname, cluster, service, namespace = name
            found = self._import(namespace, service)
            if found is None or found.get("spec", {}).get("type") != "Headless":
                return None
            ips = [
                ip
                for endpoint in self._endpoints(namespace, service, cluster)
                if (endpoint.get("hostname") or "").lower() == hostname
                for ip in endpoint.get("addresses") or []
            ]
            if not ips:
                return None
            return [_address(fqdn, ip) for ip in ips if _wanted(ip, qtype)]
        return None

    def _import(self, namespace: str, name: str) -> dict[str, Any] | None:
        rt = self._service_imports()
        return None if rt is None else self.client.get(rt, namespace, name)

    def _service_imports(self) -> ResourceType | None:
        try:
            return self.client.api.types.find("multicluster.x-k8s.io", "v1alpha1", "serviceimports")
        except KubeError:
            return None  # the MCS CRDs are not installed: no imports

    def _addresses(self, found: dict[str, Any], namespace: str, service: str) -> list[str]:
        spec = found.get("spec", {})
        if spec.get("type") != "Headless":
            return [str(ip) for ip in spec.get("ips") or []]
        return sorted(
            {
                ip
                for endpoint in self._endpoints(namespace, service)
                if (endpoint.get("conditions") or {}).get("ready", True) is not False
                for ip in endpoint.get("addresses") or []
            }
        )

    def _endpoints(
        self, namespace: str, service: str, cluster: str | None = None
    ) -> list[dict[str, Any]]:
        selector = f"{MCS_SERVICE_NAME}={service}"
        if cluster is not None:
            selector += f",{MCS_SOURCE_CLUSTER}={cluster}"
        return [
            e
            for s in self.client.list(ENDPOINT_SLICE, namespace, selector)
            for e in s.get("endpoints") or []
        ]


def _wanted(ip: str, qtype: int) -> bool:
    version = ipaddress.ip_address(ip).version
    return (
        qtype == QTYPE.ANY
        or (qtype == QTYPE.A and version == 4)
        or (qtype == QTYPE.AAAA and version == 6)
    )


def _address(fqdn: str, ip: str) -> RR:
    if ipaddress.ip_address(ip).version == 4:
        return RR(fqdn, QTYPE.A, rdata=A(ip), ttl=TTL)
    return RR(fqdn, QTYPE.AAAA, rdata=AAAA(ip), ttl=TTL)


def _format_error(raw: bytes) -> bytes:
    """FORMERR for a message we cannot parse, echoing its id if it has one."""
    ident = raw[:2] if len(raw) >= 2 else b"\0\0"
    flags = 0x8000 | RCODE.FORMERR  # a response, FORMERR
    return ident + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterSetDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.server.answer(data), addr)


__all__ = ["ZONE", "ClusterSetDNS"]
