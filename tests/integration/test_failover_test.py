"""``fedctl failover-test`` as a user runs it: on clusters it simulates
itself, and on clusters named by kubeconfig contexts (here the contexts of
simulated clusters whose agents this test runs, the path a kind federation
takes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import yaml

from agents.cluster.kube import SERVICE_EXPORTS, Kube
from federation.model import ServiceRef, TrafficPolicy
from federation.sim.failover import PODS
from federation.sim.world import ClusterSpec, World
from tests.integration.test_fedctl_registry import fedctl, one_line_error

HOLD_DOWN = 1.0


def test_on_simulated_clusters_failover_and_failback_are_measured(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    argv = ["failover-test", "--report", str(report_path), "--replicas", "1", "--settle", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", *argv, "--hold-down", str(HOLD_DOWN)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "SIMULATED" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["mode"] == "simulated" and report["passed"]
    steady, down, back = report["phases"]
    assert steady["recovered_ms"] is not None
    assert down["served_by"].get("east2", 0) > 0  # the same region before the other one
    assert "west" not in down["served_by"]
    assert report["failover"]["recovered_ms"] < 5000
    assert back["served_by"]["east1"] > 0
    # failback waits out the hold-down, counted from when east1 is eligible again
    assert report["failback"]["recovered_ms"] >= HOLD_DOWN * 1000


def merged_kubeconfig(world: World, path: Path) -> Path:
    merged: dict[str, object] = {"apiVersion": "v1", "kind": "Config"}
    for member in world.members.values():
        assert member.kubeconfig is not None
        one = yaml.safe_load(member.kubeconfig.read_text())
        for key in ("clusters", "users", "contexts"):
            merged.setdefault(key, [])
            merged[key] += one[key]  # type: ignore[operator]
    merged["current-context"] = "sim-east"
    path.write_text(yaml.safe_dump(merged))
    return path


async def test_on_kubeconfig_contexts_it_deploys_measures_and_cleans_up(tmp_path: Path) -> None:
    specs = (ClusterSpec("east", "us-east"), ClusterSpec("west", "us-west"))
    async with World(tmp_path / "world", specs, lease_seconds=1.0) as world:
        service = ServiceRef(namespace="failover-test", name="echo")
        policy = TrafficPolicy(service=service, failback_hold_down_seconds=HOLD_DOWN)
        async with world.admin() as admin:
            await admin.request("PUT", "/v1/policies/failover-test/echo", policy.to_wire())
        kubeconfig = merged_kubeconfig(world, tmp_path / "kubeconfig")
        report_path = tmp_path / "report.json"
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "federation.cli", "failover-test",
            "--kubeconfig", str(kubeconfig), "--cluster", "east=sim-east",
            "--cluster", "west=sim-west", "--image", "federation.sim/echo",
            "--replicas", "1", "--settle", "1", "--timeout", "60",
            "--report", str(report_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(child.communicate(), 180)
        assert child.returncode == 0, (out.decode(), err.decode())
        report = json.loads(report_path.read_text())
        assert report["mode"] == "kubeconfig" and report["passed"], report
        assert report["clusters"] == ["east", "west"] and report["client"] == "east"
        assert report["phases"][1]["served_by"]["west"] > 0
        assert report["failback"]["recovered_ms"] >= HOLD_DOWN * 1000
        assert "east's pods down" in out.decode()
        for member in world.members.values():  # it took away what it made
            kube = member.kube
            assert isinstance(kube, Kube)
            assert await kube.get(SERVICE_EXPORTS, "failover-test", "echo") is None
            pods, _ = await kube.list(PODS, "failover-test")
            assert all(p["metadata"].get("deletionTimestamp") for p in pods)


def test_bad_flags_get_one_line(tmp_path: Path) -> None:
    one_line_error(fedctl("failover-test", "--cluster", "east"), "--kubeconfig")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    done = fedctl("failover-test", "--kubeconfig", str(kubeconfig), "--cluster", "a")
    one_line_error(done, "at least two")
    done = fedctl(
        "failover-test", "--kubeconfig", str(kubeconfig), "--cluster", "a", "--cluster", "b"
    )
    one_line_error(done, "kind-a")
