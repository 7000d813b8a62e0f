"""What the agents rely on from a Kubernetes API server.

Written against kubernetes_asyncio only, so it passes unchanged against the
emulator and against a real cluster (FEDERATION_TEST_KUBECONFIG).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from typing import Any

import pytest
from kubernetes_asyncio import client, watch

from agents.cluster.crds import MCS_CRDS
from tests.contract.kube.conftest import Kube


def service(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def endpoint_slice(name: str, service_name: str, address: str = "10.1.2.3") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


async def expect_status(code: int, call: Any) -> client.ApiException:
    with pytest.raises(client.ApiException) as caught:
        await call
    assert caught.value.status == code, caught.value.body
    return caught.value


async def test_create_sets_server_metadata(kube: Kube) -> None:
    created = await kube.core.create_namespaced_service(kube.namespace, service("echo"))
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and meta.resource_version
    assert meta.namespace == kube.namespace
    fetched = await kube.core.read_namespaced_service("echo", kube.namespace)
    assert fetched.metadata.uid == meta.uid


async def test_errors_are_status_objects_with_real_codes(kube: Kube) -> None:
    await expect_status(404, kube.core.read_namespaced_service("absent", kube.namespace))
    await kube.core.create_namespaced_service(kube.namespace, service("echo"))
    exists = await expect_status(
        409, kube.core.create_namespaced_service(kube.namespace, service("echo"))
    )
    assert '"reason":"AlreadyExists"' in exists.body.replace(" ", "")
    await expect_status(
        404, kube.core.create_namespaced_service("no-such-namespace-x", service("echo"))
    )


async def test_stale_resource_version_update_conflicts(kube: Kube) -> None:
    created = await kube.core.create_namespaced_service(kube.namespace, service("echo"))
    body = created.to_dict()
    first = await kube.core.patch_namespaced_service(
        "echo", kube.namespace, {"metadata": {"labels": {"a": "1"}}}
    )
    assert first.metadata.resource_version != created.metadata.resource_version
    stale = client.V1Service(
        metadata=client.V1ObjectMeta(
            name="echo", resource_version=body["metadata"]["resource_version"], labels={"b": "2"}
        ),
        spec=created.spec,
    )
    conflict = await expect_status(
        409, kube.core.replace_namespaced_service("echo", kube.namespace, stale)
    )
    assert "Conflict" in conflict.body


async def test_generate_name(kube: Kube) -> None:
    body = endpoint_slice("", "echo")
    body["metadata"] = {"generateName": "echo-", "labels": body["metadata"]["labels"]}
    created = await kube.discovery.create_namespaced_endpoint_slice(kube.namespace, body)
    assert created.metadata.name.startswith("echo-") and len(created.metadata.name) > len("echo-")


async def test_label_and_field_selectors(kube: Kube) -> None:
    for name, tier in [("a", "web"), ("b", "web"), ("c", "db")]:
        await kube.core.create_namespaced_service(
            kube.namespace, service(name, {"tier": tier, "app": name})
        )
    web = await kube.core.list_namespaced_service(kube.namespace, label_selector="tier=web")
    assert sorted(s.metadata.name for s in web.items) == ["a", "b"]
    not_web = await kube.core.list_namespaced_service(kube.namespace, label_selector="tier!=web")
    assert [s.metadata.name for s in not_web.items] == ["c"]
    in_set = await kube.core.list_namespaced_service(
        kube.namespace, label_selector="app in (a,c),tier"
    )
    assert sorted(s.metadata.name for s in in_set.items) == ["a", "c"]
    by_name = await kube.core.list_namespaced_service(
        kube.namespace, field_selector="metadata.name=b"
    )
    assert [s.metadata.name for s in by_name.items] == ["b"]


async def test_list_pages_with_limit_and_continue(kube: Kube) -> None:
    for i in range(5):
        await kube.core.create_namespaced_config_map(
            kube.namespace, {"metadata": {"name": f"cm-{i}", "labels": {"page": "yes"}}}
        )
    seen: list[str] = []
    token = None
    while True:
        page = await kube.core.list_namespaced_config_map(
            kube.namespace, label_selector="page=yes", limit=2, _continue=token
        )
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert len(page.items) == 2
    assert sorted(seen) == [f"cm-{i}" for i in range(5)]


async def test_watch_from_a_resource_version_sees_later_changes_in_order(kube: Kube) -> None:
    listed = await kube.discovery.list_namespaced_endpoint_slice(kube.namespace)
    since = listed.metadata.resource_version
    await kube.discovery.create_namespaced_endpoint_slice(
        kube.namespace, endpoint_slice("echo-1", "echo")
    )
    await kube.discovery.patch_namespaced_endpoint_slice(
        "echo-1", kube.namespace, {"metadata": {"labels": {"x": "y"}}}
    )
    await kube.discovery.delete_namespaced_endpoint_slice("echo-1", kube.namespace)
    seen = []
    stream = watch.Watch()
    async with asyncio.timeout(20):
        async for event in stream.stream(
            kube.discovery.list_namespaced_endpoint_slice,
            kube.namespace,
            resource_version=since,
            timeout_seconds=10,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                break
    stream.stop()
    assert seen == [("ADDED", "echo-1"), ("MODIFIED", "echo-1"), ("DELETED", "echo-1")]


async def test_watch_from_a_compacted_resource_version_is_gone(kube: Kube) -> None:
    stream = watch.Watch()
    with pytest.raises(client.ApiException) as caught:
        async with asyncio.timeout(20):
            async for _ in stream.stream(
                kube.core.list_namespaced_service,
                kube.namespace,
                resource_version="1",
                timeout_seconds=5,
            ):
                pass
    stream.stop()
    assert caught.value.status == 410


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(addressType="IPv5"), "addressType"),
        (lambda s: s["endpoints"][0].update(addresses=["10.0.0.300"]), "endpoints[0].addresses[0]"),
        (lambda s: s["ports"][0].update(name="HTTP_PORT"), "ports[0].name"),
        (lambda s: s["metadata"]["labels"].update(bad="has space"), "metadata.labels"),
    ],
)
async def test_invalid_endpoint_slices_are_422(kube: Kube, mutate: Any, field: str) -> None:
    body = endpoint_slice("echo-bad", "echo")
    mutate(body)
    error = await expect_status(
        422, kube.discovery.create_namespaced_endpoint_slice(kube.namespace, body)
    )
    assert field.split("[")[0] in error.body
    await expect_status(
        404, kube.discovery.read_namespaced_endpoint_slice("echo-bad", kube.namespace)
    )


@pytest.mark.parametrize(
    ("family", "address", "why"),
    [
        ("IPv4", "127.0.0.1", "loopback"),
        ("IPv4", "127.9.8.7", "loopback"),
        ("IPv6", "::1", "loopback"),
        ("IPv4", "169.254.10.5", "link-local range"),
        ("IPv6", "fe80::1", "link-local range"),
        ("IPv4", "0.0.0.0", "unspecified"),
        ("IPv6", "::", "unspecified"),
        ("IPv4", "224.0.0.251", "link-local multicast"),
        ("IPv6", "ff02::1", "link-local multicast"),
    ],
)
async def test_endpoint_slices_refuse_special_addresses(
    kube: Kube, family: str, address: str, why: str
) -> None:
    """kube-apiserver's ValidateNonSpecialIP, at the address's own field path;
    a routable address in the same slice is refused with it."""
    body = endpoint_slice("echo-special", "echo")
    body["addressType"] = family
    good = "10.1.2.3" if family == "IPv4" else "fd00::3"
    body["endpoints"] = [
        {"addresses": [good], "conditions": {"ready": True}},
        {"addresses": [address], "conditions": {"ready": True}},
    ]
    error = await expect_status(
        422, kube.discovery.create_namespaced_endpoint_slice(kube.namespace, body)
    )
    assert "endpoints[1].addresses[0]" in error.body
    assert why in error.body
    await expect_status(
        404, kube.discovery.read_namespaced_endpoint_slice("echo-special", kube.namespace)
    )
    body["endpoints"] = body["endpoints"][:1]
    created = await kube.discovery.create_namespaced_endpoint_slice(kube.namespace, body)
    assert created.endpoints[0].addresses == [good]


async def test_patch_types(kube: Kube) -> None:
    await kube.core.create_namespaced_config_map(
        kube.namespace, {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}}
    )
    merged = await kube.core.patch_namespaced_config_map(
        "cfg", kube.namespace, {"data": {"a": None, "c": "3"}}
    )
    assert merged.data == {"b": "2", "c": "3"}
    operations = [
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "add", "path": "/data/d", "value": "4"},
    ]  # a list body goes out as application/json-patch+json
    patched = await kube.core.patch_namespaced_config_map("cfg", kube.namespace, operations)
    assert patched.data == {"b": "20", "c": "3", "d": "4"}


async def test_finalizers_hold_deletion_until_removed(kube: Kube) -> None:
    body = {"metadata": {"name": "held", "finalizers": ["federation.io/test"]}, "data": {"k": "v"}}
    await kube.core.create_namespaced_config_map(kube.namespace, body)
    await kube.core.delete_namespaced_config_map("held", kube.namespace)
    pending = await kube.core.read_namespaced_config_map("held", kube.namespace)
    assert pending.metadata.deletion_timestamp is not None
    await kube.core.patch_namespaced_config_map(
        "held", kube.namespace, {"metadata": {"finalizers": None}}
    )
    await expect_status(404, kube.core.read_namespaced_config_map("held", kube.namespace))


async def test_leases_for_leader_election(kube: Kube) -> None:
    coordination = client.CoordinationV1Api(kube.api)
    lease = await coordination.create_namespaced_lease(
        kube.namespace,
        {
            "metadata": {"name": "agent"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    lease.spec.holder_identity = "b"
    renewed = await coordination.replace_namespaced_lease("agent", kube.namespace, lease)
    assert renewed.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # still carries the old resourceVersion
    await expect_status(409, coordination.replace_namespaced_lease("agent", kube.namespace, lease))


async def test_services_get_cluster_ips_and_node_ports_that_stick(kube: Kube) -> None:
    created = await kube.core.create_namespaced_service(kube.namespace, service("ip"))
    ip = created.spec.cluster_ip
    assert ip and created.spec.cluster_ips == [ip]
    assert created.spec.ports[0].protocol == "TCP"
    taken = service("copy")
    taken["spec"]["clusterIP"] = ip
    await expect_status(422, kube.core.create_namespaced_service(kube.namespace, taken))

    # A replace that leaves the IP out keeps it; one that changes it is refused.
    current = await kube.core.read_namespaced_service("ip", kube.namespace)
    body = service("ip", {"v": "2"})
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    replaced = await kube.core.replace_namespaced_service("ip", kube.namespace, body)
    assert replaced.spec.cluster_ip == ip
    await expect_status(
        422,
        kube.core.patch_namespaced_service(
            "ip", kube.namespace, {"spec": {"clusterIP": "10.255.255.254"}}
        ),
    )

    # NodePort: a port from 30000-32767, kept across a patch.
    node_port = service("np")
    node_port["spec"]["type"] = "NodePort"
    created = await kube.core.create_namespaced_service(kube.namespace, node_port)
    allocated = created.spec.ports[0].node_port
    assert 30000 <= allocated <= 32767
    patched = await kube.core.patch_namespaced_service(
        "np", kube.namespace, {"metadata": {"labels": {"x": "y"}}}
    )
    assert patched.spec.ports[0].node_port == allocated


async def served_crd(kube: Kube, definition: dict[str, Any]) -> None:
    """Install ``definition`` unless it is (a real cluster may have the
    upstream MCS CRDs already), and wait until its kind is served."""
    extensions = client.ApiextensionsV1Api(kube.api)
    try:
        await extensions.create_custom_resource_definition(definition)
    except client.ApiException as err:
        if err.status != 409:
            raise
    group = definition["spec"]["group"]
    version = definition["spec"]["versions"][0]["name"]
    plural = definition["spec"]["names"]["plural"]
    for _ in range(100):
        try:
            await kube.custom.list_namespaced_custom_object(group, version, kube.namespace, plural)
            return
        except client.ApiException as err:
            if err.status != 404:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{plural}.{group} is not served")


async def test_a_service_export_status_moves_through_its_subresource(kube: Kube) -> None:
    """The agent writes ServiceExport conditions through ``/status``; a write
    of the object keeps them, as for every kind with that subresource."""
    await served_crd(kube, MCS_CRDS[0])
    group, version, plural = "multicluster.x-k8s.io", "v1alpha1", "serviceexports"
    ns = kube.namespace
    created = await kube.custom.create_namespaced_custom_object(
        group, version, ns, plural,
        {"apiVersion": f"{group}/{version}", "kind": "ServiceExport", "metadata": {"name": "echo"},
         "status": {"conditions": [{"type": "Ignored"}]}},
    )  # fmt: skip
    assert not (created.get("status") or {}).get("conditions")  # status is not set on create
    condition = {
        "type": "Valid", "status": "True", "reason": "Valid", "message": "exported",
        "lastTransitionTime": "2026-12-02T00:00:00Z",
    }  # fmt: skip
    written = await kube.custom.replace_namespaced_custom_object_status(
        group, version, ns, plural, "echo", {**created, "status": {"conditions": [condition]}}
    )
    assert written["status"]["conditions"][0]["reason"] == "Valid"
    replaced = await kube.custom.replace_namespaced_custom_object(
        group, version, ns, plural, "echo",
        {**written, "metadata": {**written["metadata"], "labels": {"a": "b"}}, "status": {}},
    )  # fmt: skip
    assert replaced["metadata"]["labels"] == {"a": "b"}
    assert replaced["status"]["conditions"][0]["reason"] == "Valid"  # kept


def kubectl(kubeconfig: Any, *args: str) -> str:
    from tests.integration.test_sim_kubeapi import find_kubectl

    done = subprocess.run(
        [find_kubectl(), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_kubectl_get_prints_the_apiservers_columns(kube: Kube) -> None:
    """``kubectl get`` prints what the server's Table says (as=Table)."""
    ns = kube.namespace
    await kube.core.create_namespaced_service(ns, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    await kube.discovery.create_namespaced_endpoint_slice(
        ns, endpoint_slice("web-manual", "web", address="10.1.2.3")
    )

    def get(*args: str) -> list[list[str]]:
        out = kubectl(kube.kubeconfig, "-n", ns, "get", *args)
        return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]

    services = await asyncio.to_thread(get, "services")
    assert services[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert services[1][:2] == ["web", "ClusterIP"] and services[1][3:5] == ["<none>", "80/TCP"]
    wide = await asyncio.to_thread(get, "services", "-o", "wide")
    assert wide[0][-1] == "SELECTOR" and wide[1][-1] == "app=web"
    slices = await asyncio.to_thread(get, "endpointslices", "web-manual")
    assert slices == [["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
                      ["web-manual", "IPv4", "8080", "10.1.2.3", slices[1][4]]]  # fmt: skip


async def test_kubectl_get_prints_a_crds_printer_columns(kube: Kube) -> None:
    await served_crd(kube, MCS_CRDS[1])
    group, version, ns = "multicluster.x-k8s.io", "v1alpha1", kube.namespace
    await kube.custom.create_namespaced_custom_object(group, version, ns, "serviceimports", {
        "apiVersion": f"{group}/{version}", "kind": "ServiceImport", "metadata": {"name": "echo"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.9.0.1"], "ports": [{"port": 80}]},
    })  # fmt: skip
    out = await asyncio.to_thread(kubectl, kube.kubeconfig, "-n", ns, "get", "serviceimports")
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]
    assert rows[0] == ["NAME", "TYPE", "IP", "AGE"]
    assert rows[1][:3] == ["echo", "ClusterSetIP", '["10.9.0.1"]']


async def test_events_are_created_listed_and_watched(kube: Kube) -> None:
    ns = kube.namespace
    body = {
        "metadata": {"generateName": "web."},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": ns, "name": "web"},
        "reason": "Tested", "message": "an event the contract records", "type": "Normal",
        "source": {"component": "federation-contract-test"},
        "firstTimestamp": "2026-12-02T00:00:00Z", "lastTimestamp": "2026-12-02T00:00:00Z",
        "count": 1,
    }  # fmt: skip
    listed = await kube.core.list_namespaced_event(ns)
    created = await kube.core.create_namespaced_event(ns, body)
    assert created.metadata.name.startswith("web.")
    stream = watch.Watch()
    seen = []
    async with asyncio.timeout(20):
        async for change in stream.stream(
            kube.core.list_namespaced_event, ns,
            resource_version=listed.metadata.resource_version, timeout_seconds=10,
        ):  # fmt: skip
            seen.append((change["type"], change["object"].metadata.name, change["object"].reason))
            if change["object"].metadata.name == created.metadata.name:
                break
    stream.stop()
    assert ("ADDED", created.metadata.name, "Tested") in seen
    again = await kube.core.list_namespaced_event(ns)
    assert [e.reason for e in again.items if e.metadata.name == created.metadata.name] == ["Tested"]


async def test_events_are_served_as_events_k8s_io_v1_too(kube: Kube) -> None:
    """One Event, two schemas: written as events.k8s.io/v1, read as core/v1."""
    ns = kube.namespace
    events = client.EventsV1Api(kube.api)
    before = await events.list_namespaced_event(ns)
    body = {
        "metadata": {"name": "web.v1"},
        "eventTime": "2026-12-02T00:00:00.000000Z", "action": "Testing",
        "reportingController": "federation.io/contract", "reportingInstance": "contract-1",
        "reason": "Tested", "type": "Normal", "note": "through the new API",
        "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": ns, "name": "web"},
    }  # fmt: skip
    created = await events.create_namespaced_event(ns, body)
    assert created.note == "through the new API" and created.regarding.name == "web"
    core = await kube.core.read_namespaced_event("web.v1", ns)
    assert core.message == "through the new API" and core.involved_object.name == "web"
    assert core.reporting_component == "federation.io/contract"
    listed = await events.list_namespaced_event(ns)
    assert [e.reason for e in listed.items if e.metadata.name == "web.v1"] == ["Tested"]
    stream = watch.Watch()
    async with asyncio.timeout(20):
        async for change in stream.stream(
            events.list_namespaced_event, ns,
            resource_version=before.metadata.resource_version, timeout_seconds=10,
        ):  # fmt: skip
            if change["object"].metadata.name == "web.v1":
                assert change["type"] == "ADDED" and change["object"].note == "through the new API"
                break
        else:
            raise AssertionError("the watch ended without the event")
    stream.stop()
    incomplete = {k: v for k, v in body.items() if k != "action"} | {"metadata": {"name": "x"}}
    await expect_status(422, events.create_namespaced_event(ns, incomplete))
