"""Traffic policies: how the consumers of one service choose among its
sources (an explicit failover order, the healthy threshold, the failback
hold-down, weights, and how long a stale source is kept)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from federation.model.records import MAX_ENDPOINTS_PER_SET, MAX_WEIGHT, ServiceRef, SourceRef
from federation.model.validation import (
    MAX_LABELS,
    Fields,
    ValidationError,
    check_dns_label,
    check_int,
    check_label_value,
    check_number,
    require_str,
)

MAX_FAILOVER_TARGETS = 32
MAX_GRACE_SECONDS = 30 * 86400.0

__all__ = ["MAX_FAILOVER_TARGETS", "FailoverTarget", "TrafficPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverTarget:
    """One step of an explicit failover order; empty fields match anything."""

    region: str = ""
    zone: str = ""
    cluster: str = ""

    def __post_init__(self) -> None:
        check_label_value("region", self.region)
        check_label_value("zone", self.zone)
        if self.cluster:
            check_dns_label("cluster", self.cluster)
        if not (self.region or self.zone or self.cluster):
            raise ValidationError("", "a failover target names a region, zone or cluster")

    def to_wire(self) -> dict[str, Any]:
        return {"region": self.region, "zone": self.zone, "cluster": self.cluster}

    @classmethod
    def from_wire(cls, data: object) -> FailoverTarget:
        f = Fields(data, frozenset({"region", "zone", "cluster"}))
        return cls(
            region=require_str("region", f.get("region", "")),
            zone=require_str("zone", f.get("zone", "")),
            cluster=require_str("cluster", f.get("cluster", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficPolicy:
    """How consumers of one service choose among its sources."""

    service: ServiceRef
    failover: tuple[FailoverTarget, ...] = ()
    min_healthy: int = 1
    failback_hold_down_seconds: float = 30.0
    weights: Mapping[str, int] = field(default_factory=dict)
    # How long a source whose lease expired stays usable (as a last resort)
    # before it is gone for this service's consumers; None: kept until it
    # comes back or is removed (static stability).
    stale_grace_seconds: float | None = None

    def __post_init__(self) -> None:
        if len(self.failover) > MAX_FAILOVER_TARGETS:
            raise ValidationError("failover", f"at most {MAX_FAILOVER_TARGETS} targets")
        check_int("minHealthy", self.min_healthy, 0, MAX_ENDPOINTS_PER_SET)
        check_number("failbackHoldDownSeconds", self.failback_hold_down_seconds, 0.0, 86400.0)
        if self.stale_grace_seconds is not None:
            check_number("staleGraceSeconds", self.stale_grace_seconds, 0.0, MAX_GRACE_SECONDS)
        if len(self.weights) > MAX_LABELS:
            raise ValidationError("weights", f"at most {MAX_LABELS} sources")
        for source, weight in self.weights.items():
            try:
                SourceRef.parse(source)
            except ValidationError as err:
                raise err.within(f"weights[{source!r}]") from None
            check_int(f"weights[{source!r}]", weight, 0, MAX_WEIGHT)

    def to_wire(self) -> dict[str, Any]:
        return {
            "service": self.service.to_wire(),
            "failover": [t.to_wire() for t in self.failover],
            "minHealthy": self.min_healthy,
            "failbackHoldDownSeconds": self.failback_hold_down_seconds,
            "weights": dict(self.weights),
            "staleGraceSeconds": self.stale_grace_seconds,
        }

    @classmethod
    def from_wire(cls, data: object) -> TrafficPolicy:
        known = {"service", "failover", "minHealthy", "failbackHoldDownSeconds", "weights"}
        known |= {"staleGraceSeconds"}
        f = Fields(data, frozenset(known))
        weights = f.get("weights", {})
        if not isinstance(weights, Mapping):
            raise ValidationError("weights", "expected an object of source to weight")
        grace = f.get("staleGraceSeconds", None)
        return cls(
            service=f.nested("service", ServiceRef.from_wire),
            failover=f.items("failover", FailoverTarget.from_wire, MAX_FAILOVER_TARGETS),
            min_healthy=check_int("minHealthy", f.get("minHealthy", 1), 0, MAX_ENDPOINTS_PER_SET),
            failback_hold_down_seconds=check_number(
                "failbackHoldDownSeconds", f.get("failbackHoldDownSeconds", 30.0), 0.0, 86400.0
            ),
            weights={
                str(k): check_int(f"weights[{k!r}]", v, 0, MAX_WEIGHT) for k, v in weights.items()
            },
            stale_grace_seconds=None
            if grace is None
            else check_number("staleGraceSeconds", grace, 0.0, MAX_GRACE_SECONDS),
        )
