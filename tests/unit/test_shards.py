"""agents/cluster/shards.py: stable shards, bounded by count and bytes."""

from __future__ import annotations

import json

from agents.cluster.shards import assign
from federation.model import MAX_SET_BYTES, Endpoint, EndpointPort, Locality

HERE = Locality(region="us", zone="us-1a", cluster="east")


def endpoint(i: int, ports: int = 1, ready: bool = True) -> Endpoint:
    return Endpoint(
        address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
        ports=tuple(EndpointPort(name=f"p{p}", port=8000 + p) for p in range(ports)),
        locality=HERE,
        ready=ready,
    )


def test_a_small_set_is_one_shard() -> None:
    endpoints = tuple(endpoint(i) for i in range(10))
    assert list(assign(endpoints, {})) == [0]


def test_shards_hold_at_most_the_bound_and_cover_every_endpoint_once() -> None:
    endpoints = tuple(endpoint(i) for i in range(5000))
    shards = assign(endpoints, {})
    assert len(shards) == 5
    assert all(len(members) <= 1000 for members in shards.values())
    assert sorted(e.address for m in shards.values() for e in m) == sorted(
        e.address for e in endpoints
    )


def test_one_endpoint_change_rewrites_one_shard() -> None:
    endpoints = tuple(endpoint(i) for i in range(3500))
    before = assign(endpoints, {})
    flipped = tuple(endpoint(i, ready=i != 1234) for i in range(3500))
    after = assign(flipped, before)
    changed = [n for n in after if after[n] != before.get(n)]
    assert len(changed) == 1
    removed = tuple(e for e in endpoints if e.address != endpoint(42).address)
    after = assign(removed, before)
    assert [n for n in after if after[n] != before.get(n)] == [0]


def test_a_new_endpoint_goes_to_a_shard_with_room_and_an_empty_shard_is_dropped() -> None:
    endpoints = tuple(endpoint(i) for i in range(2500))
    before = assign(endpoints, {})
    grown = assign((*endpoints, endpoint(9999)), before)
    assert [n for n in grown if grown[n] != before.get(n)] == [2]  # shard 2 has room
    shrunk = assign(before[0], before)
    assert list(shrunk) == [0]


def test_shards_stay_under_the_byte_bound() -> None:
    """1,000 endpoints x 100 ports is one endpoint bound but four byte bounds."""
    endpoints = tuple(endpoint(i, ports=100) for i in range(1000))
    shards = assign(endpoints, {})
    assert len(shards) > 1
    for members in shards.values():
        size = len(json.dumps([e.to_wire() for e in members], separators=(",", ":")))
        assert size < MAX_SET_BYTES
