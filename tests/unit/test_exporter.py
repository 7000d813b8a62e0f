"""The exporter's pure parts: endpoints from slices (flat and gateway) and
when to publish (first change at once, coalesced, no-ops skipped)."""

from __future__ import annotations

from agents.cluster.exporter import Exporter, Plan, Site, companion_service, endpoint_set_of
from federation.model import Locality, NetworkMode, ServiceRef

SITE = Locality(region="us-east", zone="a", cluster="east1")
SERVICE = {
    "metadata": {"name": "echo", "namespace": "demo"},
    "spec": {
        "selector": {"app": "echo"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    },
}
NODES = {
    f"n{i}": {
        "metadata": {"name": f"n{i}", "labels": {"topology.kubernetes.io/region": "us-east",
                                                  "topology.kubernetes.io/zone": f"z{i}"}},
        "status": {"addresses": [{"type": "InternalIP", "address": f"127.9.0.{i}"}]},
    }
    for i in (1, 2)
}  # fmt: skip
SLICE = {
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [
        {"addresses": ["127.9.1.2"], "nodeName": "n1", "conditions": {"ready": True}},
        {"addresses": ["127.9.2.2"], "nodeName": "n2", "conditions": {"ready": False}},
        {"addresses": ["127.9.1.3"], "nodeName": "n1", "conditions": {"ready": False,
                                                                      "terminating": True}},
    ],
}  # fmt: skip


def test_flat_mode_publishes_pod_ips_with_node_topology() -> None:
    site = Site("east1", SITE, NetworkMode.FLAT)
    endpoints, ports, _ = endpoint_set_of(site, SERVICE, [SLICE], NODES)
    assert [e.address for e in endpoints] == ["127.9.1.2", "127.9.1.3", "127.9.2.2"]
    assert [e.locality.zone for e in endpoints] == ["z1", "z1", "z2"]
    assert [e.healthy for e in endpoints] == [True, False, False]
    assert endpoints[0].ports[0].port == 8080 and ports[0].port == 80


def test_gateway_mode_publishes_node_address_times_node_port() -> None:
    site = Site("east1", SITE, NetworkMode.GATEWAY)
    companion = companion_service(SERVICE)
    assert companion["spec"]["type"] == "NodePort"
    assert companion["metadata"]["name"] == "echo-federation-gw"
    companion["spec"]["ports"][0]["nodePort"] = 30080  # as the API server allocates
    endpoints, _, _ = endpoint_set_of(site, SERVICE, [SLICE], NODES, companion)
    assert [(e.address, e.ports[0].port, e.ready) for e in endpoints] == [
        ("127.9.0.1", 30080, True),
        ("127.9.0.2", 30080, False),
    ]


def test_first_change_at_once_then_coalesced_and_no_op_skipped() -> None:
    now = [100.0]
    exporter = Exporter(
        Site("east1", SITE), window=0.5, monotonic=lambda: now[0], wall=lambda: 1.7e9
    )
    ref = ServiceRef(namespace="demo", name="echo")
    site = Site("east1", SITE)
    one = endpoint_set_of(site, SERVICE, [SLICE], NODES)
    plan = exporter.plan(ref, one)
    assert len(plan.publish) == 1 and not plan.withdraw and plan.wake is None
    exporter.published(plan.publish[0])
    assert exporter.plan(ref, one) == Plan()  # nothing changed: no publish
    two = endpoint_set_of(site, SERVICE, [{**SLICE, "endpoints": SLICE["endpoints"][:1]}], NODES)
    now[0] += 0.1
    plan = exporter.plan(ref, two)
    assert plan.publish == () and plan.wake is not None and abs(plan.wake - 0.4) < 1e-9
    now[0] += 0.4
    plan = exporter.plan(ref, two)
    assert len(plan.publish) == 1 and plan.publish[0].generation > 1
    exporter.published(plan.publish[0])
    assert exporter.plan(ref, None).withdraw  # the export went: withdraw
