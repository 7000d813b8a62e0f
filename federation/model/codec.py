"""The stored form of the top-level records: canonical JSON bytes."""

from __future__ import annotations

import json
from typing import TypeVar

from federation.model.policy import TrafficPolicy
from federation.model.records import Cluster, EndpointSet, Workload
from federation.model.validation import ValidationError

_RecordT = TypeVar("_RecordT", Cluster, Workload, EndpointSet, TrafficPolicy)

__all__ = ["decode", "encode"]


def encode(record: Cluster | Workload | EndpointSet | TrafficPolicy) -> bytes:
    """Canonical JSON bytes of a top-level record, as the store keeps it."""
    return json.dumps(record.to_wire(), separators=(",", ":"), sort_keys=True).encode()


def decode(kind: type[_RecordT], raw: bytes | str) -> _RecordT:
    """Parse JSON bytes into ``kind``; malformed JSON is a ValidationError too."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValidationError("", f"malformed JSON: {err}") from None
    return kind.from_wire(data)
