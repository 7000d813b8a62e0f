"""A stored shard taken apart at its endpoints (decision 60): what
``Split`` and ``joined`` give is what decoding and encoding give, byte for
byte, and a delta applied to the bytes is the delta applied to the
decoded shard."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model import EndpointPort, EndpointSet, encode, encode_wire
from federation.model.deltas import PublishDelta, between
from federation.model.patches import Misfit, diff
from federation.model.records import SessionAffinity
from federation.model.stored import ShardSummary, Split, array, joined, summarize
from tests.unit.test_model import dns_labels, endpoint_sets, endpoints

full_sets = st.builds(
    replace,
    endpoint_sets,
    endpoints=st.lists(
        st.builds(replace, endpoints, hostname=st.one_of(st.just(""), dns_labels)), max_size=12
    ).map(tuple),
    ports=st.lists(
        st.builds(EndpointPort, name=dns_labels, port=st.integers(1, 65535)),
        max_size=2,
        unique_by=lambda p: p.name,
    ).map(tuple),
    headless=st.booleans(),
    session_affinity=st.sampled_from(SessionAffinity),
    affinity_timeout=st.integers(0, 86400),
    exported_at=st.one_of(st.just(0.0), st.floats(1.0, 1e10, allow_nan=False)),
    stale_since=st.floats(0, 1e10, allow_nan=False),
)


@given(full_sets)
def test_a_split_joins_back_to_the_same_bytes(record: EndpointSet) -> None:
    value = encode(record)
    split = Split.of(value)
    assert split is not None
    assert split.header == {k: v for k, v in orjson.loads(value).items() if k != "endpoints"}
    assert [orjson.loads(e) for e in split.endpoints] == [e.to_wire() for e in record.endpoints]
    assert joined(record.header_wire(), array(split.endpoints)) == value
    count = len(split.endpoints)
    assert ShardSummary.of_split(split.header, count, array(split.endpoints)) == summarize(value)


@pytest.mark.parametrize(
    "value",
    [
        b'{ "changedAt":0.0,"endpoints":[],"generation":1}',  # not canonical
        b'{"endpoints":[],"changedAt":0.0,"generation":1}',  # keys out of order
        b'{"changedAt":0.0,"endpoints":[{"ports":[]}],"generation":1}',  # no address first
        b'{"changedAt":0.0,"endpoints":[],"stale":true}',  # no key the array can end at
        b'{"changedAt":0.0,"endpoints":[],"generation":1',  # cut short
        b"[]",
    ],
)
def test_what_is_not_in_the_stored_form_is_not_split(value: bytes) -> None:
    assert Split.of(value) is None


@settings(max_examples=80, deadline=None)
@given(full_sets, st.data())
def test_a_delta_on_the_bytes_is_the_delta_on_the_decoded_shard(
    record: EndpointSet, data: st.DataObject
) -> None:
    padding = tuple(data.draw(st.lists(endpoints, min_size=10, max_size=10)))  # worth a delta
    old = replace(record, stale=False, stale_since=0.0, endpoints=record.endpoints + padding)
    flips = data.draw(st.sets(st.integers(0, max(len(old.endpoints) - 1, 0))))
    dropped = data.draw(st.integers(0, 2))
    kept = [replace(e, ready=not e.ready) if i in flips else e for i, e in enumerate(old.endpoints)]
    new_endpoints = data.draw(st.lists(endpoints, max_size=3))
    new = replace(
        old,
        generation=old.generation + 1 if old.generation < 2**63 - 1 else old.generation,
        endpoints=tuple(kept[: max(len(kept) - dropped, 0)] + new_endpoints),
        changed_at=old.changed_at + 1,
    )
    if new.generation == old.generation:
        return
    body = between(old, new, worth=2.0)
    assert body is not None
    delta = PublishDelta.from_wire(orjson.loads(orjson.dumps(body)), new.service, new.source)
    before = encode(old)
    rebased = delta.onto(orjson.loads(before))
    split = Split.of(before)
    assert split is not None
    spliced = delta.onto_split(split)
    assert spliced.header == rebased.header
    assert joined(spliced.header.header_wire(), array(spliced.endpoints)) == encode_wire(
        rebased.header, rebased.endpoints
    )
    assert joined(new.header_wire(), array(spliced.endpoints)) == encode(new)
    # The claims checked are the added endpoints', at their place in the result.
    result = list(rebased.claims())
    assert {c[0] for c in spliced.claims()} <= {c[0] for c in result}
    for index, address, locality in spliced.claims():
        assert result[index] == (index, address, locality)
    # The splices, with the endpoints' bytes, are the PATCH line's delta.
    patch = orjson.loads(orjson.dumps(spliced.splices))
    assert patch == (diff(before, encode(new), worth=2.0) or {}).get("endpoints")


def test_a_delta_on_another_generation_is_a_misfit() -> None:
    record = EndpointSet.from_wire(
        {
            "service": {"namespace": "shop", "name": "cart"},
            "source": "cluster:east",
            "generation": 3,
            "endpoints": [],
        }
    )
    split = Split.of(encode(record))
    assert split is not None
    body: dict[str, Any] = {"baseGeneration": 2, "fields": {"generation": 4}, "endpoints": []}
    delta = PublishDelta.from_wire(body, record.service, record.source)
    with pytest.raises(Misfit, match="generation 3, not the delta's base 2"):
        delta.onto_split(split)
