"""``clusterset.local`` on simulated clusters: each cluster's DNS server
(real UDP and TCP, on its loopback block) answers from its ServiceImports;
a real resolver library resolves the names, and a client connects through
them."""

from __future__ import annotations

import json
from pathlib import Path

import dns.asyncquery
import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from agents.cluster.kube import ENDPOINT_SLICES, SERVICE_IMPORTS, SERVICES
from federation.sim import echo
from federation.sim.world import World
from tests.integration.test_cluster_agent import NS, echo_world, kill_all, routed_to
from tests.support import eventually

NAME = f"echo.{NS}.svc.clusterset.local"


def resolver(world: World, cluster: str) -> dns.asyncresolver.Resolver:
    host, port = world.sim(cluster).dns.address
    made = dns.asyncresolver.Resolver(configure=False)
    made.nameservers = [host]
    made.port = port
    made.lifetime = 2.0
    return made


async def import_ips(world: World, cluster: str) -> list[str]:
    kube = world.members[cluster].kube
    assert kube is not None
    found = await kube.get(SERVICE_IMPORTS, NS, "echo")
    return list((found or {}).get("spec", {}).get("ips") or [])


async def test_the_name_resolves_over_udp_and_tcp_and_a_client_connects(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        await routed_to(world, "east1", "east1")
        await eventually(lambda: import_ips(world, "east1"), what="ServiceImport ips")
        ips = await import_ips(world, "east1")
        answer = await resolver(world, "east1").resolve(NAME, "A")
        assert [r.address for r in answer] == ips
        assert answer.rrset is not None and answer.rrset.ttl == 5
        srv = await resolver(world, "east1").resolve(f"_http._tcp.{NAME}", "SRV")
        (record,) = list(srv)
        assert str(record.target) == NAME + "."
        host, port = world.sim("east1").dns.address
        over_tcp = await dns.asyncquery.tcp(dns.message.make_query(NAME, "A"), host, port=port,
                                            timeout=2.0)  # fmt: skip
        assert [r.address for r in over_tcp.answer[0]] == ips

        status, body = await echo.request(ips[0], int(record.port))
        assert status == 200 and json.loads(body)["cluster"] == "east1"
        await kill_all(world, "east1")  # the name stays; what is behind it fails over
        await routed_to(world, "east1", "east2")
        status, body = await echo.request(ips[0], int(record.port))
        assert status == 200 and json.loads(body)["cluster"] == "east2"


async def test_unknown_names_are_nxdomain_and_other_zones_refused(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        await routed_to(world, "west", "west")
        with pytest.raises(dns.resolver.NXDOMAIN):
            await resolver(world, "west").resolve(f"nothing.{NS}.svc.clusterset.local", "A")
        host, port = world.sim("west").dns.address
        refused = await dns.asyncquery.udp(dns.message.make_query("example.com", "A"), host,
                                           port=port, timeout=2.0)  # fmt: skip
        assert refused.rcode() == dns.rcode.REFUSED
        await eventually(lambda: import_ips(world, "west"), what="ServiceImport ips")
        with pytest.raises(dns.resolver.NoAnswer):  # the name exists, without AAAA
            await resolver(world, "west").resolve(NAME, "AAAA")


async def test_a_headless_export_answers_per_endpoint_and_per_hostname(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        kube = world.members["east1"].kube
        assert kube is not None
        await kube.create(SERVICES, NS, {
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
        })  # fmt: skip
        await kube.create(ENDPOINT_SLICES, NS, {
            "metadata": {"name": "db-pods", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.1.1.20"], "hostname": "db-0", "conditions": {"ready": True}},
                {"addresses": ["127.1.1.21"], "hostname": "db-1", "conditions": {"ready": True}},
            ],
        })  # fmt: skip
        await world.export("east1", NS, "db")
        west = world.members["west"].kube
        assert west is not None

        async def headless() -> bool:
            found = await west.get(SERVICE_IMPORTS, NS, "db")
            return bool(found) and found["spec"]["type"] == "Headless"

        await eventually(headless, what="west importing db as Headless")
        name = f"db.{NS}.svc.clusterset.local"

        async def resolved() -> list[str]:
            try:
                answer = await resolver(world, "west").resolve(name, "A")
            except dns.resolver.NXDOMAIN:
                return []
            return sorted(r.address for r in answer)

        await eventually(lambda: resolved(), what="db's endpoints in west's DNS")
        assert await resolved() == ["127.1.1.20", "127.1.1.21"]
        pod = await resolver(world, "west").resolve(f"db-1.east1.{name}", "A")
        assert [r.address for r in pod] == ["127.1.1.21"]
        with pytest.raises(dns.resolver.NXDOMAIN):
            await resolver(world, "west").resolve(f"db-9.east1.{name}", "A")
