"""``fedctl failover-test``: one failover scenario, measured, on any clusters.

The scenario talks to each cluster only through its Kubernetes API, so the
same code runs against simulated clusters and real ones (kind contexts):
deploy an echo Service with its pods in every cluster and export it, send a
steady request stream to ``echo-global`` of the client cluster, take the
client cluster's pods down, measure how long traffic takes to settle on a
remote copy and how many requests were lost, bring the pods back and
measure the failback (which waits out the policy's hold-down).

A phase ends when traffic has stayed on the expected clusters for
``settle`` seconds, or at its timeout (then it did not recover)."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.cluster.kube import (
    SERVICE_EXPORTS,
    SERVICES,
    Kind,
    Kube,
    KubeError,
    ensure_namespace,
)
from federation.shared.tasks import stop_tasks
from federation.sim import echo

PODS = Kind("", "v1", "pods")
APP = "echo"
CONTAINER_PORT = 8080
SERVICE_PORT = 80


@dataclass
class Sample:
    at: float
    served_by: str | None  # None: the request failed


@dataclass
class Traffic:
    """A client: one request every ``interval`` seconds to host:port."""

    host: str
    port: int
    interval: float = 0.02
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                status, body = await echo.request(self.host, self.port, timeout=1.0)
                served = str(json.loads(body)["cluster"]) if status == 200 else None
            except (OSError, TimeoutError, ValueError, KeyError):
                served = None
            self.samples.append(Sample(started, served))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))


@dataclass
class Phase:
    name: str
    expect: frozenset[str]  # who may serve once traffic settles
    started: float
    samples: list[Sample]

    def recovered_after(self) -> float | None:
        """Seconds from the phase's start until every later request was
        served by an expected cluster; None if it never settled."""
        last_other = None
        for index, sample in enumerate(self.samples):
            if sample.served_by not in self.expect:
                last_other = index
        if last_other is None:
            return 0.0
        if last_other == len(self.samples) - 1:
            return None
        return self.samples[last_other + 1].at - self.started

    def report(self) -> dict[str, Any]:
        served = Counter(s.served_by for s in self.samples if s.served_by is not None)
        recovered = self.recovered_after()
        return {
            "name": self.name,
            "expect": sorted(self.expect),
            "requests": len(self.samples),
            "failed": sum(1 for s in self.samples if s.served_by is None),
            "served_by": dict(sorted(served.items())),
            "recovered_ms": None if recovered is None else round(recovered * 1000, 1),
        }


def table(name: str, rows: Mapping[str, Phase]) -> str:
    """One phase: per client, who served, failures and time to recover."""
    lines = [
        f"== {name}",
        f"   {'client':<8}{'expect':<12}{'served by (requests)':<28}{'failed':>8}{'recovered':>12}",
    ]
    for client, phase in rows.items():
        row = phase.report()
        by = ", ".join(f"{w} {n}" for w, n in row["served_by"].items())
        after = "not settled" if row["recovered_ms"] is None else f"{row['recovered_ms']:.0f} ms"
        failed = f"{row['failed']}/{row['requests']}"
        expect = "/".join(row["expect"])
        lines.append(f"   {client:<8}{expect:<12}{by:<28}{failed:>8}{after:>12}")
    return "\n".join(lines)


@dataclass
class Scenario:
    clusters: Mapping[str, Kube]  # federation cluster name -> its API
    client: str
    image: str
    namespace: str = "failover-test"
    replicas: int = 2
    interval: float = 0.02
    settle: float = 2.0
    timeout: float = 120.0
    mode: str = "kubeconfig"  # or "simulated": fedctl made the clusters

    def __post_init__(self) -> None:
        if self.client not in self.clusters:
            raise ValueError(f"the client cluster {self.client!r} is not among the clusters")
        if len(self.clusters) < 2:
            raise ValueError("a failover needs at least two clusters")

    async def run(self, say: Callable[[str], None]) -> dict[str, Any]:
        """Deploy, measure the three phases, clean up; returns the report."""
        where = ", ".join(self.clusters)
        say(f"Deploying {APP} ({self.replicas} pods, image {self.image}) in {where}")
        for name, kube in self.clusters.items():
            await self._deploy(name, kube)
        for name, kube in self.clusters.items():
            await _until(functools.partial(self._all_ready, kube), self.timeout, f"{name}'s pods")
        host, port = await self._global_address()
        say(f"A client of {self.client} sends a request every {self.interval * 1000:.0f} ms to "
            f"{APP}-global ({host}:{port}).")  # fmt: skip
        traffic = Traffic(host, port, self.interval)
        stream = asyncio.create_task(traffic.run())
        others = frozenset(self.clusters) - {self.client}
        local = frozenset({self.client})
        phases: list[Phase] = []
        try:
            steps = (
                ("steady state", local, None),
                (f"{self.client}'s pods down", others, self._take_down),
                (f"{self.client}'s pods back", local, self._bring_back),
            )
            for name, expect, action in steps:
                begin, mark = time.monotonic(), len(traffic.samples)
                if action is not None:
                    await action()
                await self._settled(traffic, mark, expect)
                phase = Phase(name, expect, begin, traffic.samples[mark:])
                phases.append(phase)
                say(table(name, {self.client: phase}))
        finally:
            await stop_tasks(stream)
        return self._report(phases)

    def _report(self, phases: list[Phase]) -> dict[str, Any]:
        rows = [p.report() for p in phases]
        return {
            "mode": self.mode,
            "clusters": list(self.clusters),
            "client": self.client,
            "namespace": self.namespace,
            "replicas": self.replicas,
            "interval_ms": self.interval * 1000,
            "phases": rows,
            "failover": {"recovered_ms": rows[1]["recovered_ms"], "lost": rows[1]["failed"]},
            "failback": {"recovered_ms": rows[2]["recovered_ms"], "lost": rows[2]["failed"]},
            "passed": all(r["recovered_ms"] is not None for r in rows),
        }

    async def cleanup(self) -> None:
        """Delete what the scenario made (the namespace stays)."""
        for kube in self.clusters.values():
            await kube.delete(SERVICE_EXPORTS, self.namespace, APP)
            for i in range(self.replicas):
                await kube.delete(PODS, self.namespace, f"{APP}-{i}")
            await kube.delete(SERVICES, self.namespace, APP)

    # -- steps ---------------------------------------------------------------------

    async def _deploy(self, cluster: str, kube: Kube) -> None:
        await ensure_namespace(kube, self.namespace)
        service = {
            "metadata": {"name": APP, "labels": {"app": APP}},
            "spec": {
                "selector": {"app": APP},
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}],
            },
        }
        export = {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": {"name": APP},
        }
        await _create(kube, SERVICES, self.namespace, service)
        await self._start_pods(cluster, kube)
        await _create(kube, SERVICE_EXPORTS, self.namespace, export)

    async def _start_pods(self, cluster: str, kube: Kube) -> None:
        for i in range(self.replicas):
            await _create(kube, PODS, self.namespace, echo_pod(f"{APP}-{i}", cluster, self.image))

    async def _take_down(self) -> None:
        kube = self.clusters[self.client]
        for i in range(self.replicas):
            await kube.delete(PODS, self.namespace, f"{APP}-{i}")

    async def _bring_back(self) -> None:
        kube = self.clusters[self.client]
        names = [f"{APP}-{i}" for i in range(self.replicas)]

        async def gone() -> bool:  # terminating pods keep their names until they finish
            return all([await kube.get(PODS, self.namespace, n) is None for n in names])

        await _until(gone, self.timeout, f"{self.client}'s old pods to terminate")
        await self._start_pods(self.client, kube)

    async def _all_ready(self, kube: Kube) -> bool:
        pods, _ = await kube.list(PODS, self.namespace, f"app={APP}")
        ready = [
            p
            for p in pods
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in p.get("status", {}).get("conditions") or []
            )
        ]
        return len(ready) == self.replicas

    async def _global_address(self) -> tuple[str, int]:
        kube = self.clusters[self.client]
        found: dict[str, Any] = {}

        async def imported() -> bool:
            service = await kube.get(SERVICES, self.namespace, f"{APP}-global")
            ip = (service or {}).get("spec", {}).get("clusterIP")
            if service is None or not ip or ip == "None":
                return False
            found["address"] = (ip, int(service["spec"]["ports"][0]["port"]))
            return True

        await _until(imported, self.timeout, f"{APP}-global in {self.client}")
        address: tuple[str, int] = found["address"]
        return address

    async def _settled(self, traffic: Traffic, mark: int, expect: Collection[str]) -> None:
        """Until the requests of the last ``settle`` seconds were all served
        by ``expect`` (or the timeout)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            samples = traffic.samples[mark:]
            now = time.monotonic()
            recent = [s for s in samples if s.at >= now - self.settle]
            spanned = bool(samples) and samples[0].at <= now - self.settle
            if spanned and recent and all(s.served_by in expect for s in recent):
                return
            await asyncio.sleep(0.05)


def echo_pod(name: str, cluster: str, image: str) -> dict[str, Any]:
    """An echo pod that answers with its pod and cluster names (simulated
    clusters run ``federation.sim/echo``; real ones the project image)."""
    return {
        "metadata": {"name": name, "labels": {"app": APP}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "echo",
                    "image": image,
                    "command": ["python", "-m", "federation.sim.echo"],
                    "args": [
                        f"--listen=:{CONTAINER_PORT}",
                        f"--name={name}",
                        f"--cluster={cluster}",
                    ],
                    "ports": [{"name": "http", "containerPort": CONTAINER_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": CONTAINER_PORT},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
        },
    }


async def _create(kube: Kube, kind: Kind, namespace: str, obj: dict[str, Any]) -> None:
    try:
        await kube.create(kind, namespace, obj)
    except KubeError as err:
        if err.status != 409:  # already there: a re-run
            raise


async def _until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.1)


__all__ = ["PODS", "Phase", "Sample", "Scenario", "Traffic", "echo_pod", "table"]
