"""What a publish is guarded by, and the generation rules it follows."""

from __future__ import annotations

from dataclasses import dataclass, replace

from federation.model import EndpointSet
from federation.registry_errors import Conflict


@dataclass(frozen=True, slots=True)
class Guard:
    """The keys a publish is guarded by: the set's, its member's, its liveness."""

    key: str
    member: str
    alive: str


@dataclass(frozen=True, slots=True)
class PublishState:
    """What a publish is guarded by: mod revisions (0: absent)."""

    mod: int
    member_mod: int
    alive_mod: int
    revision: int
    current: EndpointSet | None


def is_newer(endpoint_set: EndpointSet, current: EndpointSet | None) -> bool:
    return current is not None and endpoint_set.generation > current.generation


def fresh(endpoint_set: EndpointSet) -> EndpointSet:
    """The set as its source wrote it, without the registry's staleness."""
    return replace(endpoint_set, stale=False, stale_since=0.0)


def stamped(
    endpoint_set: EndpointSet, current: EndpointSet | None, alive: bool, now: float
) -> EndpointSet:
    """The set to store: stale while its source's lease is gone, keeping
    the time it first went stale."""
    if alive:
        return fresh(endpoint_set)
    since = current.stale_since if current is not None and current.stale else now
    return replace(endpoint_set, stale=True, stale_since=since or now)


def unchanged(endpoint_set: EndpointSet, current: EndpointSet) -> bool:
    """True if ``endpoint_set`` is already stored; Conflict if it may not be."""
    if endpoint_set.generation < current.generation:
        raise Conflict(
            f"generation {endpoint_set.generation} is older than the stored "
            f"generation {current.generation}"
        )
    if endpoint_set.generation > current.generation:
        return False
    if fresh(current) == fresh(endpoint_set):
        return True
    raise Conflict(f"generation {current.generation} was already published with other content")


__all__ = ["Guard", "PublishState", "fresh", "is_newer", "stamped", "unchanged"]
