"""What a publish is guarded by, and the generation rules it follows.

The guard state a replica remembers per shard holds a digest of what was
written, never the decoded set, so the publish cache costs a few hundred
bytes per shard whatever the shard's size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from federation.model import Cluster, EndpointSet, Workload, encode
from federation.registry.errors import Conflict


@dataclass(frozen=True, slots=True)
class Guard:
    """The keys a publish is guarded by: the set's, its member's, its liveness."""

    key: str
    member: str
    alive: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishState:
    """What a publish is guarded by (mod revisions, 0: absent) and what the
    stored shard is (generation, digest of its fresh content, staleness);
    ``generation`` is None when no shard is stored."""

    mod: int = 0
    member_mod: int = 0
    alive_mod: int = 0
    revision: int = 0
    generation: int | None = None
    digest: bytes = b""
    stale: bool = False
    stale_since: float = 0.0
    # The member record the stored shard's claims were checked against
    # when this replica wrote it (None: not known): a delta that leaves an
    # endpoint as it was need not check its claims again while the record
    # is the same (decision 60).
    vetted: Cluster | Workload | None = None

    @classmethod
    def read(
        cls,
        current: EndpointSet | None,
        *,
        mod: int = 0,
        member_mod: int = 0,
        alive_mod: int = 0,
        revision: int = 0,
    ) -> PublishState:
        guard = cls(mod=mod, member_mod=member_mod, alive_mod=alive_mod, revision=revision)
        if current is None:
            return guard
        return replace(
            guard,
            generation=current.generation,
            digest=digest(current),
            stale=current.stale,
            stale_since=current.stale_since,
        )


def digest(endpoint_set: EndpointSet) -> bytes:
    return hashlib.sha256(encode(fresh(endpoint_set))).digest()


def state_of(
    record: EndpointSet,
    fresh_digest: bytes,
    before: PublishState,
    revision: int,
    vetted: Cluster | Workload | None,
) -> PublishState:
    """The guard state after ``record`` (its set-level fields are what is
    read here) was written at ``revision``, its claims checked against
    ``vetted``; ``fresh_digest``: the digest of its fresh form, which the
    writer has at hand (the stored bytes' own for a fresh record), so the
    set is not encoded twice."""
    return replace(
        before,
        mod=revision,
        revision=revision,
        generation=record.generation,
        digest=fresh_digest,
        stale=record.stale,
        stale_since=record.stale_since,
        vetted=vetted,
    )


def is_newer(endpoint_set: EndpointSet, state: PublishState) -> bool:
    return state.generation is not None and endpoint_set.generation > state.generation


def fresh(endpoint_set: EndpointSet) -> EndpointSet:
    """The set as its source wrote it, without the registry's staleness."""
    return replace(endpoint_set, stale=False, stale_since=0.0)


def stamped(endpoint_set: EndpointSet, state: PublishState, alive: bool, now: float) -> EndpointSet:
    """The set to store: stale while its source's lease is gone, keeping
    the time it first went stale."""
    if alive:
        return fresh(endpoint_set)
    since = state.stale_since if state.stale else now
    return replace(endpoint_set, stale=True, stale_since=since or now)


def unchanged(endpoint_set: EndpointSet, state: PublishState) -> bool:
    """True if ``endpoint_set`` is already stored; Conflict if it may not be."""
    if state.generation is None or endpoint_set.generation > state.generation:
        return False
    if endpoint_set.generation < state.generation:
        raise Conflict(
            f"generation {endpoint_set.generation} is older than the stored "
            f"generation {state.generation}"
        )
    if digest(endpoint_set) == state.digest:
        return True
    raise Conflict(f"generation {state.generation} was already published with other content")


__all__ = [
    "Guard",
    "PublishState",
    "digest",
    "fresh",
    "is_newer",
    "stamped",
    "state_of",
    "unchanged",
]
