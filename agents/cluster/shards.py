"""Stable shards of one source's endpoints, as the EndpointSlice controller
keeps slices: an endpoint stays in the shard it was in while it exists, a
new endpoint goes to the lowest shard with room, and a shard that empties is
dropped.  So one endpoint's change rewrites one shard, not all of them.

A shard holds at most ``MAX_ENDPOINTS_PER_SET`` endpoints and stays under
the stored-size bound ``MAX_SET_BYTES``, with room for its header and ports."""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping

from federation.model import MAX_ENDPOINTS_PER_SET, MAX_SET_BYTES, Endpoint

HEADER_ROOM = 16 * 1024  # service, source, generation, ports, stale fields


@functools.lru_cache(maxsize=65536)
def weight(endpoint: Endpoint) -> int:
    """An endpoint's share of a shard's stored bytes (remembered: a large
    service's export re-shards its unchanged endpoints on every change)."""
    return len(json.dumps(endpoint.to_wire(), separators=(",", ":"))) + 1


def assign(
    endpoints: tuple[Endpoint, ...],
    previous: Mapping[int, tuple[Endpoint, ...]],
    *,
    max_endpoints: int = MAX_ENDPOINTS_PER_SET,
    max_bytes: int = MAX_SET_BYTES - HEADER_ROOM,
) -> dict[int, tuple[Endpoint, ...]]:
    """The shards (number -> endpoints in address order) for ``endpoints``,
    keeping each one where ``previous`` had it when it still fits."""
    home = {e.address: shard for shard, members in previous.items() for e in members}
    shards: dict[int, list[Endpoint]] = {}
    sizes: dict[int, int] = {}
    homeless: list[Endpoint] = []
    for endpoint in sorted(endpoints, key=_order):
        shard = home.get(endpoint.address)
        if shard is None or not _fits(shards, sizes, shard, endpoint, max_endpoints, max_bytes):
            homeless.append(endpoint)
            continue
        _put(shards, sizes, shard, endpoint)
    for endpoint in homeless:
        shard = 0
        while not _fits(shards, sizes, shard, endpoint, max_endpoints, max_bytes):
            shard += 1
        _put(shards, sizes, shard, endpoint)
    return {shard: tuple(sorted(members, key=_order)) for shard, members in shards.items()}


def _fits(
    shards: dict[int, list[Endpoint]],
    sizes: dict[int, int],
    shard: int,
    endpoint: Endpoint,
    max_endpoints: int,
    max_bytes: int,
) -> bool:
    members = shards.get(shard, [])
    if not members:
        return True  # a shard always takes one endpoint
    return len(members) < max_endpoints and sizes[shard] + weight(endpoint) <= max_bytes


def _put(
    shards: dict[int, list[Endpoint]], sizes: dict[int, int], shard: int, endpoint: Endpoint
) -> None:
    shards.setdefault(shard, []).append(endpoint)
    sizes[shard] = sizes.get(shard, 0) + weight(endpoint)


def _order(endpoint: Endpoint) -> tuple[int, int]:
    ip = ipaddress.ip_address(endpoint.address)
    return ip.version, int(ip)


__all__ = ["assign", "weight"]
