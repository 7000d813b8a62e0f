"""Leader election on a coordination.k8s.io Lease, as client-go does it: the
holder renews every ``retry`` seconds; another replica takes the Lease only
after it has gone unrenewed for ``duration``; every write is a replace
guarded by resourceVersion, so two replicas never both win.  A leader that
cannot renew for ``duration`` steps down on its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agents.cluster.kube import LEASES, Conflict, Kube, KubeError, Obj, ensure_namespace
from federation.shared.clock import Clock, SystemClock
from federation.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def _micro(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> float:
    if not text:
        return 0.0
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        identity: str,
        *,
        namespace: str = "federation-system",
        name: str = "federation-agent",
        duration: float = 15.0,
        clock: Clock | None = None,
    ) -> None:
        self.kube = kube
        self.identity = identity
        self.namespace = namespace
        self.name = name
        self.duration = duration
        self.retry = duration / 3
        self.clock = clock or SystemClock()
        self.leading = False
        self._renewed = 0.0

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``lead()`` whenever this replica holds the Lease; cancel it
        when it does not.  Until cancelled."""
        task: asyncio.Task[None] | None = None
        try:
            while True:
                won = await self._try()
                now = self.clock.now()
                if won:
                    self._renewed = now
                held = won or (self.leading and now - self._renewed < self.duration)
                if held and task is None:
                    log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
                    task = asyncio.create_task(lead(), name="leader-work")
                elif not held and task is not None:
                    log.warning("%s lost the lease; stopping its work", self.identity)
                    for error in await cancel_and_wait(task):
                        log.warning("%s: its work ended with %s", self.identity, error)
                    task = None
                if task is not None and task.done():
                    task.result()  # a crash of the work ends the election loop too
                self.leading = held
                await self.clock.sleep(self.retry)
        finally:
            self.leading = False
            if task is not None:
                for error in await cancel_and_wait(task):
                    log.warning("%s: its work ended with %s", self.identity, error)

    async def _try(self) -> bool:
        try:
            return await self._acquire_or_renew()
        except KubeError as err:
            log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            return False

    async def _acquire_or_renew(self) -> bool:
        now = self.clock.now()
        lease = await self.kube.get(LEASES, self.namespace, self.name)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": _micro(now),
        }
        if lease is None:
            await ensure_namespace(self.kube, self.namespace)
            body: Obj = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0},
            }
            try:
                await self.kube.create(LEASES, self.namespace, body)
            except Conflict:
                return False
            return True
        current = lease.get("spec", {})
        holder = current.get("holderIdentity")
        expires = _parse(current.get("renewTime")) + float(
            current.get("leaseDurationSeconds") or self.duration
        )
        if holder != self.identity and now < expires:
            return False
        if holder != self.identity:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = {**current, **spec}
        try:
            await self.kube.replace(LEASES, self.namespace, self.name, lease)
        except Conflict:
            return False
        return True


__all__ = ["LeaderElector"]
