"""The VM's own ``clusterset.local`` resolver: the same names a cluster's
DNS answers, pointing at this VM's forwarders.

``<svc>.<ns>.svc.clusterset.local`` is the loopback address the forwarder
listens on for that service (or the pinned host), and
``_<port>._<proto>.<svc>.<ns>.svc.clusterset.local`` gives the port it
listens on (the service's own, or +15000 where it may not bind below 1024).
Point the VM's resolver at it for the zone (systemd-resolved: ``DNS=`` and
``Domains=~clusterset.local``), or use the ``hosts`` snippet instead."""

from __future__ import annotations

from dnslib import QTYPE, RR

from agents.vm.forwarder import Forwarder
from federation.model import ServiceRef
from federation.shared.clusterset import ClusterSetServer, addresses, fqdn, service_records


class VMResolver(ClusterSetServer):
    def __init__(self, forwarder: Forwarder, host: str, port: int = 53) -> None:
        super().__init__(self._records, host, port)
        self.forwarder = forwarder

    def _known(self, service: str, namespace: str) -> ServiceRef | None:
        for ref in self.forwarder.sets:
            if (ref.name, ref.namespace) == (service, namespace):
                return ref
        return None

    def _records(self, name: tuple[str, ...], qtype: int) -> list[RR] | None:
        if len(name) == 2:
            ref = self._known(*name)
            if ref is None:
                return None
            hosts = sorted({host for (s, _), (host, _) in self.forwarder.bound.items() if s == ref})
            return addresses(fqdn(*name), hosts, qtype)
        if len(name) == 4 and name[0].startswith("_") and name[1].startswith("_"):
            port_name, protocol, service, namespace = name[0][1:], name[1][1:], name[2], name[3]
            ref = self._known(service, namespace)
            if ref is None or protocol != "tcp":  # the forwarder carries TCP
                return None
            named = {p.port: p.name for s in self.forwarder.sets.get(ref, []) for p in s.ports}
            listening = [
                listen
                for (s, port), (_, listen) in sorted(self.forwarder.bound.items(), key=str)
                if s == ref and named.get(port, "") == port_name
            ]
            if not listening:
                return None
            if qtype not in (QTYPE.SRV, QTYPE.ANY):
                return []
            target = fqdn(service, namespace)
            return [service_records(fqdn(*name), port, target) for port in listening]
        return None


__all__ = ["VMResolver"]
