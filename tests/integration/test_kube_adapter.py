"""agents/cluster/kube.py against the emulator: the Informer keeps a cache
by list and watch (and its label index), the LeaderElector hands the Lease
over when its holder stops, and refusals arrive as kinds (NotFound,
Conflict, Invalid with the Status causes' field paths)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from agents.cluster.kube import (
    CONFIG_MAPS,
    ENDPOINT_SLICES,
    Conflict,
    Informer,
    Invalid,
    Kube,
    NotFound,
    Obj,
)
from agents.cluster.leader import LeaderElector
from federation.sim.kube.app import SimKubeServer
from tests.support import eventually

NS = "default"


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[Kube]:
    async with SimKubeServer("adapter", bookmark_interval=0.05) as server:
        made = await Kube.from_kubeconfig(server.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            yield made
        finally:
            await made.close()


def config_map(name: str, app: str) -> Obj:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"app": app}}, "data": {}}


async def test_the_informer_follows_creates_updates_and_deletes(kube: Kube) -> None:
    seen: list[Obj | None] = []
    informer = Informer(kube, CONFIG_MAPS, seen.append, index_labels=("app",))
    await kube.create(CONFIG_MAPS, NS, config_map("before", "a"))
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 10)
        assert seen == [None]  # the list: anything may have changed
        assert [o["metadata"]["name"] for o in informer.by_label("app", NS, "a")] == ["before"]

        created = await kube.create(CONFIG_MAPS, NS, config_map("after", "a"))
        await eventually(lambda: informer.get(NS, "after") is not None, what="the create")
        moved = {**created, "metadata": {**created["metadata"], "labels": {"app": "b"}}}
        await kube.replace(CONFIG_MAPS, NS, "after", moved)
        await eventually(
            lambda: [o["metadata"]["name"] for o in informer.by_label("app", NS, "b")] == ["after"],
            what="the label moved in the index",
        )
        assert [o["metadata"]["name"] for o in informer.by_label("app", NS, "a")] == ["before"]
        await kube.delete(CONFIG_MAPS, NS, "before")
        await eventually(lambda: informer.get(NS, "before") is None, what="the delete")
        assert informer.by_label("app", NS, "a") == []
        deleted = [o for o in seen if o is not None and o["metadata"]["name"] == "before"]
        assert deleted, "the deleted object is reported as last seen"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_refusals_arrive_as_kinds(kube: Kube) -> None:
    assert await kube.get(CONFIG_MAPS, NS, "missing") is None
    with pytest.raises(NotFound):
        await kube.replace(CONFIG_MAPS, NS, "missing", config_map("missing", "a"))
    made = await kube.create(CONFIG_MAPS, NS, config_map("once", "a"))
    with pytest.raises(Conflict):
        await kube.create(CONFIG_MAPS, NS, config_map("once", "a"))
    stale = {**made, "metadata": {**made["metadata"], "resourceVersion": "1"}}
    with pytest.raises(Conflict):
        await kube.replace(CONFIG_MAPS, NS, "once", stale)
    loopback = {
        "metadata": {"name": "bad", "namespace": NS},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"]}],
        "ports": [],
    }
    with pytest.raises(Invalid) as refused:
        await kube.create(ENDPOINT_SLICES, NS, loopback)
    assert refused.value.status == 422
    assert refused.value.fields == ["endpoints[0].addresses[0]"]


async def test_the_lease_passes_to_the_other_replica_when_its_holder_stops(kube: Kube) -> None:
    working: set[str] = set()

    def work(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def lead() -> None:
            working.add(name)
            try:
                await asyncio.Event().wait()
            finally:
                working.discard(name)

        return lead

    a = LeaderElector(kube, "replica-a", namespace="federation-system", duration=1.0)
    b = LeaderElector(kube, "replica-b", namespace="federation-system", duration=1.0)
    running_a = asyncio.create_task(a.run(work("a")))
    await eventually(lambda: a.leading and working == {"a"}, what="a leading")
    running_b = asyncio.create_task(b.run(work("b")))
    try:
        await eventually(lambda: not b.leading, what="b following")
        running_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running_a
        assert working == set() and not a.leading  # a's work stopped with it
        await eventually(lambda: b.leading and working == {"b"}, timeout=10, what="b took over")
    finally:
        for task in (running_a, running_b):
            task.cancel()
        await asyncio.gather(running_a, running_b, return_exceptions=True)
