"""Which endpoints of a service a consumer should use: pure and shared.

Every endpoint gets a priority for the consumer: 0 same cluster, 1 same
zone, 2 same region, 3 elsewhere, or its position in a policy's explicit
failover order.  A level is *eligible* when it has at least ``min_healthy``
healthy endpoints from live (not stale) sources.  The consumer uses the
best eligible level; it moves to a worse level at once, but back to a
better one only after that level has stayed eligible for the hold-down.
With no eligible level it takes the best level with any healthy endpoint,
then stale sources' healthy endpoints as the last resort; a policy's
stale grace bounds how long a stale source counts at all.  A policy with
weights splits traffic between the weighted sources instead of by
locality, each source's share spread over its healthy endpoints.

The state a consumer carries between evaluations is the previous
``Choice``; time is passed in, so callers inject their clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from federation.model import Endpoint, EndpointSet, Locality, TrafficPolicy

SAME_CLUSTER, SAME_ZONE, SAME_REGION, ELSEWHERE = 0, 1, 2, 3
LOCALITY_LEVELS = ("same cluster", "same zone", "same region", "elsewhere")


@dataclass(frozen=True, slots=True, order=True)
class Chosen:
    address: str
    source: str
    weight: int
    endpoint: Endpoint = field(compare=False)


@dataclass(frozen=True, slots=True)
class Level:
    priority: int
    name: str
    sources: tuple[str, ...]
    endpoints: int
    healthy: int
    eligible: bool


@dataclass(frozen=True, slots=True)
class Choice:
    priority: int | None  # the level in use; None: a weighted split, or nothing healthy
    endpoints: tuple[Chosen, ...]
    levels: tuple[Level, ...]
    reason: str
    last_resort: bool = False  # serving stale sources' endpoints
    # When each level became continuously eligible, for the hold-down.
    eligible_since: Mapping[int, float] = field(default_factory=dict)
    gone: tuple[str, ...] = ()  # sources stale for longer than the policy's grace
    # ``endpoints`` by source, each the same tuple object while that source
    # is unchanged (with a Memo): lets a materializer skip unchanged sources.
    by_source: Mapping[str, tuple[Chosen, ...]] = field(default_factory=dict, compare=False)


def priority(consumer: Locality, at: Locality, policy: TrafficPolicy | None = None) -> int:
    """The priority of an endpoint at ``at`` for a consumer at ``consumer``."""
    if policy is not None and policy.failover:
        for index, target in enumerate(policy.failover):
            if (
                (not target.region or target.region == at.region)
                and (not target.zone or target.zone == at.zone)
                and (not target.cluster or target.cluster == at.cluster)
            ):
                return index
        return len(policy.failover)
    if consumer.region != at.region:
        return ELSEWHERE
    if consumer.cluster and consumer.cluster == at.cluster:
        return SAME_CLUSTER
    return SAME_ZONE if consumer.zone == at.zone else SAME_REGION


def level_name(index: int, policy: TrafficPolicy | None) -> str:
    if policy is not None and policy.failover:
        if index == len(policy.failover):
            return "not in the failover order"
        target = policy.failover[index]
        named = [f"{k}={v}" for k, v in target.to_wire().items() if v]
        return "failover " + ",".join(named)
    return LOCALITY_LEVELS[index]


def choose(
    sets: Iterable[EndpointSet],
    consumer: Locality,
    policy: TrafficPolicy | None,
    now: float,
    previous: Choice | None = None,
    memo: Memo | None = None,
) -> Choice:
    """``memo`` (optional, one per service) keeps each source's split into
    levels while its EndpointSet object is the same; the answer is the
    same with or without it."""
    grace = policy.stale_grace_seconds if policy is not None else None
    kept: list[EndpointSet] = []
    expired: list[str] = []
    for endpoint_set in sets:
        if grace is not None and endpoint_set.stale and now - endpoint_set.stale_since >= grace:
            expired.append(str(endpoint_set.source))
        else:
            kept.append(endpoint_set)
    choice = _choose(kept, consumer, policy, now, previous, memo)
    if not expired:
        return choice
    gone = tuple(sorted(expired))
    reason = f"{choice.reason}; gone after the {grace:g}s stale grace: {', '.join(gone)}"
    return replace(choice, reason=reason, gone=gone)


@dataclass(frozen=True, slots=True)
class Part:
    """One source's endpoints at one priority level, and its healthy ones
    as Chosen, in address order."""

    source: str
    members: tuple[Endpoint, ...]
    chosen: tuple[Chosen, ...]
    healthy: int


class Memo:
    """Per source, its Parts for one consumer and policy, kept while the
    caller passes the same EndpointSet object again.  One per service; a
    keyed reconciler that routes a 255-source service on every change of
    one source re-splits only that source."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[EndpointSet, object, Locality, dict[int, Part]]] = {}

    def get(
        self, endpoint_set: EndpointSet, consumer: Locality, policy: TrafficPolicy | None
    ) -> dict[int, Part] | None:
        hit = self._parts.get(str(endpoint_set.source))
        if hit is None or hit[0] is not endpoint_set or hit[1] is not policy:
            return None
        return hit[3] if hit[2] == consumer else None

    def put(
        self,
        endpoint_set: EndpointSet,
        consumer: Locality,
        policy: TrafficPolicy | None,
        parts: dict[int, Part],
    ) -> None:
        self._parts[str(endpoint_set.source)] = (endpoint_set, policy, consumer, parts)

    def keep_only(self, sources: Iterable[str]) -> None:
        wanted = set(sources)
        for source in [s for s in self._parts if s not in wanted]:
            del self._parts[source]


def _parts(
    endpoint_set: EndpointSet, consumer: Locality, policy: TrafficPolicy | None, memo: Memo | None
) -> dict[int, Part]:
    if memo is not None:
        known = memo.get(endpoint_set, consumer, policy)
        if known is not None:
            return known
    source = str(endpoint_set.source)
    by_level: dict[int, list[Endpoint]] = {}
    levels_seen: dict[Locality, int] = {}
    for endpoint in endpoint_set.endpoints:
        level = levels_seen.get(endpoint.locality)
        if level is None:
            level = levels_seen[endpoint.locality] = priority(consumer, endpoint.locality, policy)
        by_level.setdefault(level, []).append(endpoint)
    parts = {
        level: Part(
            source,
            tuple(members),
            _healthy([(source, e) for e in members]),
            sum(1 for e in members if e.healthy),
        )
        for level, members in by_level.items()
    }
    if memo is not None:
        memo.put(endpoint_set, consumer, policy, parts)
    return parts


def _at(
    level: int,
    parts: list[Part],
    levels: tuple[Level, ...],
    reason: str,
    since: dict[int, float],
    *,
    last_resort: bool = False,
) -> Choice:
    """The choice of ``level``: its parts' healthy endpoints, also by source."""
    return Choice(
        level,
        _chosen(parts),
        levels,
        reason,
        last_resort=last_resort,
        eligible_since=since,
        by_source={part.source: part.chosen for part in parts if part.chosen},
    )


def _chosen(parts: list[Part]) -> tuple[Chosen, ...]:
    """The healthy endpoints of ``parts`` (sources in order, each in address order)."""
    if len(parts) == 1:
        return parts[0].chosen
    return tuple(c for part in parts for c in part.chosen)


def _choose(
    sets: list[EndpointSet],
    consumer: Locality,
    policy: TrafficPolicy | None,
    now: float,
    previous: Choice | None,
    memo: Memo | None = None,
) -> Choice:
    sets = sorted(sets, key=lambda s: str(s.source))
    threshold = max(policy.min_healthy if policy else 1, 1)
    hold_down = policy.failback_hold_down_seconds if policy else 0.0
    live: dict[int, list[Part]] = {}
    stale: dict[int, list[Part]] = {}
    for endpoint_set in sets:
        into = stale if endpoint_set.stale else live
        for level, part in _parts(endpoint_set, consumer, policy, memo).items():
            into.setdefault(level, []).append(part)
    levels = tuple(_level(p, live.get(p, []), threshold, policy) for p in sorted(live))
    eligible = {lv.priority for lv in levels if lv.eligible}
    before = previous.eligible_since if previous is not None else {}
    since = {p: before.get(p, now) for p in eligible}

    if policy is not None and policy.weights:
        return _weighted(sets, policy, levels, since)

    current = previous.priority if previous is not None else None
    settled = [
        p
        for p in sorted(eligible)
        if current is None or p >= current or now - since[p] >= hold_down
    ]
    if settled:
        chosen = settled[0]
        reason = _reason(chosen, current, levels, threshold, policy)
        if current is not None and chosen != min(eligible):
            better = min(eligible)
            wait = hold_down - (now - since[better])
            reason += (
                f"; {level_name(better, policy)} is eligible again, failback after the "
                f"{hold_down:g}s hold-down ({wait:.1f}s left)"
            )
        return _at(chosen, live[chosen], levels, reason, since)
    if eligible:  # only better levels, still in hold-down, and the current one is gone
        chosen = min(eligible)
        reason = f"{level_name(chosen, policy)}: the only eligible level (hold-down waived)"
        return _at(chosen, live[chosen], levels, reason, since)
    partial = [lv.priority for lv in levels if lv.healthy]
    if partial:
        chosen = partial[0]
        reason = (
            f"no level has {threshold} healthy endpoints; using {level_name(chosen, policy)} "
            f"with {next(lv.healthy for lv in levels if lv.priority == chosen)}"
        )
        return _at(chosen, live[chosen], levels, reason, since)
    for p in sorted(stale):
        healthy = _chosen(stale[p])
        if healthy:
            reason = (
                f"no live source has a healthy endpoint; last resort: stale sources at "
                f"{level_name(p, policy)}"
            )
            return _at(p, stale[p], levels, reason, since, last_resort=True)
    return Choice(None, (), levels, "no healthy endpoint anywhere", eligible_since=since)


def _level(p: int, parts: list[Part], threshold: int, policy: TrafficPolicy | None) -> Level:
    healthy = sum(part.healthy for part in parts)
    sources = tuple(sorted({part.source for part in parts}))
    endpoints = sum(len(part.members) for part in parts)
    return Level(p, level_name(p, policy), sources, endpoints, healthy, healthy >= threshold)


def _healthy(members: list[tuple[str, Endpoint]], share: int = 0) -> tuple[Chosen, ...]:
    """The healthy members as Chosen, in Chosen's order (sorted as plain
    tuples first: at 25k endpoints, comparing dataclasses dominates)."""
    picked = [
        (e.address, s, share or e.weight, e)
        for s, e in members
        if e.healthy and (share or e.weight)
    ]
    picked.sort(key=_order_key)
    return tuple(Chosen(a, s, w, e) for a, s, w, e in picked)


def _order_key(item: tuple[str, str, int, Endpoint]) -> tuple[str, str, int]:
    return item[0], item[1], item[2]


def _weighted(
    sets: list[EndpointSet],
    policy: TrafficPolicy,
    levels: tuple[Level, ...],
    since: dict[int, float],
) -> Choice:
    """Split between weighted sources; a source with no healthy endpoint
    gives its share to the others."""
    chosen: list[Chosen] = []
    shares: list[str] = []
    for endpoint_set in sets:
        weight = policy.weights.get(str(endpoint_set.source), 0)
        members = [(str(endpoint_set.source), e) for e in endpoint_set.endpoints]
        if weight == 0 or endpoint_set.stale:
            continue
        healthy = [m for m in members if m[1].healthy]
        if not healthy:
            continue
        per = max(1, round(1000 * weight / len(healthy)))
        chosen += _healthy(healthy, per)
        shares.append(f"{endpoint_set.source}={weight}")
    if not chosen:
        return Choice(None, (), levels, "no weighted source has a healthy endpoint")
    reason = "weighted split " + ", ".join(shares)
    return Choice(None, tuple(sorted(chosen)), levels, reason, eligible_since=since)


def revisit_after(
    choice: Choice, sets: Iterable[EndpointSet], policy: TrafficPolicy | None, now: float
) -> float | None:
    """In how many seconds ``choose`` may answer differently with the same
    inputs (a hold-down ends, a stale source's grace runs out), or None:
    a keyed reconciler looks again then instead of polling."""
    due: list[float] = []
    hold_down = policy.failback_hold_down_seconds if policy else 0.0
    if choice.priority is not None:
        due += [
            since + hold_down
            for level, since in choice.eligible_since.items()
            if level < choice.priority
        ]
    grace = policy.stale_grace_seconds if policy is not None else None
    if grace is not None:
        due += [s.stale_since + grace for s in sets if s.stale and str(s.source) not in choice.gone]
    later = [at - now for at in due]
    if not later:
        return None
    return max(min(later), 0.001)


def _reason(
    chosen: int,
    current: int | None,
    levels: tuple[Level, ...],
    threshold: int,
    policy: TrafficPolicy | None,
) -> str:
    name = level_name(chosen, policy)
    worse = [lv for lv in levels if lv.priority < chosen and not lv.eligible]
    if not worse:
        return f"{name}: best level, {threshold}+ healthy"
    missed = ", ".join(f"{lv.name} has {lv.healthy}/{threshold}" for lv in worse)
    return f"{name}: failed over ({missed} healthy)"


def explained(choice: Choice) -> dict[str, Any]:
    """A choice as plain data (``fedctl route explain``, the dashboard):
    each level with its sources, healthy count and whether it is chosen,
    the reason, and the chosen addresses."""
    return {
        "levels": [
            {
                "priority": lv.priority,
                "level": lv.name,
                "sources": list(lv.sources),
                "healthy": lv.healthy,
                "endpoints": lv.endpoints,
                "eligible": lv.eligible,
                "chosen": lv.priority == choice.priority,
            }
            for lv in choice.levels
        ],
        "reason": choice.reason,
        "endpoints": [c.address for c in choice.endpoints],
    }


__all__ = [
    "ELSEWHERE",
    "SAME_CLUSTER",
    "SAME_REGION",
    "SAME_ZONE",
    "Choice",
    "Chosen",
    "Level",
    "Memo",
    "choose",
    "explained",
    "level_name",
    "priority",
    "revisit_after",
]
