"""federation/model/patches.py: a delta applied to the old set is the new set."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    ValidationError,
    encode,
)
from federation.model.patches import diff, patched

CART = ServiceRef(namespace="shop", name="cart")
EAST = SourceRef.parse("cluster:east")
HERE = Locality(region="us", zone="us-1", cluster="east")


def endpoint(n: int, ready: bool = True) -> Endpoint:
    return Endpoint(
        address=f"10.0.{n // 250}.{n % 250 + 1}",
        ports=(EndpointPort(name="http", port=8080),),
        locality=HERE,
        ready=ready,
    )


def a_set(endpoints: tuple[Endpoint, ...], generation: int = 1, **more: object) -> EndpointSet:
    return EndpointSet(
        service=CART,
        source=EAST,
        generation=generation,
        endpoints=endpoints,
        **more,  # type: ignore[arg-type]
    )


HUNDRED = tuple(endpoint(i) for i in range(100))


def test_one_flip_in_a_hundred_is_one_small_splice() -> None:
    old = a_set(HUNDRED)
    new = a_set((*HUNDRED[:40], replace(HUNDRED[40], ready=False), *HUNDRED[41:]), generation=2)
    delta = diff(encode(old), encode(new))
    assert delta is not None
    assert delta["fields"] == {"generation": 2}
    assert [s[:2] for s in delta["endpoints"]] == [[40, 41]]
    assert patched(old, delta) == new


def test_an_added_and_a_removed_endpoint_are_one_splice_each() -> None:
    old = a_set(HUNDRED)
    added = a_set((*HUNDRED[:10], endpoint(500), *HUNDRED[10:]), generation=2)
    delta = diff(encode(old), encode(added))
    assert delta is not None and [s[:2] for s in delta["endpoints"]] == [[10, 10]]
    assert patched(old, delta) == added
    removed = a_set(HUNDRED[:99], generation=3)
    delta = diff(encode(old), encode(removed))
    assert delta is not None and delta["endpoints"] == [[99, 100, []]]
    assert patched(old, delta) == removed


def test_a_rewrite_of_everything_is_not_worth_a_delta() -> None:
    old = a_set(HUNDRED)
    new = a_set(tuple(replace(e, ready=False) for e in HUNDRED), generation=2)
    assert diff(encode(old), encode(new)) is None


def test_set_fields_ride_in_the_delta() -> None:
    old = a_set(HUNDRED)
    new = a_set(HUNDRED, generation=2, stale=True, stale_since=1000.0)
    delta = diff(encode(old), encode(new))
    assert delta is not None and delta["endpoints"] == []
    assert patched(old, delta) == new


@pytest.mark.parametrize(
    "delta",
    [
        {"fields": {"source": "cluster:west"}, "endpoints": []},  # identity never changes
        {"fields": {}, "endpoints": [[5, 3, []]]},  # end before start
        {"fields": {}, "endpoints": [[0, 101, []]]},  # past the end
        {"fields": {}, "endpoints": [[10, 11, []], [5, 6, []]]},  # out of order
        {"fields": {}, "endpoints": [[0, 1, [{"address": "not-an-ip"}]]]},
        {"fields": {"generation": -1}, "endpoints": []},
        {"fields": {}, "endpoints": "all"},
        {"patch": {}},
    ],
)
def test_a_delta_that_does_not_fit_is_refused(delta: object) -> None:
    with pytest.raises(ValidationError):
        patched(a_set(HUNDRED), delta)


def test_a_delta_cannot_grow_a_set_past_its_bound() -> None:
    wire = endpoint(0).to_wire()
    with pytest.raises(ValidationError, match="at most 1000"):
        patched(a_set(HUNDRED), {"fields": {}, "endpoints": [[0, 0, [wire] * 901]]})


pool = st.sampled_from([endpoint(i, ready=r) for i in range(12) for r in (True, False)])


@settings(max_examples=300, deadline=None)
@given(st.lists(pool, max_size=40), st.lists(pool, max_size=40), st.booleans())
def test_whenever_a_delta_is_given_it_rebuilds_the_new_set(
    old_list: list[Endpoint], new_list: list[Endpoint], stale: bool
) -> None:
    old = a_set(tuple(old_list))
    new = a_set(tuple(new_list), generation=2, stale=stale)
    delta = diff(encode(old), encode(new), worth=float("inf"))
    assert delta is not None
    assert patched(old, delta) == new
