"""A publisher's delta: the change from the shard it last published to the
one it publishes now, sent instead of the whole shard.

A churning source flips one endpoint of a 100-endpoint shard.  Sent whole,
the registry decodes and checks all 100 endpoints to store one change
(docs/performance.md, run K); sent as a delta it checks what changed.  The
registry applies the delta to the stored shard's JSON, never decoding the
unchanged endpoints into records: they were checked when they were first
written, and only their claims are checked again (decision 50).

The body (``PATCH /v1/services/{ns}/{name}/sources/{source}``, docs/api.md):

- ``shard``: which shard (0 when absent);
- ``baseGeneration``: the generation the delta was computed from; the
  registry applies it only to exactly that stored generation (409
  otherwise: the publisher sends the whole shard instead);
- ``fields``: the set-level fields that change, ``generation`` always
  (newer than the base); never ``stale`` or ``staleSince``, the registry's;
- ``endpoints``: splices ``[start, end, [endpoint, ...]]`` as in the watch's
  PATCH lines (``federation.model.patches``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from federation.model.claims import Claim, wire_claims
from federation.model.patches import (
    WORTH,
    Misfit,
    Splice,
    apply_splices,
    as_is,
    checked_fields,
    parse_splices,
    splices,
)
from federation.model.records import (
    MAX_SHARDS,
    Endpoint,
    EndpointSet,
    ServiceRef,
    SourceRef,
)
from federation.model.stored import Split
from federation.model.validation import Fields, Inconsistent, check_int

PUBLISHED_FIELDS = frozenset(
    {"generation", "ports", "changedAt", "headless", "sessionAffinity"}
    | {"sessionAffinityTimeoutSeconds", "exportedAt"}
)
_BODY_FIELDS = frozenset({"shard", "baseGeneration", "fields", "endpoints"})
MIN_ENDPOINTS = 8  # a shard this small is sent whole: a delta would save nothing

__all__ = ["MIN_ENDPOINTS", "PUBLISHED_FIELDS", "PublishDelta", "Rebased", "Spliced", "between"]


def _published(endpoint_set: EndpointSet) -> dict[str, Any]:
    return {
        "generation": endpoint_set.generation,
        "ports": [p.to_wire() for p in endpoint_set.ports],
        "changedAt": endpoint_set.changed_at,
        "headless": endpoint_set.headless,
        "sessionAffinity": endpoint_set.session_affinity.value,
        "sessionAffinityTimeoutSeconds": endpoint_set.affinity_timeout,
        "exportedAt": endpoint_set.exported_at,
    }


def between(old: EndpointSet, new: EndpointSet, *, worth: float = WORTH) -> dict[str, Any] | None:
    """The delta body from ``old`` (what was published) to ``new``, or
    None when the whole shard is the better message: another shard, not
    a newer generation, a small shard, or most endpoints changed."""
    if (old.service, old.source, old.shard) != (new.service, new.source, new.shard):
        return None
    if new.generation <= old.generation or len(new.endpoints) < MIN_ENDPOINTS:
        return None
    before, after = _published(old), _published(new)
    changes = splices(old.endpoints, new.endpoints)
    if sum(len(s[2]) for s in changes) >= worth * len(new.endpoints):
        return None
    return {
        "shard": new.shard,
        "baseGeneration": old.generation,
        "fields": {k: v for k, v in after.items() if before[k] != v},
        "endpoints": [[start, end, [e.to_wire() for e in items]] for start, end, items in changes],
    }


@dataclass(frozen=True, slots=True)
class Rebased:
    """A delta applied to a stored shard: the new set-level fields as a
    record without endpoints, and every endpoint in its stored form."""

    header: EndpointSet
    endpoints: list[dict[str, Any]]

    def claims(self) -> Iterator[Claim]:
        """Every endpoint's."""
        return wire_claims(self.endpoints)


@dataclass(frozen=True, slots=True)
class Spliced:
    """A delta applied to a stored shard's ``Split`` (decision 60): the new
    set-level fields as a record without endpoints, every endpoint's stored
    bytes, the endpoints the delta adds with their index in the result,
    and the delta's splices with those endpoints' bytes (a PATCH line's)."""

    header: EndpointSet
    endpoints: list[bytes]
    added: tuple[tuple[int, Endpoint], ...]
    splices: list[list[Any]]

    def claims(self) -> Iterator[Claim]:
        """The added endpoints' only: the others were checked when written."""
        for index, endpoint in self.added:
            yield index, endpoint.address, endpoint.locality


@dataclass(frozen=True, slots=True)
class PublishDelta:
    """A checked delta body: everything the stored shard need not be read
    for is checked here (a 400 or 422 before any read)."""

    service: ServiceRef
    source: SourceRef
    shard: int
    base: int
    fields: dict[str, Any]
    splices: tuple[Splice, ...]

    @classmethod
    def from_wire(cls, data: object, service: ServiceRef, source: SourceRef) -> PublishDelta:
        f = Fields(data, _BODY_FIELDS)
        shard = check_int("shard", f.get("shard", 0), 0, MAX_SHARDS - 1)
        base = check_int("baseGeneration", f.get("baseGeneration"), 0, 2**63 - 1)
        fields = f.get("fields")
        head = {"service": service.to_wire(), "source": str(source), "shard": shard}
        checked = checked_fields(head, fields, PUBLISHED_FIELDS)  # generation is required
        assert isinstance(fields, dict)  # checked_fields refuses anything else
        if checked.generation <= base:
            raise Inconsistent("fields.generation", f"must be newer than baseGeneration {base}")
        return cls(service, source, shard, base, fields, parse_splices(f.get("endpoints", [])))

    def onto(self, stored: dict[str, Any]) -> Rebased:
        """This delta applied to the stored shard's decoded JSON (which is
        not changed).  Misfit when the stored shard is not its base."""
        self._check_base(stored.get("generation"))
        endpoints = apply_splices(stored["endpoints"], self.splices, Endpoint.to_wire)
        header = {k: v for k, v in stored.items() if k != "endpoints"}
        return Rebased(EndpointSet.from_wire({**header, **self.fields}), endpoints)

    def onto_split(self, stored: Split) -> Spliced:
        """This delta applied to a stored shard taken apart, no endpoint of
        it decoded.  Misfit when the stored shard is not its base."""
        self._check_base(stored.header.get("generation"))
        encoded = tuple(
            (start, end, tuple(_stored(e) for e in items)) for start, end, items in self.splices
        )
        endpoints = apply_splices(stored.endpoints, encoded, as_is)
        added: list[tuple[int, Endpoint]] = []
        shift = 0
        for start, end, items in self.splices:
            added += ((start + shift + k, e) for k, e in enumerate(items))
            shift += len(items) - (end - start)
        splices = [
            [start, end, [orjson.Fragment(e) for e in items]] for start, end, items in encoded
        ]
        header = EndpointSet.from_wire({**stored.header, **self.fields})
        return Spliced(header, endpoints, tuple(added), splices)

    def _check_base(self, generation: object) -> None:
        if generation != self.base:
            raise Misfit(
                "baseGeneration",
                f"the stored shard is generation {generation}, not the delta's "
                f"base {self.base}; publish the whole shard",
            )


def _stored(endpoint: Endpoint) -> bytes:
    """An endpoint's bytes as ``codec.encode`` writes them within its set."""
    return orjson.dumps(endpoint.to_wire(), option=orjson.OPT_SORT_KEYS)
