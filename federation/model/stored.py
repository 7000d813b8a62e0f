"""A stored shard's bytes taken apart at its endpoints, none decoded.

A churning source flips one endpoint of a 100-endpoint shard.  Applying
its delta to the decoded shard decoded all 100 endpoints (20 KB), encoded
them again, and compared them all to find what the watch's PATCH line
says; at 325 updates a second that was a sixth of the etcd-backed
registry's loop (docs/performance.md, run N).  The stored form is
canonical (``codec.encode``: orjson, sorted keys, no spaces), so it can be
cut at its endpoints instead (decision 60):

- the set-level fields are what lies before ``"endpoints":[`` (only
  ``changedAt`` sorts first) and after the array's end (the next key is
  ``exportedAt`` when set, else ``generation``);
- every endpoint's object starts with its ``address`` key (nothing sorts
  before it), and ``},{"address":`` cannot occur inside one: a quote in a
  string is escaped, and no nested object has an ``address`` key.

``Split.of`` answers None for anything not in that form (another writer,
a future field): the caller decodes, as before.  ``joined`` is what
``codec.encode`` gives for the same set, byte for byte."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ShardSummary", "Split", "array", "joined", "summarize"]

_OPEN = b'{"address":'
_BETWEEN = b'},{"address":'
_HEAD = re.compile(rb'\{"changedAt":[-+.eE0-9]+,"endpoints":\[')
_KEY = len(b'"endpoints":[')
_ENDS = (b'],"exportedAt":', b'],"generation":')  # what follows the array, by which is set
# ready and not terminating (serving sorts between them), as ``summarize`` counts
_READY = (
    b'"ready":true,"serving":true,"terminating":false',
    b'"ready":true,"serving":false,"terminating":false',
)


@dataclass(frozen=True, slots=True)
class Split:
    """``header``: every field but the endpoints, decoded; ``endpoints``:
    each endpoint's stored bytes, in order."""

    header: dict[str, Any]
    endpoints: list[bytes]

    @classmethod
    def of(cls, value: bytes) -> Split | None:
        head = _HEAD.match(value)
        if head is None:
            return None
        start = head.end()
        end = -1
        for marker in _ENDS:
            end = value.rfind(marker, start)
            if end >= 0:
                break
        if end < 0:
            return None
        try:
            header = orjson.loads(value[: start - _KEY] + value[end + 2 :])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(header, dict) or "endpoints" in header:
            return None
        body = value[start:end]
        if not body:
            return cls(header, [])
        if not (body.startswith(_OPEN) and body.endswith(b"}")):
            return None
        return cls(header, [_OPEN + part + b"}" for part in body[len(_OPEN) : -1].split(_BETWEEN)])


def array(endpoints: Sequence[bytes]) -> bytes:
    """The stored endpoints array of these endpoints."""
    return b"[" + b",".join(endpoints) + b"]"


def joined(header: dict[str, Any], endpoints: bytes) -> bytes:
    """The stored bytes of the set with ``header`` (``header_wire``'s
    fields) and ``endpoints`` (an ``array``)."""
    return orjson.dumps(
        {**header, "endpoints": orjson.Fragment(endpoints)}, option=orjson.OPT_SORT_KEYS
    )


@dataclass(frozen=True, slots=True)
class ShardSummary:
    """What the dashboard shows of a shard: a few integers, not the set."""

    endpoints: int
    ready: int
    stale: bool
    generation: int

    @classmethod
    def of_split(cls, header: dict[str, Any], count: int, endpoints: bytes) -> ShardSummary:
        """The summary of the set ``joined(header, endpoints)``, which has
        ``count`` endpoints, counted in the bytes."""
        ready = sum(endpoints.count(pattern) for pattern in _READY)
        return cls(count, ready, bool(header.get("stale")), int(header.get("generation", 0)))


def summarize(value: bytes, decoded: Any = None) -> ShardSummary | None:
    """The shard's counts; ``decoded``: ``value`` already decoded."""
    try:
        obj = orjson.loads(value) if decoded is None else decoded
        endpoints = obj.get("endpoints") or []
        return ShardSummary(
            endpoints=len(endpoints),
            ready=sum(1 for e in endpoints if e.get("ready", True) and not e.get("terminating")),
            stale=bool(obj.get("stale")),
            generation=int(obj.get("generation", 0)),
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None
