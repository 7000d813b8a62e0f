"""A simulated cluster moves real TCP traffic: kubelet probes real backends,
the EndpointSlice controller follows the probes, kube-proxy forwards to
ready endpoints, including for selector-less Services whose slices someone
else writes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from federation.sim import echo
from federation.sim.cluster import SimCluster
from federation.sim.kube.resources import ENDPOINT_SLICE, EVENT, NODE, POD, SERVICE
from tests.support import eventually

NS = "shop"


@pytest.fixture
async def east() -> AsyncIterator[SimCluster]:
    async with SimCluster(
        "east", index=21, region="eu", zones=("eu-1a", "eu-1b"), probe_period=0.05
    ) as cluster:
        yield cluster


def conditions(cluster: SimCluster, service: str) -> dict[str, dict[str, Any]]:
    """pod name -> endpoint conditions, from the service's slices."""
    out = {}
    for slice_ in cluster.client.list(ENDPOINT_SLICE, NS, f"kubernetes.io/service-name={service}"):
        for endpoint in slice_.get("endpoints") or []:
            out[endpoint["targetRef"]["name"]] = endpoint["conditions"] | {
                "zone": endpoint.get("zone")
            }
    return out


async def served_by(host: str, port: int, count: int) -> list[str]:
    pods = []
    for _ in range(count):
        status, body = await echo.request(host, port)
        assert status == 200
        pods.append(json.loads(body)["pod"])
    return pods


async def all_ready(cluster: SimCluster, service: str, pods: set[str]) -> bool:
    now = conditions(cluster, service)
    return set(now) == pods and all(c["ready"] for c in now.values())


async def test_nodes_carry_addresses_and_topology(east: SimCluster) -> None:
    nodes = east.client.list(NODE)
    assert [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes] == [
        "eu-1a",
        "eu-1b",
    ]
    assert {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in nodes} == {"eu"}
    assert nodes[0]["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.21.0.1"}


async def test_traffic_follows_readiness_probes(east: SimCluster) -> None:
    east.run_echo(NS, "echo", replicas=2)
    await eventually(lambda: all_ready(east, "echo", {"echo-0", "echo-1"}), what="both ready")
    zones = {name: c["zone"] for name, c in conditions(east, "echo").items()}
    assert zones == {"echo-0": "eu-1a", "echo-1": "eu-1b"}
    host, port = east.service_address(NS, "echo")
    assert host.startswith("127.21.24")
    assert set(await served_by(host, port, 4)) == {"echo-0", "echo-1"}

    await east.kill_backend(NS, "echo-0")

    async def only_one_ready() -> bool:
        now = conditions(east, "echo")
        return not now["echo-0"]["ready"] and now["echo-1"]["ready"]

    await eventually(only_one_ready, what="echo-0 not ready")
    pod = east.client.get(POD, NS, "echo-0")
    assert pod is not None
    ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "False"
    assert set(await served_by(host, port, 4)) == {"echo-1"}

    await east.revive_backend(NS, "echo-0")
    await eventually(lambda: all_ready(east, "echo", {"echo-0", "echo-1"}), what="echo-0 back")
    assert set(await served_by(host, port, 4)) == {"echo-0", "echo-1"}


async def test_no_ready_endpoint_means_the_connection_is_refused(east: SimCluster) -> None:
    east.run_echo(NS, "echo", replicas=1)
    await eventually(lambda: all_ready(east, "echo", {"echo-0"}), what="ready")
    await east.kill_backend(NS, "echo-0")
    await eventually(lambda: not conditions(east, "echo")["echo-0"]["ready"], what="not ready")
    host, port = east.service_address(NS, "echo")
    with pytest.raises((ConnectionError, OSError)):
        await echo.request(host, port)


async def test_deleted_pod_terminates_then_goes(east: SimCluster) -> None:
    east.run_echo(NS, "echo", replicas=1)
    await eventually(lambda: all_ready(east, "echo", {"echo-0"}), what="ready")
    east.delete_pod(NS, "echo-0")
    await eventually(
        lambda: conditions(east, "echo").get("echo-0", {}).get("terminating") is True,
        what="terminating",
    )
    endpoint = conditions(east, "echo")["echo-0"]
    assert endpoint["ready"] is False and endpoint["serving"] is True
    host, port = east.service_address(NS, "echo")
    assert await served_by(host, port, 1) == ["echo-0"]  # serving+terminating fallback
    await eventually(lambda: east.client.get(POD, NS, "echo-0") is None, what="pod gone")
    await eventually(lambda: conditions(east, "echo") == {}, what="endpoint gone")


async def test_selectorless_service_forwards_to_slices_written_by_others(
    east: SimCluster,
) -> None:
    async with SimCluster("west", index=22, region="us", probe_period=0.05) as west:
        west.run_echo(NS, "echo", replicas=1)
        await eventually(lambda: all_ready(west, "echo", {"echo-0"}), what="west ready")
        remote = west.client.get(POD, NS, "echo-0")
        assert remote is not None
        east.ensure_namespace(NS)
        east.client.create(
            SERVICE,
            NS,
            {
                "metadata": {"name": "echo-global"},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            },
        )
        east.client.create(
            ENDPOINT_SLICE,
            NS,
            {
                "metadata": {
                    "name": "echo-global-west",
                    "labels": {"kubernetes.io/service-name": "echo-global"},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [remote["status"]["podIP"]], "conditions": {"ready": True}}
                ],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
        )
        host, port = east.service_address(NS, "echo-global")

        async def answered() -> bool:
            try:
                return await served_by(host, port, 1) == ["echo-0"]
            except OSError:
                return False

        await eventually(answered, what="forwarded to west")
        _, body = await echo.request(host, port)
        assert json.loads(body) == {"pod": "echo-0", "cluster": "west"}


async def test_node_ports_listen_on_every_node(east: SimCluster) -> None:
    east.run_echo(NS, "echo", replicas=1)
    service = east.client.get(SERVICE, NS, "echo")
    assert service is not None
    service["spec"]["type"] = "NodePort"
    service = east.client.update(SERVICE, service)
    node_port = service["spec"]["ports"][0]["nodePort"]
    await eventually(lambda: all_ready(east, "echo", {"echo-0"}), what="ready")

    async def through(node_ip: str) -> bool:
        try:
            return await served_by(node_ip, node_port, 1) == ["echo-0"]
        except OSError:
            return False

    for node_ip in ("127.21.0.1", "127.21.0.2"):
        await eventually(lambda ip=node_ip: through(ip), what=f"node port on {node_ip}")


async def test_backends_can_be_real_processes() -> None:
    async with SimCluster(
        "proc", index=23, region="eu", probe_period=0.05, process_pods=True
    ) as cluster:
        cluster.run_echo(NS, "echo", replicas=1)
        await eventually(lambda: all_ready(cluster, "echo", {"echo-0"}), timeout=15, what="ready")
        backend = cluster.kubelet.pods[(NS, "echo-0")].backend
        assert backend is not None and getattr(backend, "process", None) is not None
        await cluster.kill_backend(NS, "echo-0")
        await eventually(
            lambda: not conditions(cluster, "echo")["echo-0"]["ready"], what="not ready"
        )


async def test_unreachable_through_the_admin_endpoint(east: SimCluster) -> None:
    east.run_echo(NS, "echo", replicas=1)
    await eventually(lambda: all_ready(east, "echo", {"echo-0"}), what="ready")
    ssl_ctx = False
    async with aiohttp.ClientSession() as http:
        faults = f"{east.url}/_sim/faults"
        headers = {"Authorization": f"Bearer {east.api.token}"}
        async with http.post(faults, json={"unreachable": True}, ssl=ssl_ctx) as answer:
            assert (await answer.json())["unreachable"] is True
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{east.url}/api/v1/namespaces", headers=headers, ssl=ssl_ctx):
                pass
        # The data plane is not the API server: traffic still flows.
        host, port = east.service_address(NS, "echo")
        assert await served_by(host, port, 1) == ["echo-0"]
        async with http.post(faults, json={"unreachable": False}, ssl=ssl_ctx) as answer:
            assert (await answer.json())["unreachable"] is False
        async with http.get(
            f"{east.url}/api/v1/namespaces", headers=headers, ssl=ssl_ctx
        ) as answer:
            assert answer.status == 200


async def test_the_kubelet_records_the_events_a_real_one_records(east: SimCluster) -> None:
    def reasons(pod: str) -> list[str]:
        return [
            e["reason"]
            for e in east.client.list(EVENT, NS)
            if e["involvedObject"]["name"] == pod and e["involvedObject"]["kind"] == "Pod"
        ]

    east.run_echo(NS, "echo", replicas=1)
    await eventually(lambda: all_ready(east, "echo", {"echo-0"}), what="ready")
    assert "Started" in reasons("echo-0")  # run_echo binds its pods: no Scheduled, as in kube
    await east.kill_backend(NS, "echo-0")
    await eventually(lambda: "Unhealthy" in reasons("echo-0"), what="an Unhealthy event")
    east.delete_pod(NS, "echo-0")
    await eventually(lambda: "Killing" in reasons("echo-0"), what="a Killing event")
    unhealthy = next(e for e in east.client.list(EVENT, NS) if e["reason"] == "Unhealthy")
    assert unhealthy["type"] == "Warning" and unhealthy["source"]["component"] == "kubelet"
