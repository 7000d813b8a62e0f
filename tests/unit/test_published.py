"""The client's memory of what it last published is bounded in endpoints,
least recently published first, and forgets a withdrawn shard."""

from __future__ import annotations

from dataclasses import replace

from agents.published import Published
from tests.contract.registry_http.test_patches import CART, EAST, hundred


def test_the_memory_is_bounded_in_endpoints_oldest_first() -> None:
    memory = Published(limit=250)
    shards = [replace(hundred(1), shard=n) for n in range(3)]
    for shard in shards:
        memory.keep(shard)
    assert len(memory) == 2  # 300 endpoints over 250: shard 0 forgotten
    assert memory.take(shards[0]) is None
    assert memory.take(shards[2]) == shards[2]
    assert memory.take(shards[2]) is None  # taken until kept again


def test_a_withdrawn_shard_is_forgotten() -> None:
    memory = Published()
    for n in range(3):
        memory.keep(replace(hundred(1), shard=n))
    memory.forget(CART, EAST, 1)
    assert len(memory) == 2
    memory.forget(CART, EAST)
    assert len(memory) == 0
