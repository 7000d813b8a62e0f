"""agents/view.py: shards merged per source; a relist drains what it did not
confirm; an object that does not decode is left out, the others go on."""

from __future__ import annotations

import pytest

from agents.client import Event, Relist, Synced, UnreadableStream
from agents.view import View
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    keys,
)

CART = ServiceRef(namespace="shop", name="cart")
EAST = SourceRef.parse("cluster:east")
WEST = SourceRef.parse("cluster:west")


def shard(source: SourceRef, number: int, *addresses: str, generation: int = 1) -> Event:
    endpoint_set = EndpointSet(
        service=CART,
        source=source,
        generation=generation,
        shard=number,
        endpoints=tuple(
            Endpoint(
                address=a,
                ports=(EndpointPort(name="http", port=80),),
                locality=Locality(region="us", zone="us-1", cluster=source.name),
            )
            for a in addresses
        ),
    )
    key = keys.ShardKey(service=CART, source=source, shard=number).key
    return Event("PUT", 10, "EndpointSet", key, endpoint_set.to_wire())


def addresses(view: View, source: SourceRef) -> list[str]:
    return [e.address for e in view.sets[CART][str(source)].endpoints]


def test_shards_of_a_source_merge_and_each_event_names_its_service() -> None:
    view = View()
    touched = view.take(shard(EAST, 0, "10.0.0.1"))
    assert touched.services == {CART} and not touched.all
    view.take(shard(EAST, 1, "10.0.1.1", "10.0.1.2"))
    assert addresses(view, EAST) == ["10.0.0.1", "10.0.1.1", "10.0.1.2"]
    gone = shard(EAST, 0)
    view.take(Event("DELETE", 11, "EndpointSet", gone.key, None))
    assert addresses(view, EAST) == ["10.0.1.1", "10.0.1.2"]


def test_a_relist_drops_what_it_did_not_confirm() -> None:
    view = View()
    for change in (
        shard(EAST, 0, "10.0.0.1"),
        shard(EAST, 1, "10.0.1.1"),
        shard(WEST, 0, "10.9.0.1"),
    ):
        view.take(change)
    view.take(Relist(20))
    view.take(shard(EAST, 0, "10.0.0.1", generation=2))
    assert not view.authoritative and str(WEST) in view.sets[CART]  # kept until the end
    touched = view.take(Synced(20))
    assert touched.services == {CART}
    assert list(view.sets[CART]) == [str(EAST)]
    assert addresses(view, EAST) == ["10.0.0.1"]
    assert view.authoritative and view.revision == 20


def test_a_view_seeded_from_saved_imports_is_replaced_only_by_a_complete_snapshot() -> None:
    view = View()
    saved = EndpointSet.from_wire(shard(WEST, 0, "10.9.0.1").object)
    view.seed(saved)
    view.loaded = True
    view.take(Relist(5))
    view.take(shard(EAST, 0, "10.0.0.1"))
    assert set(view.sets[CART]) == {str(EAST), str(WEST)}  # a broken relist keeps the saved
    view.take(Synced(5))
    assert set(view.sets[CART]) == {str(EAST)}


def test_a_patch_applies_to_the_shard_it_names() -> None:
    view = View()
    view.take(shard(EAST, 0, "10.0.0.1", "10.0.0.2"))
    key = shard(EAST, 0).key
    moved = {
        "address": "10.0.0.9",
        "ports": [{"name": "http", "port": 80}],
        "locality": {"region": "us", "zone": "us-1", "cluster": "east"},
    }
    delta = {"fields": {"generation": 2}, "endpoints": [[1, 2, [moved]]]}
    touched = view.take(Event("PATCH", 11, "EndpointSet", key, delta))
    assert touched.services == {CART}
    assert addresses(view, EAST) == ["10.0.0.1", "10.0.0.9"]
    assert view.sets[CART][str(EAST)].generation == 2


def test_a_patch_that_does_not_fit_is_an_unreadable_stream() -> None:
    view = View()
    key = shard(EAST, 0).key
    with pytest.raises(UnreadableStream, match="does not hold"):
        view.take(Event("PATCH", 11, "EndpointSet", key, {"fields": {}, "endpoints": []}))
    view.take(shard(EAST, 0, "10.0.0.1"))
    with pytest.raises(UnreadableStream, match="does not fit"):
        view.take(Event("PATCH", 12, "EndpointSet", key, {"fields": {}, "endpoints": [[0, 5, []]]}))
    assert addresses(view, EAST) == ["10.0.0.1"]  # nothing half-applied


def test_a_record_that_does_not_decode_is_left_out_and_the_rest_goes_on() -> None:
    view = View()
    good = shard(EAST, 0, "10.0.0.1")
    assert isinstance(good.record, EndpointSet)  # decoded once, by the stream
    view.take(good)
    newer = shard(EAST, 0, "10.0.0.9", generation=2)
    assert newer.object is not None
    odd = Event("PUT", 11, "EndpointSet", newer.key, {**newer.object, "fromTheFuture": 1})
    assert odd.record is None and odd.unreadable is not None
    assert view.take(odd).services == frozenset()
    assert addresses(view, EAST) == ["10.0.0.1"]  # the last good copy stays
    assert view.unreadable == {newer.key: odd.unreadable}
    view.take(shard(WEST, 0, "10.9.0.1"))  # the others go on
    assert addresses(view, WEST) == ["10.9.0.1"]
    view.take(Relist(20))
    view.take(odd)
    view.take(shard(WEST, 0, "10.9.0.1"))
    view.take(Synced(20))
    assert addresses(view, EAST) == ["10.0.0.1"]  # present, unreadable: not a deletion
    view.take(newer)
    assert addresses(view, EAST) == ["10.0.0.9"] and view.unreadable == {}
