"""The simulated kubelet (with the scheduler's one job): it runs pods.

A Pod of the echo image is bound to a node, given an IP from that node's
loopback block and started as a real backend (an asyncio task, or its own
process).  A readiness probe (HTTP GET /healthz) runs every period; the pod's
Ready condition follows it with the usual success/failure thresholds.  A
deleted pod is held by a finalizer while it terminates: it keeps serving
for its grace period, then its backend stops and the finalizer goes.

Simplified against a real kubelet (and said so in docs/decisions.md): one
kubelet serves every node of the cluster, only the echo image runs, a dead
backend is not restarted (there is no restartPolicy), and the finalizer
``sim.federation.io/kubelet`` stands in for graceful deletion.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from federation.shared.clock import Clock
from federation.shared.tasks import stop_tasks
from federation.sim import echo, events
from federation.sim.kube.objects import Obj, now_rfc3339
from federation.sim.kube.resources import NODE, POD
from federation.sim.local import LocalClient

ECHO_IMAGE = "federation.sim/echo"
FINALIZER = "sim.federation.io/kubelet"
DEFAULT_GRACE_SECONDS = 1.0


class Backend(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class TaskBackend:
    """The echo server as an asyncio task in this process."""

    def __init__(self, host: str, port: int, pod: str, cluster: str) -> None:
        self.server = echo.EchoServer(host, port, pod=pod, cluster=cluster)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()


class ProcessBackend:
    """The echo server as its own process, so it can die like a real one."""

    def __init__(self, host: str, port: int, pod: str, cluster: str) -> None:
        self.argv = [
            sys.executable, "-m", "federation.sim.echo",
            "--listen", f"{host}:{port}", "--name", pod, "--cluster", cluster,
        ]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(*self.argv)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class RunningPod:
    namespace: str
    name: str
    ip: str
    port: int
    backend: Backend | None
    ready: bool = False
    successes: int = 0
    failures: int = 0
    terminating: asyncio.Task[None] | None = field(default=None, repr=False)


class Kubelet:
    def __init__(
        self,
        client: LocalClient,
        *,
        cluster: str,
        clock: Clock,
        pod_ip: Callable[[str], str],
        make_backend: Callable[[str, int, str, str], Backend],
        probe_period: float = 0.2,
        probe_timeout: float = 1.0,
        failure_threshold: int = 2,
        success_threshold: int = 1,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.clock = clock
        self.pod_ip = pod_ip  # node name -> a free pod IP on it
        self.make_backend = make_backend
        self.probe_period = probe_period
        self.probe_timeout = probe_timeout
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.pods: dict[tuple[str, str], RunningPod] = {}
        self._failed: set[str] = set()  # uids of pods we refused to run
        self._next_node = 0

    async def run(self) -> None:
        prober = asyncio.create_task(self._probe_forever())
        try:
            await self.client.follow(POD, self._changed)
        finally:
            await stop_tasks(prober)
            await asyncio.gather(*(self._stop(p) for p in list(self.pods.values())))

    # -- lifecycle ------------------------------------------------------------

    async def _changed(self, kind: str, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        running = self.pods.get(key)
        if kind == "DELETED":
            if running is not None:
                await self._stop(running)
            return
        if meta["uid"] in self._failed:
            if meta.get("deletionTimestamp"):
                self._release(obj)
        elif running is None and not meta.get("deletionTimestamp"):
            await self._admit(obj)
        elif running is not None and meta.get("deletionTimestamp") and not running.terminating:
            grace = obj["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            running.terminating = asyncio.create_task(self._terminate(running, float(grace)))
        elif running is None and meta.get("deletionTimestamp"):
            self._release(obj)

    async def _admit(self, obj: Obj) -> None:
        meta, spec = obj["metadata"], obj.setdefault("spec", {})
        if spec.get("nodeName") is None:  # the scheduler's job, done here
            nodes = [n["metadata"]["name"] for n in self.client.list(NODE)]
            spec["nodeName"] = nodes[self._next_node % len(nodes)]
            self._next_node += 1
            events.record(self.client, obj, "Scheduled",
                          f"Successfully assigned {meta['namespace']}/{meta['name']} to "
                          f"{spec['nodeName']}", component="default-scheduler")  # fmt: skip
        if FINALIZER not in meta.setdefault("finalizers", []):
            meta["finalizers"].append(FINALIZER)
        obj = self.client.update(POD, obj)
        containers = spec.get("containers") or [{}]
        image = containers[0].get("image")
        ports = containers[0].get("ports") or [{"containerPort": 8080}]
        if image != ECHO_IMAGE:
            obj["status"] = {
                "phase": "Failed",
                "reason": "ErrImagePull",
                "message": f"simulated clusters run only the {ECHO_IMAGE} image, not {image!r}",
            }
            self._failed.add(meta["uid"])
            self.client.update(POD, obj, status=True)
            events.record(self.client, obj, "Failed", obj["status"]["message"], type_="Warning")
            return
        ip = self.pod_ip(spec["nodeName"])
        port = int(ports[0].get("containerPort", 8080))
        backend = self.make_backend(ip, port, meta["name"], self.cluster)
        running = RunningPod(meta["namespace"], meta["name"], ip, port, backend)
        self.pods[(running.namespace, running.name)] = running
        await backend.start()
        node = self.client.get(NODE, "", spec["nodeName"]) or {}
        addresses = node.get("status", {}).get("addresses", [])
        host_ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), None)
        obj["status"] = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": host_ip,
            "startTime": now_rfc3339(),
            "conditions": _conditions(False),
        }
        self.client.update(POD, obj, status=True)
        events.record(self.client, obj, "Started", f"Started container {_container(obj)}")
        self.client.log.info(
            "pod %s/%s running at %s:%d", running.namespace, running.name, ip, port
        )

    async def _terminate(self, running: RunningPod, grace: float) -> None:
        pod = self.client.get(POD, running.namespace, running.name)
        if pod is not None:
            events.record(self.client, pod, "Killing", f"Stopping container {_container(pod)}")
        await self.clock.sleep(grace)
        await self._stop(running)
        self._release(self.client.get(POD, running.namespace, running.name))

    def _release(self, obj: Obj | None) -> None:
        """Let the API server finish deleting a pod we no longer run."""
        if obj is None or FINALIZER not in obj["metadata"].get("finalizers", []):
            return
        obj["metadata"]["finalizers"].remove(FINALIZER)
        self.client.update(POD, obj)

    async def _stop(self, running: RunningPod) -> None:
        self.pods.pop((running.namespace, running.name), None)
        if running.backend is not None:
            backend, running.backend = running.backend, None
            await backend.stop()

    async def kill(self, namespace: str, name: str) -> None:
        """Fault: the pod's backend dies; the pod stays, its probes fail."""
        running = self.pods.get((namespace, name))
        if running is not None and running.backend is not None:
            backend, running.backend = running.backend, None
            await backend.stop()

    async def revive(self, namespace: str, name: str) -> None:
        """Start a killed backend again on the same address."""
        running = self.pods.get((namespace, name))
        if running is not None and running.backend is None:
            running.backend = self.make_backend(running.ip, running.port, name, self.cluster)
            await running.backend.start()

    # -- readiness probes -----------------------------------------------------

    async def _probe_forever(self) -> None:
        while True:
            pods = list(self.pods.values())
            results = await asyncio.gather(*(self._probe(p) for p in pods))
            for running, ok in zip(pods, results, strict=True):
                self._record(running, ok)
            await self.clock.sleep(self.probe_period)

    async def _probe(self, running: RunningPod) -> bool:
        try:
            status, _ = await echo.request(
                running.ip, running.port, "/healthz", timeout=self.probe_timeout
            )
        except (OSError, TimeoutError):
            return False
        return 200 <= status < 400

    def _record(self, running: RunningPod, ok: bool) -> None:
        if (running.namespace, running.name) not in self.pods:
            return
        if ok:
            running.successes, running.failures = running.successes + 1, 0
            flip = not running.ready and running.successes >= self.success_threshold
        else:
            running.successes, running.failures = 0, running.failures + 1
            flip = running.ready and running.failures >= self.failure_threshold
        if not flip:
            return
        obj = self.client.get(POD, running.namespace, running.name)
        if obj is None:
            return
        running.ready = ok
        obj.setdefault("status", {})["conditions"] = _conditions(ok)
        self.client.update(POD, obj, status=True)
        if not ok:
            events.record(self.client, obj, "Unhealthy",
                          "Readiness probe failed: GET /healthz did not answer 2xx or 3xx",
                          type_="Warning")  # fmt: skip
        state = "ready" if ok else "not ready"
        self.client.log.info("pod %s/%s is %s", running.namespace, running.name, state)


def _container(pod: Obj) -> str:
    containers = pod.get("spec", {}).get("containers") or [{}]
    return str(containers[0].get("name") or "main")


def _conditions(ready: bool) -> list[Obj]:
    status = "True" if ready else "False"
    now = now_rfc3339()
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        {"type": "Ready", "status": status, "lastTransitionTime": now},
    ]
