"""A DNS server for the ``clusterset.local`` zone (KEP-1645's DNS
specification), over real UDP and TCP, built on dnslib.  What it answers
comes from a ``records`` function of the name's labels before the zone and
the query type: a list of records, [] for a name without records of that
type, None for no such name.  A simulated cluster answers from its
ServiceImports (``federation.sim.dns``); a VM agent from its forwarders
(``agents.vm.resolver``).  Anything else under the zone is NXDOMAIN; a name
outside it is REFUSED (it is not a recursive resolver)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSError, DNSRecord

log = logging.getLogger(__name__)

ZONE = ("svc", "clusterset", "local")
TTL = 5
Records = Callable[[tuple[str, ...], int], "list[RR] | None"]


def fqdn(*labels: str) -> str:
    return ".".join((*labels, *ZONE)) + "."


def wanted(ip: str, qtype: int) -> bool:
    version = ipaddress.ip_address(ip).version
    return (
        qtype == QTYPE.ANY
        or (qtype == QTYPE.A and version == 4)
        or (qtype == QTYPE.AAAA and version == 6)
    )


def addresses(name: str, ips: list[str], qtype: int) -> list[RR]:
    """A/AAAA records of ``ips`` that ``qtype`` asks for."""
    out = []
    for ip in ips:
        if not wanted(ip, qtype):
            continue
        if ipaddress.ip_address(ip).version == 4:
            out.append(RR(name, QTYPE.A, rdata=A(ip), ttl=TTL))
        else:
            out.append(RR(name, QTYPE.AAAA, rdata=AAAA(ip), ttl=TTL))
    return out


def service_records(name: str, port: int, target: str) -> RR:
    return RR(name, QTYPE.SRV, ttl=TTL, rdata=SRV(priority=0, weight=100, port=port, target=target))


class ClusterSetServer:
    def __init__(self, records: Records, host: str, port: int = 53) -> None:
        self.records = records
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


def _format_error(raw: bytes) -> bytes:
    """FORMERR for a message we cannot parse, echoing its id if it has one."""
    ident = raw[:2] if len(raw) >= 2 else b"\0\0"
    flags = 0x8000 | RCODE.FORMERR  # a response, FORMERR
    return ident + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterSetServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.server.answer(data), addr)


__all__ = [
    "TTL", "ZONE", "ClusterSetServer", "Records", "addresses", "fqdn", "service_records", "wanted",
]  # fmt: skip
