"""The simulated EndpointSlice controller.

For every Service with a selector it keeps EndpointSlices (labelled
``kubernetes.io/service-name`` and managed by
``endpointslice-controller.k8s.io``, at most 100 endpoints each) true to the
pods the selector matches: ``ready`` is the pod's Ready condition unless it
is terminating, ``serving`` is the Ready condition regardless, and
``terminating`` marks a pod being deleted.  Selector-less Services are left
alone: their slices belong to whoever writes them (the federation agent).
"""

from __future__ import annotations

import asyncio
from typing import Any

from federation.shared.tasks import stop_tasks
from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import Obj
from federation.sim.kube.resources import ENDPOINT_SLICE, NODE, POD, SERVICE
from federation.sim.kube.selectors import Selector
from federation.sim.local import LocalClient

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
ZONE = "topology.kubernetes.io/zone"
MAX_PER_SLICE = 100


class EndpointSliceController:
    def __init__(self, client: LocalClient) -> None:
        self.client = client
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        worker = asyncio.create_task(self._work())
        try:
            await asyncio.gather(
                self.client.follow(SERVICE, self._service_changed),
                self.client.follow(POD, self._pod_changed),
            )
        finally:
            await stop_tasks(worker)

    async def _service_changed(self, kind: str, obj: Obj) -> None:
        self._mark(obj["metadata"]["namespace"], obj["metadata"]["name"])

    async def _pod_changed(self, kind: str, obj: Obj) -> None:
        namespace = obj["metadata"]["namespace"]
        for service in self.client.list(SERVICE, namespace):
            if service.get("spec", {}).get("selector"):
                self._mark(namespace, service["metadata"]["name"])

    def _mark(self, namespace: str, name: str) -> None:
        self._dirty.add((namespace, name))
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for namespace, name in sorted(dirty):
                try:
                    self.reconcile(namespace, name)
                except KubeError as err:
                    self.client.log.warning("endpointslices of %s/%s: %s", namespace, name, err)
                    self._mark(namespace, name)  # level-triggered: try again
                    await asyncio.sleep(0.1)

    def reconcile(self, namespace: str, name: str) -> None:
        service = self.client.get(SERVICE, namespace, name)
        selector = (service or {}).get("spec", {}).get("selector")
        owned = self.client.list(
            ENDPOINT_SLICE, namespace, f"{SERVICE_NAME}={name},{MANAGED_BY}={CONTROLLER}"
        )
        if service is None or not selector:
            for old in owned:  # the garbage collector's work, for our own slices
                self.client.delete(ENDPOINT_SLICE, namespace, old["metadata"]["name"])
            return
        wanted = self._desired(service)
        chunks = [wanted[i : i + MAX_PER_SLICE] for i in range(0, len(wanted), MAX_PER_SLICE)]
        chunks = chunks or [[]]
        ports = _slice_ports(service, self._pods(namespace, selector))
        for i, endpoints in enumerate(chunks):
            body = _slice_body(service, endpoints, ports)
            if i < len(owned):
                current = owned[i]
                if all(current.get(k) == body[k] for k in ("endpoints", "ports", "addressType")):
                    continue
                current.update({k: body[k] for k in ("endpoints", "ports", "addressType")})
                self.client.update(ENDPOINT_SLICE, current)
            else:
                self.client.create(ENDPOINT_SLICE, namespace, body)
        for extra in owned[len(chunks) :]:
            self.client.delete(ENDPOINT_SLICE, namespace, extra["metadata"]["name"])

    def _pods(self, namespace: str, selector: dict[str, str]) -> list[Obj]:
        labels = Selector.parse(",".join(f"{k}={v}" for k, v in selector.items()), "")
        return [p for p in self.client.list(POD, namespace) if labels.matches(p["metadata"])]

    def _desired(self, service: Obj) -> list[Obj]:
        namespace = service["metadata"]["namespace"]
        zones = {
            n["metadata"]["name"]: n["metadata"].get("labels", {}).get(ZONE)
            for n in self.client.list(NODE)
        }
        endpoints = []
        for pod in self._pods(namespace, service["spec"]["selector"]):
            status = pod.get("status") or {}
            if not status.get("podIP"):
                continue
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions", [])
            )
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            node = pod.get("spec", {}).get("nodeName")
            endpoint: dict[str, Any] = {
                "addresses": [status["podIP"]],
                "conditions": {
                    "ready": ready and not terminating,
                    "serving": ready,
                    "terminating": terminating,
                },
                "nodeName": node,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
            if zones.get(node):
                endpoint["zone"] = zones[node]
            endpoints.append(endpoint)
        endpoints.sort(key=lambda e: e["targetRef"]["name"])
        return endpoints


def _slice_ports(service: Obj, pods: list[Obj]) -> list[Obj]:
    """Service ports with their target port resolved against the pods'
    container ports (a named targetPort takes the first pod that has it)."""
    named: dict[str, int] = {}
    for pod in pods:
        for container in pod.get("spec", {}).get("containers", []):
            for port in container.get("ports", []):
                if port.get("name"):
                    named.setdefault(port["name"], port["containerPort"])
    out = []
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        number = named.get(target) if isinstance(target, str) else target
        if number is None:
            continue
        out.append(
            {"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")}
        )
    return out


def _slice_body(service: Obj, endpoints: list[Obj], ports: list[Obj]) -> Obj:
    meta = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": {SERVICE_NAME: meta["name"], MANAGED_BY: CONTROLLER},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }
