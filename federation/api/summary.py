"""What the dashboard shows of every endpoint set, kept by the watch hub.

Per shard a few integers (endpoints, ready, stale, generation), not the
set: 2,550 shards are about 300 KB, where their values are 50 MB.  Loaded
from a snapshot when the hub starts and kept by the hub's own events, so a
dashboard page costs no store read however often it refreshes."""

from __future__ import annotations

from typing import Any

from federation.model import keys
from federation.model.stored import ShardSummary, summarize
from federation.model.validation import ValidationError
from federation.registry import Change, Item, Registry


class Summary:
    def __init__(self) -> None:
        # service -> source -> shard -> summary
        self._shards: dict[str, dict[str, dict[int, ShardSummary]]] = {}

    async def load(self, registry: Registry) -> None:
        self._shards.clear()
        async for _, items in registry.snapshot():
            for item in items:
                self._take(item)

    def observe(
        self, change: Change, decoded: Any = None, counted: ShardSummary | None = None
    ) -> None:
        """Take a change; ``decoded``: its new value as ``change.decoded()``
        gave it; ``counted``: its summary, when the writer counted it."""
        self._take(change.item, decoded, counted)

    def _take(self, item: Item, decoded: Any = None, counted: ShardSummary | None = None) -> None:
        if item.kind != "EndpointSet":
            return
        try:
            where = keys.parse_shard(item.key)
        except ValidationError:
            return
        service, source = str(where.service), str(where.source)
        sources = self._shards.setdefault(service, {})
        shards = sources.setdefault(source, {})
        if item.value is None:
            summary = None
        else:
            summary = counted if counted is not None else summarize(item.value, decoded)
        if summary is None:
            shards.pop(where.shard, None)
            if not shards:
                sources.pop(source, None)
            if not sources:
                self._shards.pop(service, None)
        else:
            shards[where.shard] = summary

    def stale_sources(self) -> dict[str, int]:
        """Per source, how many of its shards are stale."""
        out: dict[str, int] = {}
        for sources in self._shards.values():
            for source, shards in sources.items():
                count = sum(1 for s in shards.values() if s.stale)
                if count:
                    out[source] = out.get(source, 0) + count
        return out

    def services(self, text: str, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """The services whose name contains ``text``, in name order: how
        many, and the page from ``offset``."""
        names = sorted(n for n in self._shards if text in n)
        page = []
        for name in names[offset : offset + limit]:
            sources = []
            for source, shards in sorted(self._shards[name].items()):
                sources.append(
                    {
                        "source": source,
                        "shards": len(shards),
                        "endpoints": sum(s.endpoints for s in shards.values()),
                        "ready": sum(s.ready for s in shards.values()),
                        "stale": any(s.stale for s in shards.values()),
                    }
                )
            page.append({"service": name, "sources": sources})
        return len(names), page


__all__ = ["ShardSummary", "Summary", "summarize"]
