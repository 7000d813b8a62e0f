"""Kube contract fixtures: the emulator, or a real cluster when
``FEDERATION_TEST_KUBECONFIG`` names one.  Each test works in a namespace of
its own and removes it afterwards, so the tests run unchanged on both."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from federation.sim.kube.app import SimKubeServer


@dataclass
class Kube:
    api: client.ApiClient
    namespace: str
    kubeconfig: Path

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def discovery(self) -> client.DiscoveryV1Api:
        return client.DiscoveryV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


@pytest.fixture
async def kubeconfig(tmp_path: Path) -> AsyncIterator[Path]:
    real = os.environ.get("FEDERATION_TEST_KUBECONFIG")
    if real:
        yield Path(real)
        return
    async with SimKubeServer("contract") as server:
        yield server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[Kube]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        namespace = f"fedtest-{secrets.token_hex(4)}"
        core = client.CoreV1Api(api)
        await core.create_namespace({"metadata": {"name": namespace}})
        try:
            yield Kube(api=api, namespace=namespace, kubeconfig=kubeconfig)
        finally:
            await core.delete_namespace(namespace)
