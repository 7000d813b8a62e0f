"""``fedctl sim cluster`` runs a simulated cluster kubectl can use."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from agents.cluster.kube import HTTP_ROUTES, SERVICE_ENTRIES, Kube
from federation.sim.etcd_process import free_port


def test_fedctl_sim_cluster_serves_and_says_it_is_simulated(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "sim",
            "cluster",
            "west",
            "--listen",
            f"127.0.0.1:{port}",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        banner = [child.stdout.readline() for _ in range(5)]
        assert "SIMULATED cluster sim-west" in banner[0]
        assert "kube-proxy" in banner[1]
        assert f"https://127.0.0.1:{port}" in banner[2]
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["current-context"] == "sim-west"
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=10)
    assert child.returncode == 0


def test_bad_listen_flag_is_one_line_no_traceback() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "federation.cli",
            "sim",
            "cluster",
            "x",
            "--listen",
            "nonsense",
            "--kubeconfig",
            "/tmp/x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "HOST:PORT" in done.stderr


async def test_fedctl_sim_cluster_serves_gateway_api_and_istio_on_request(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "sim", "cluster", "east",
        "--kubeconfig", str(kubeconfig), "--serve", "gateway-api,istio",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        said = b"".join([await child.stdout.readline() for _ in range(8)]).decode()
        assert "serves      httproutes.gateway.networking.k8s.io" in said
        assert "serves      serviceentries.networking.istio.io" in said
        kube = await Kube.from_kubeconfig(kubeconfig)
        try:
            assert await kube.served(HTTP_ROUTES)
            assert await kube.served(SERVICE_ENTRIES)
        finally:
            await kube.close()
    finally:
        child.send_signal(signal.SIGTERM)
        await asyncio.wait_for(child.wait(), 10)
    assert child.returncode == 0


def test_an_unknown_crd_to_serve_is_one_line_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", "sim", "cluster", "x",
         "--kubeconfig", "/tmp/x", "--serve", "nginx"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "gateway-api, istio" in done.stderr
