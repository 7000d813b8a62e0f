"""federation/shared/routing.py: tables for the levels, thresholds, hold-down,
weights and stale sources; hypothesis properties for the invariants."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    FailoverTarget,
    Locality,
    ServiceRef,
    SourceRef,
    TrafficPolicy,
)
from federation.shared.routing import Choice, Memo, choose, priority

SERVICE = ServiceRef(namespace="demo", name="echo")
CLUSTERS = {
    "east1": Locality(region="us-east", zone="a", cluster="east1"),
    "east2": Locality(region="us-east", zone="b", cluster="east2"),
    "east3": Locality(region="us-east", zone="a", cluster="east3"),
    "west": Locality(region="us-west", zone="c", cluster="west"),
}
HOME = CLUSTERS["east1"]


def endpoints(cluster: str, ready: int, unready: int = 0, stale: bool = False) -> EndpointSet:
    index = list(CLUSTERS).index(cluster) + 1
    made = tuple(
        Endpoint(
            address=f"127.{index}.1.{i + 1}",
            ports=(EndpointPort(name="http", port=8080),),
            locality=CLUSTERS[cluster],
            ready=i < ready,
        )
        for i in range(ready + unready)
    )
    source = SourceRef.parse(f"cluster:{cluster}")
    return EndpointSet(service=SERVICE, source=source, generation=1, endpoints=made, stale=stale)


def policy(**kwargs: object) -> TrafficPolicy:
    return TrafficPolicy(service=SERVICE, **kwargs)  # type: ignore[arg-type]


def sources(choice: Choice) -> set[str]:
    return {c.source for c in choice.endpoints}


@pytest.mark.parametrize(
    ("at", "expected"),
    [("east1", 0), ("east3", 1), ("east2", 2), ("west", 3)],
)
def test_locality_priorities(at: str, expected: int) -> None:
    assert priority(HOME, CLUSTERS[at]) == expected


@pytest.mark.parametrize(
    ("sets", "min_healthy", "want_priority", "want_sources"),
    [
        # everything healthy: stay in the cluster
        ([("east1", 2, 0), ("east3", 2, 0), ("west", 2, 0)], 1, 0, {"cluster:east1"}),
        # local down: same zone next
        ([("east1", 0, 2), ("east3", 2, 0), ("east2", 2, 0)], 1, 1, {"cluster:east3"}),
        # same zone below the threshold of 2: spill to the region
        ([("east1", 1, 1), ("east3", 1, 0), ("east2", 2, 0)], 2, 2, {"cluster:east2"}),
        # the whole region down: elsewhere
        ([("east1", 0, 2), ("east2", 0, 1), ("west", 1, 0)], 1, 3, {"cluster:west"}),
        # no level meets 3: the best level with any healthy endpoint
        ([("east1", 1, 0), ("west", 2, 0)], 3, 0, {"cluster:east1"}),
    ],
)
def test_levels_and_thresholds(
    sets: list[tuple[str, int, int]],
    min_healthy: int,
    want_priority: int,
    want_sources: set[str],
) -> None:
    made = [endpoints(c, r, u) for c, r, u in sets]
    choice = choose(made, HOME, policy(min_healthy=min_healthy), now=0.0)
    assert choice.priority == want_priority
    assert sources(choice) == want_sources
    assert all(c.endpoint.healthy for c in choice.endpoints)


def test_an_explicit_failover_order_overrides_locality() -> None:
    order = policy(failover=(FailoverTarget(cluster="west"), FailoverTarget(region="us-east")))
    made = [endpoints("east1", 2), endpoints("west", 1)]
    assert sources(choose(made, HOME, order, now=0.0)) == {"cluster:west"}
    made = [endpoints("east1", 2), endpoints("west", 0, 1)]
    assert sources(choose(made, HOME, order, now=0.0)) == {"cluster:east1"}


def test_failover_is_immediate_and_failback_waits_for_the_hold_down() -> None:
    rules = policy(failback_hold_down_seconds=10.0)
    up = [endpoints("east1", 2), endpoints("east2", 2)]
    down = [endpoints("east1", 0, 2), endpoints("east2", 2)]
    first = choose(up, HOME, rules, now=0.0)
    assert first.priority == 0
    failed = choose(down, HOME, rules, now=1.0, previous=first)
    assert failed.priority == 2
    back = choose(up, HOME, rules, now=2.0, previous=failed)
    assert back.priority == 2
    assert "hold-down" in back.reason
    still = choose(up, HOME, rules, now=11.0, previous=back)
    assert still.priority == 2
    assert choose(up, HOME, rules, now=12.0, previous=still).priority == 0


def test_a_flap_restarts_the_hold_down() -> None:
    rules = policy(failback_hold_down_seconds=10.0)
    up = [endpoints("east1", 2), endpoints("east2", 2)]
    down = [endpoints("east1", 0, 2), endpoints("east2", 2)]
    choice = choose(down, HOME, rules, now=0.0, previous=choose(up, HOME, rules, now=0.0))
    choice = choose(up, HOME, rules, now=1.0, previous=choice)
    choice = choose(down, HOME, rules, now=5.0, previous=choice)
    choice = choose(up, HOME, rules, now=6.0, previous=choice)
    assert choose(up, HOME, rules, now=12.0, previous=choice).priority == 2
    assert choose(up, HOME, rules, now=16.0, previous=choice).priority == 0


def test_stale_sources_only_as_a_last_resort() -> None:
    made = [endpoints("east1", 2, stale=True), endpoints("west", 1)]
    choice = choose(made, HOME, None, now=0.0)
    assert sources(choice) == {"cluster:west"}
    assert not choice.last_resort
    made = [endpoints("east1", 2, stale=True), endpoints("west", 0, 1)]
    choice = choose(made, HOME, None, now=0.0)
    assert sources(choice) == {"cluster:east1"}
    assert choice.last_resort


def test_a_stale_source_is_gone_after_the_policy_grace() -> None:
    vm = replace(endpoints("east1", 1), stale=True, stale_since=100.0)
    made = [vm, endpoints("west", 0, 1)]
    kept = choose(made, HOME, None, now=1e6)  # no grace: kept for ever, as a last resort
    assert sources(kept) == {"cluster:east1"} and kept.last_resort and kept.gone == ()
    rules = policy(stale_grace_seconds=30.0)
    assert sources(choose(made, HOME, rules, now=129.9)) == {"cluster:east1"}
    gone = choose(made, HOME, rules, now=130.0)
    assert gone.endpoints == () and gone.gone == ("cluster:east1",)
    assert "gone after the 30s stale grace: cluster:east1" in gone.reason
    back = replace(vm, stale=False, stale_since=0.0)  # it heartbeats again
    assert sources(choose([back, made[1]], HOME, rules, now=500.0)) == {"cluster:east1"}


def test_weights_split_between_sources_and_move_a_dead_share() -> None:
    rules = policy(weights={"cluster:east1": 90, "cluster:west": 10})
    made = [endpoints("east1", 3), endpoints("west", 1), endpoints("east2", 5)]
    choice = choose(made, HOME, rules, now=0.0)
    share: dict[str, int] = {}
    for chosen in choice.endpoints:
        share[chosen.source] = share.get(chosen.source, 0) + chosen.weight
    assert set(share) == {"cluster:east1", "cluster:west"}
    assert share["cluster:east1"] == pytest.approx(9 * share["cluster:west"], rel=0.01)
    made = [endpoints("east1", 0, 3), endpoints("west", 1)]
    assert sources(choose(made, HOME, rules, now=0.0)) == {"cluster:west"}


def test_nothing_healthy_chooses_nothing() -> None:
    choice = choose([endpoints("east1", 0, 2)], HOME, None, now=0.0)
    assert choice.priority is None and choice.endpoints == ()


# -- properties --------------------------------------------------------------------

health = st.lists(
    st.tuples(
        st.sampled_from(sorted(CLUSTERS)),
        st.integers(0, 3),
        st.integers(0, 2),
        st.booleans(),
    ),
    max_size=6,
    unique_by=lambda t: t[0],
)


@given(health, st.integers(1, 3))
@settings(max_examples=300, deadline=None)
def test_never_an_unhealthy_endpoint_while_a_healthy_one_exists(
    states: list[tuple[str, int, int, bool]], min_healthy: int
) -> None:
    made = [endpoints(c, r, u, s) for c, r, u, s in states]
    choice = choose(made, HOME, policy(min_healthy=min_healthy), now=0.0)
    any_healthy = any(e.healthy for s in made for e in s.endpoints)
    assert bool(choice.endpoints) == any_healthy
    assert all(c.endpoint.healthy for c in choice.endpoints)


@given(health, st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_the_result_does_not_depend_on_input_order(
    states: list[tuple[str, int, int, bool]], shuffler: random.Random
) -> None:
    made = [endpoints(c, r, u, s) for c, r, u, s in states]
    shuffled = [
        EndpointSet(
            service=s.service,
            source=s.source,
            generation=s.generation,
            endpoints=tuple(shuffler.sample(s.endpoints, len(s.endpoints))),
            stale=s.stale,
        )
        for s in shuffler.sample(made, len(made))
    ]
    assert choose(made, HOME, None, now=0.0) == choose(shuffled, HOME, None, now=0.0)


@given(
    st.lists(
        st.tuples(st.floats(0.1, 6.0), st.lists(st.booleans(), min_size=4, max_size=4)),
        min_size=1,
        max_size=25,
    )
)
@settings(max_examples=300, deadline=None)
def test_never_fail_back_before_the_hold_down(steps: list[tuple[float, list[bool]]]) -> None:
    """Walk random health flips through time; whenever the level improves
    while the old level is still eligible, the new level has been eligible
    at every evaluation for at least the hold-down."""
    hold_down = 10.0
    rules = policy(failback_hold_down_seconds=hold_down)
    now, previous = 0.0, None
    history: list[tuple[float, set[int]]] = []
    for gap, up in steps:
        now += gap
        made = [
            endpoints(c, 1 if ok else 0, 0 if ok else 1) for c, ok in zip(CLUSTERS, up, strict=True)
        ]
        choice = choose(made, HOME, rules, now=now, previous=previous)
        eligible = {lv.priority for lv in choice.levels if lv.eligible}
        history.append((now, eligible))
        if (
            previous is not None
            and previous.priority is not None
            and choice.priority is not None
            and choice.priority < previous.priority
            and previous.priority in eligible
        ):
            streak_start = now
            for seen_at, levels in reversed(history):
                if choice.priority not in levels:
                    break
                streak_start = seen_at
            assert now - streak_start >= hold_down
        previous = choice


@given(
    st.lists(
        st.tuples(st.sampled_from(["east1", "east2", "west"]), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_a_memo_changes_no_answer(changes: list[tuple[str, int, bool]]) -> None:
    """Routing with a per-service memo answers as routing without one, as
    sources change one at a time (hold-downs included)."""
    memo = Memo()
    current = {name: endpoints(name, 2) for name in ("east1", "east2", "west")}
    rules = policy(failback_hold_down_seconds=2.0)
    plain: Choice | None = None
    memoed: Choice | None = None
    for step, (name, ready, stale) in enumerate(changes):
        current[name] = endpoints(name, ready, 3 - ready, stale)
        sets = list(current.values())
        plain = choose(sets, HOME, rules, float(step), plain)
        memoed = choose(sets, HOME, rules, float(step), memoed, memo)
        assert plain == memoed
