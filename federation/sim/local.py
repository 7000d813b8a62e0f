"""In-process access to an emulated apiserver for the simulated kubelet,
EndpointSlice controller and kube-proxy.

They are the simulation's control plane, so they call ``KubeApi`` directly
(validation included) rather than over HTTP, and follow changes through the
object store's watch, level-triggered: an event names what to look at again,
the handler reads the current state.  A dropped watch resumes from the last
revision; a compacted one relists and hands every object to ``resync``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import Obj, ResourceType
from federation.sim.kube.selectors import Selector
from federation.sim.kube.server import KubeApi

Handler = Callable[[str, Obj], Awaitable[None]]


class LocalClient:
    def __init__(self, api: KubeApi, log: logging.LoggerAdapter[Any]) -> None:
        self.api = api
        self.log = log

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        try:
            return self.api.store.get(rt, namespace, name)
        except KubeError:
            return None

    def list(self, rt: ResourceType, namespace: str | None = None, labels: str = "") -> list[Obj]:
        items, _ = self.api.store.list(rt, namespace, Selector.parse(labels, ""))
        return items

    def create(self, rt: ResourceType, namespace: str, obj: Obj) -> Obj:
        return self.api.create(self.api.target(rt, namespace), obj)

    def update(self, rt: ResourceType, obj: Obj, *, status: bool = False) -> Obj:
        meta = obj["metadata"]
        target = self.api.target(
            rt, meta.get("namespace"), meta["name"], "status" if status else None
        )
        return self.api.update(target, obj)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> None:
        try:
            self.api.delete(self.api.target(rt, namespace, name))
        except KubeError as err:
            if err.code != 404:
                raise

    async def follow(self, rt: ResourceType, handle: Handler) -> None:
        """Hand every change of ``rt`` to ``handle`` until cancelled."""
        since: int | None = None
        while True:
            try:
                sub = self.api.store.subscribe(rt, None, Selector(), since)
            except KubeError:  # compacted past our revision: start over from a list
                since = None
                continue
            try:
                while (event := await sub.queue.get()) is not None:
                    since = event.revision
                    try:
                        await handle(event.type, event.obj)
                    except KubeError as err:
                        self.log.warning("%s: %s (will retry on the next change)", rt.kind, err)
            finally:
                self.api.store.unsubscribe(sub)
