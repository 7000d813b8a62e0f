"""The stored form of the top-level records: canonical JSON bytes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from federation.model.members import Cluster, Workload
from federation.model.policy import TrafficPolicy
from federation.model.records import EndpointSet
from federation.model.validation import ValidationError

_RecordT = TypeVar("_RecordT", Cluster, Workload, EndpointSet, TrafficPolicy)

__all__ = ["decode", "encode", "encode_wire", "merge_shards"]


def encode(record: Cluster | Workload | EndpointSet | TrafficPolicy) -> bytes:
    """Canonical JSON bytes of a top-level record, as the store keeps it."""
    return orjson.dumps(record.to_wire(), option=orjson.OPT_SORT_KEYS)


def encode_wire(header: EndpointSet, endpoints: list[dict[str, Any]]) -> bytes:
    """What ``encode`` gives for ``header``'s set with ``endpoints`` (in
    their wire form), without building the endpoints into records: a
    publisher's delta applied to a stored shard (decision 50)."""
    return orjson.dumps(
        {**header.header_wire(), "endpoints": endpoints}, option=orjson.OPT_SORT_KEYS
    )


def decode(kind: type[_RecordT], raw: bytes | str) -> _RecordT:
    """Parse JSON bytes into ``kind``; malformed JSON is a ValidationError too."""
    try:
        data = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValidationError("", f"malformed JSON: {err}") from None
    return kind.from_wire(data)


def merge_shards(shards: Iterable[EndpointSet]) -> EndpointSet:
    """One source's shards of a service as one set: endpoints in shard
    order; the newest change time; stale if any shard is."""
    ordered = sorted(shards, key=lambda s: s.shard)
    if len(ordered) == 1:
        return ordered[0]
    first = ordered[0]
    return replace(
        first,
        shard=0,
        generation=max(s.generation for s in ordered),
        endpoints=tuple(e for s in ordered for e in s.endpoints),
        ports=next((s.ports for s in ordered if s.ports), ()),
        stale=any(s.stale for s in ordered),
        stale_since=min((s.stale_since for s in ordered if s.stale), default=0.0),
        changed_at=max(s.changed_at for s in ordered),
    )
