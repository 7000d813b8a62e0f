"""What this replica wrote to a shard, noted for its own watch hub.

The hub turns each rewritten shard into a PATCH line for the streams that
asked for deltas: it decodes the value replaced and the new one (20 KB
each at 100 endpoints) and compares them.  A delta publish already knows
what changed (decisions 50 and 60), so it notes the delta and the new
value's summary, and the hub takes the note instead of decoding
(decision 55).

A note is only a shortcut: the hub takes it only when the change it
watched replaced exactly the note's ``before`` bytes with exactly its
``after`` bytes, so what it sends is what decoding both would have given,
whatever raced.  Another replica's writes, a whole-set publish, a note
evicted or a write that failed: the hub decodes, as before.  Notes are
few and short-lived (the hub takes each within a millisecond of the
write), bounded in count."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from federation.model.patches import diff_decoded
from federation.model.stored import ShardSummary, summarize

NOTES = 128  # shards with a write in flight or not yet taken by the hub


@dataclass(frozen=True, slots=True)
class Note:
    """A shard rewritten from ``before`` to ``after`` (stored bytes);
    ``summary``: ``after``'s; ``delta``: what ``patches.diff`` of the two
    would apply (None: not worth a PATCH line)."""

    before: bytes
    after: bytes
    summary: ShardSummary | None
    delta: dict[str, Any] | None

    @classmethod
    def of(
        cls, before: bytes, stored: dict[str, Any], after: bytes, decoded: dict[str, Any]
    ) -> Note:
        """From both values decoded: ``stored`` is ``before``, ``decoded`` ``after``."""
        delta = diff_decoded(stored, decoded, len(after))
        return cls(before, after, summarize(after, decoded), delta)


class Notes:
    """At most ``capacity`` notes, one per key (the latest), oldest dropped."""

    def __init__(self, capacity: int = NOTES) -> None:
        self._capacity = capacity
        self._notes: OrderedDict[str, Note] = OrderedDict()

    def __len__(self) -> int:
        return len(self._notes)

    def add(self, key: str, note: Note) -> None:
        self._notes.pop(key, None)
        self._notes[key] = note
        while len(self._notes) > self._capacity:
            self._notes.popitem(last=False)

    def drop(self, key: str, note: Note) -> None:
        """Drop ``note`` (a write that did not happen), not a later one."""
        if self._notes.get(key) is note:
            del self._notes[key]

    def take(self, key: str, before: bytes | None, after: bytes | None) -> Note | None:
        """The note of a change of ``key`` from ``before`` to ``after``, if
        there is one for exactly those bytes (taken: a note serves once).
        A note of ``key`` for other bytes stays: it may be for a later
        change than this one."""
        note = self._notes.get(key)
        if note is None or before is None or after is None:
            return None
        if not (_same(note.after, after) and _same(note.before, before)):
            return None
        del self._notes[key]
        return note


def _same(a: bytes, b: bytes) -> bool:
    return a is b or a == b


__all__ = ["NOTES", "Note", "Notes"]
