"""``fedctl agent cluster``, ``policy apply`` and ``route explain`` as a user
runs them: real processes for the registry and the agent, a simulated
cluster for Kubernetes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from cryptography import x509

from agents.cluster.kube import NAMESPACES, SERVICE_EXPORTS, Kube, KubeError
from federation.sim.cluster import SimCluster
from federation.sim.etcd_process import free_port
from federation.sim.kube.resources import SECRET
from tests.integration.test_fedctl_registry import fedctl, one_line_error, served  # noqa: F401
from tests.support import eventually

POLICY = """\
apiVersion: federation.io/v1alpha1
kind: TrafficPolicy
metadata: {namespace: demo, name: echo}
spec:
  minHealthy: 2
  failbackHoldDownSeconds: 5
"""


async def test_an_agent_process_exports_and_the_admin_explains_the_route(
    served: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    added = await asyncio.to_thread(
        fedctl, "cluster", "add", "east", "--region", "us-east", "--zone", "a", env=served
    )
    token = added.stdout.strip().splitlines()[-1]
    config = await asyncio.to_thread(Path(served["FEDERATION_CONFIG"]).read_text)
    registry = json.loads(config)["registry"]
    port = free_port()
    async with SimCluster("east", index=31, region="us-east", zones=("a",)) as sim:
        kubeconfig = sim.write_kubeconfig(tmp_path / "east.kubeconfig")
        sim.run_echo("demo", "echo", replicas=2)
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "federation.cli", "agent", "cluster",
            "--kubeconfig", str(kubeconfig), "--registry", registry, "--join-token", token,
            "--state-dir", str(tmp_path / "agent"), "--listen", f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        kube = await Kube.from_kubeconfig(kubeconfig)
        try:

            async def export() -> bool:
                try:  # once the agent has installed the MCS CRDs
                    await kube.create(SERVICE_EXPORTS, "demo", {"metadata": {"name": "echo"}})
                except KubeError as err:
                    assert err.status == 404, err
                    return False
                return True

            await eventually(export, timeout=20.0)

            async def exported() -> bool:
                done = await asyncio.to_thread(fedctl, "services", "-o", "json", env=served)
                items = json.loads(done.stdout or "[]")
                return any(s["healthy"] == 2 for i in items for s in i["sources"])

            await eventually(exported, timeout=20.0)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                    assert answer.status == 200
                async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                    assert "federation_exports 1.0" in await answer.text()

            policy = tmp_path / "policy.yaml"
            policy.write_text(POLICY)
            applied = await asyncio.to_thread(
                fedctl, "policy", "apply", "-f", str(policy), env=served
            )
            assert applied.returncode == 0, applied.stderr
            explained = await asyncio.to_thread(
                fedctl, "route", "explain", "demo/echo", "--from", "east", "-o", "json", env=served
            )
            assert explained.returncode == 0, explained.stderr
            route = json.loads(explained.stdout)
            assert route["levels"][0]["level"] == "same cluster"
            assert (route["levels"][0]["healthy"], route["levels"][0]["endpoints"]) == (2, 2)
            assert route["levels"][0]["chosen"] is True and route["levels"][0]["eligible"] is True
            assert len(route["endpoints"]) == 2
            table = await asyncio.to_thread(
                fedctl, "route", "explain", "demo/echo", "--from", "east", env=served
            )
            assert table.stdout.split()[:6] == [
                "PRIORITY",
                "LEVEL",
                "SOURCES",
                "HEALTHY",
                "ELIGIBLE",
                "CHOSEN",
            ]
        finally:
            await kube.close()
            agent.send_signal(signal.SIGTERM)
            _, errors = await asyncio.wait_for(agent.communicate(), 20)
    assert agent.returncode == 0, errors.decode()


def test_agent_and_policy_errors_are_one_line(
    served: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    one_line_error(
        fedctl("agent", "cluster", "--kubeconfig", str(tmp_path / "none"), "--registry",
               "https://127.0.0.1:1", "--cert-dir", str(tmp_path / "nothing")),
        "credential",
    )  # fmt: skip
    one_line_error(
        fedctl("agent", "cluster", "--kubeconfig", "k", "--registry", "https://127.0.0.1:1",
               "--join-token", "fj1.bad.token"),
        "join token is malformed",
    )  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: {namespace: demo}\n")
    one_line_error(fedctl("policy", "apply", "-f", str(bad), env=served), "name")
    bad.write_text("service: [\n")
    one_line_error(fedctl("policy", "apply", "-f", str(bad), env=served), "not YAML")
    one_line_error(
        fedctl("route", "explain", "demo/none", "--from", "east", env=served), "not registered"
    )


async def test_a_vm_agent_with_a_wrong_token_logs_one_line_and_retries(
    served: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    config = await asyncio.to_thread(Path(served["FEDERATION_CONFIG"]).read_text)
    registry = json.loads(config)["registry"]
    added = await asyncio.to_thread(
        fedctl, "vm", "add", "db-1", "--namespace", "shop", "--service-account", "db",
        "--address", "127.0.5.1", "--region", "eu", "--zone", "a", "--service", "db",
        "--port", "5432", env=served,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    wrong = added.stdout.strip().splitlines()[-1][:-8] + "0" * 8  # the pin is now wrong
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "agent", "vm", "--registry", registry,
        "--join-token", wrong, "--state-dir", str(tmp_path / "vm"),
        "--listen", f"127.0.0.1:{free_port()}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert agent.stderr is not None
    lines: list[str] = []
    try:
        for _ in range(2):  # the first attempt, and a retry after the backoff
            line = await asyncio.wait_for(agent.stderr.readline(), 10)
            lines.append(line.decode())
    finally:
        agent.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(agent.stderr.read(), 10)
        await asyncio.wait_for(agent.wait(), 10)
    assert all("cannot start" in line and "pin" in line for line in lines), lines
    delays = [float(re.search(r"retrying in ([0-9.]+)s", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert 0.5 <= delays[0] <= 1.5 and 1.0 <= delays[1] <= 3.0, (
        delays
    )  # Backoff(1, 60): doubling, jittered
    assert b"Traceback" not in rest and agent.returncode == 0


async def test_an_agent_keeps_its_credential_in_a_secret_and_restarts_without_a_token(
    served: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The deployed shape (deploy/cluster): the token comes from the
    environment once; the credential lives in a Secret of the cluster."""
    added = await asyncio.to_thread(
        fedctl, "cluster", "add", "east", "--region", "us-east", "--zone", "a", env=served
    )
    token = added.stdout.strip().splitlines()[-1]
    config = await asyncio.to_thread(Path(served["FEDERATION_CONFIG"]).read_text)
    registry = json.loads(config)["registry"]
    async with SimCluster("east", index=32, region="us-east", zones=("a",)) as sim:
        kubeconfig = sim.write_kubeconfig(tmp_path / "east.kubeconfig")
        argv = [
            sys.executable, "-m", "federation.cli", "agent", "cluster", "--registry", registry,
            "--kubeconfig", str(kubeconfig), "--cert-secret", "federation-system/agent-credential",
        ]  # fmt: skip

        async def run_once(env: dict[str, str]) -> None:
            port = free_port()
            agent = await asyncio.create_subprocess_exec(
                *argv, "--listen", f"127.0.0.1:{port}", env={**os.environ, **env},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                await eventually(lambda: ready(port), timeout=20.0, what="the agent ready")
            finally:
                agent.send_signal(signal.SIGTERM)
                _, errors = await asyncio.wait_for(agent.communicate(), 20)
            assert agent.returncode == 0, errors.decode()

        await run_once({"FEDERATION_JOIN_TOKEN": token})
        kept = sim.client.get(SECRET, "federation-system", "agent-credential")
        assert kept is not None and kept["type"] == "kubernetes.io/tls"
        cert = x509.load_pem_x509_certificate(base64.b64decode(kept["data"]["tls.crt"]))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
            "spiffe://cluster.local/federation/cluster/east"
        ]
        await run_once({})  # the token is spent; the Secret is enough

        sim.client.delete(SECRET, "federation-system", "agent-credential")
        lost = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
        one_line_error(lost, "no credential yet", "--join-token")


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as answer,
        ):
            return answer.status == 200
    except aiohttp.ClientError:
        return False


async def test_in_cluster_config_reads_the_service_account(tmp_path: Path) -> None:
    async with SimCluster("east", index=33, region="us-east", zones=("a",)) as sim:
        config = yaml.safe_load(sim.write_kubeconfig(tmp_path / "kubeconfig").read_text())
        account = tmp_path / "serviceaccount"
        account.mkdir()
        ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
        (account / "ca.crt").write_bytes(base64.b64decode(ca))
        (account / "token").write_text(config["users"][0]["user"]["token"])
        url = urlsplit(config["clusters"][0]["cluster"]["server"])
        environ = {"KUBERNETES_SERVICE_HOST": url.hostname, "KUBERNETES_SERVICE_PORT": url.port}
        kube = Kube.in_cluster({k: str(v) for k, v in environ.items()}, account)
        try:
            names = {n["metadata"]["name"] for n in (await kube.list(NAMESPACES))[0]}
            assert "default" in names
        finally:
            await kube.close()
        (account / "token").write_text("a-wrong-token")
        wrong = Kube.in_cluster({k: str(v) for k, v in environ.items()}, account)
        try:
            with pytest.raises(KubeError) as refused:
                await wrong.list(NAMESPACES)
            assert refused.value.status == 401
        finally:
            await wrong.close()
        with pytest.raises(KubeError, match="not in a cluster"):
            Kube.in_cluster({}, account)
