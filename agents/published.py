"""What this client last published, per shard, so that the next publish
of a shard can be a delta (``federation.model.deltas``, decision 50).

Bounded by the endpoints it holds, not by shards: past the bound the
least recently published shards are forgotten, and their next publish is
whole.  A shard is forgotten too when its publish fails (the registry may
hold either version) and when it is withdrawn."""

from __future__ import annotations

from collections import OrderedDict

from federation.model import EndpointSet, ServiceRef, SourceRef

MEMORY_ENDPOINTS = 100_000  # about 10 MiB of endpoint records

ShardId = tuple[ServiceRef, SourceRef, int]

__all__ = ["MEMORY_ENDPOINTS", "Published"]


class Published:
    def __init__(self, limit: int = MEMORY_ENDPOINTS) -> None:
        self.limit = limit
        self._sets: OrderedDict[ShardId, EndpointSet] = OrderedDict()
        self._endpoints = 0

    @staticmethod
    def shard_of(endpoint_set: EndpointSet) -> ShardId:
        return (endpoint_set.service, endpoint_set.source, endpoint_set.shard)

    def take(self, endpoint_set: EndpointSet) -> EndpointSet | None:
        """What was last published for ``endpoint_set``'s shard, forgotten
        until ``keep`` is called again (after the publish succeeded)."""
        last = self._sets.pop(self.shard_of(endpoint_set), None)
        if last is not None:
            self._endpoints -= len(last.endpoints)
        return last

    def keep(self, endpoint_set: EndpointSet) -> None:
        self.take(endpoint_set)
        self._sets[self.shard_of(endpoint_set)] = endpoint_set
        self._endpoints += len(endpoint_set.endpoints)
        while self._endpoints > self.limit and self._sets:
            _, old = self._sets.popitem(last=False)
            self._endpoints -= len(old.endpoints)

    def forget(self, service: ServiceRef, source: SourceRef, shard: int | None = None) -> None:
        for key in [k for k in self._sets if k[0] == service and k[1] == source]:
            if shard is None or key[2] == shard:
                self._endpoints -= len(self._sets.pop(key).endpoints)

    def __len__(self) -> int:
        return len(self._sets)
