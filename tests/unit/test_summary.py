"""api/summary.py: the dashboard's per-shard counts stay small and paged at
the size users run (2,500 services)."""

from __future__ import annotations

import json

from federation.api.summary import Summary
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    encode,
    keys,
)
from federation.registry import Change, Item


def shard(service: int, cluster: int, ready: int, stale: bool = False) -> Change:
    endpoint_set = EndpointSet(
        service=ServiceRef(namespace="shop", name=f"svc-{service:04d}"),
        source=SourceRef.parse(f"cluster:c{cluster}"),
        generation=1,
        stale=stale,
        endpoints=tuple(
            Endpoint(
                address=f"10.{cluster}.{service % 250}.{i + 1}",
                ports=(EndpointPort(name="http", port=80),),
                locality=Locality(region="r", zone="z", cluster=f"c{cluster}"),
                ready=i < ready,
            )
            for i in range(4)
        ),
    )
    key = keys.ShardKey(service=endpoint_set.service, source=endpoint_set.source).key
    return Change("PUT", 1, Item("EndpointSet", key, encode(endpoint_set)))


def test_a_page_of_2500_services_is_small_and_counts_ready_and_stale() -> None:
    summary = Summary()
    for service in range(2500):
        for cluster in range(2):
            summary.observe(shard(service, cluster, ready=3, stale=cluster == 1 and service < 10))
    total, page = summary.services("", 0, 50)
    assert total == 2500 and len(page) == 50
    assert len(json.dumps(page)) < 32 * 1024
    first = page[0]["sources"]
    assert [(s["source"], s["ready"], s["endpoints"], s["stale"]) for s in first] == [
        ("cluster:c0", 3, 4, False), ("cluster:c1", 3, 4, True),
    ]  # fmt: skip
    assert summary.stale_sources() == {"cluster:c1": 10}
    assert summary.services("svc-249", 0, 50)[0] == 10  # svc-2490 to svc-2499


def test_a_deleted_shard_leaves_nothing_behind() -> None:
    summary = Summary()
    put = shard(1, 0, ready=4)
    summary.observe(put)
    summary.observe(Change("DELETE", 2, Item("EndpointSet", put.item.key, None)))
    assert summary.services("", 0, 50) == (0, [])
