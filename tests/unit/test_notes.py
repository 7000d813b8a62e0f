"""A replica's notes of its own delta writes (decision 55): the watch hub
takes one only for exactly the bytes it watched replaced, and what it
takes is what decoding both values would have given."""

from __future__ import annotations

from typing import Any

import orjson

from federation.model import encode
from federation.model.patches import diff
from federation.model.stored import summarize
from federation.registry.notes import Note, Notes
from tests.contract.registry_http.test_patches import hundred


def written(generation: int, unready: frozenset[int]) -> tuple[bytes, dict[str, Any]]:
    value = encode(hundred(generation, unready))
    return value, orjson.loads(value)


def test_a_note_carries_the_delta_that_diffing_the_bytes_gives() -> None:
    before, stored = written(1, frozenset())
    after, decoded = written(2, frozenset({7, 8, 40}))
    note = Note.of(before, stored, after, decoded)
    assert note.delta is not None
    assert note.delta == diff(before, after)
    assert note.summary == summarize(after)
    # A rewrite that is not worth a delta has none, as diff says.
    whole, whole_decoded = written(3, frozenset(range(100)))
    assert Note.of(after, decoded, whole, whole_decoded).delta is None is diff(after, whole)


def test_a_note_is_taken_once_and_only_for_its_own_bytes() -> None:
    before, stored = written(1, frozenset())
    after, decoded = written(2, frozenset({3}))
    other, _ = written(2, frozenset({4}))
    notes = Notes()
    note = Note.of(before, stored, after, decoded)
    notes.add("k", note)
    assert notes.take("k", before, other) is None  # another write's bytes
    assert notes.take("k", other, after) is None  # from another base
    assert notes.take("k", None, after) is None  # the replaced value unknown
    assert notes.take("j", before, after) is None
    assert notes.take("k", bytes(before), bytes(after)) is note  # equal, not identical
    assert notes.take("k", before, after) is None  # served once


def test_a_failed_write_drops_its_note_not_a_later_one() -> None:
    before, stored = written(1, frozenset())
    after, decoded = written(2, frozenset({3}))
    first, second = Note.of(before, stored, after, decoded), Note.of(before, stored, after, decoded)
    notes = Notes()
    notes.add("k", first)
    notes.add("k", second)
    notes.drop("k", first)
    assert len(notes) == 1
    notes.drop("k", second)
    assert len(notes) == 0


def test_notes_are_bounded_oldest_first() -> None:
    before, stored = written(1, frozenset())
    after, decoded = written(2, frozenset({3}))
    notes = Notes(capacity=3)
    for key in "abcde":
        notes.add(key, Note.of(before, stored, after, decoded))
    assert len(notes) == 3
    assert notes.take("a", before, after) is None
    assert notes.take("e", before, after) is not None
