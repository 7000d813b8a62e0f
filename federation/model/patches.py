"""Endpoint-set deltas: what changed between two stored forms of one shard,
and that change applied to the set a consumer holds.

A churning source rewrites a whole shard to flip one endpoint; sending the
whole shard to every watcher costs bytes x watchers (docs/performance.md).
The registry computes a delta once per change, from the value the store
says was replaced, and a watcher that asked for deltas gets it instead.

A delta is plain JSON (docs/api.md):

- ``fields``: the set-level fields whose value changed, with the new value;
  a shard's identity (service, source, shard) never changes under its key;
- ``endpoints``: splices ``[start, end, [endpoint, ...]]`` that replace
  ``old[start:end]`` with the endpoints given, in ascending order and not
  overlapping, indices into the old list.

Equal-length lists (readiness flips) give one splice per run of changed
positions; otherwise one splice between the common prefix and suffix
(a pod added or removed).  ``diff`` declines (None) when the delta would
not be much smaller than the value, so a delta is always worth sending."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from federation.model.records import MAX_ENDPOINTS_PER_SET, Endpoint, EndpointSet
from federation.model.validation import Fields, Inconsistent, ValidationError, check_int

PATCH_FIELDS = frozenset(
    {"generation", "ports", "stale", "changedAt", "staleSince", "headless", "sessionAffinity"}
    | {"sessionAffinityTimeoutSeconds", "exportedAt"}
)
_T = TypeVar("_T")
_U = TypeVar("_U")
WORTH = 0.5  # a delta is sent only under this share of the whole value's size

__all__ = [
    "PATCH_FIELDS",
    "Misfit",
    "Splice",
    "apply_splices",
    "as_is",
    "changed_fields",
    "checked_fields",
    "diff",
    "diff_decoded",
    "parse_splices",
    "patched",
    "splices",
    "worth_sending",
]


def diff(
    old: bytes, new: bytes, *, worth: float = WORTH, decoded: Any = None
) -> dict[str, Any] | None:
    """The delta from stored set ``old`` to stored set ``new``, or None
    when it is not under ``worth`` of ``new``'s size (or the two are not
    one shard's forms).  ``decoded``: ``new`` already decoded, when the
    caller has it (the watch hub decodes each new value once)."""
    try:
        before = orjson.loads(old)
        after = orjson.loads(new) if decoded is None else decoded
    except orjson.JSONDecodeError:
        return None
    return diff_decoded(before, after, len(new), worth=worth)


def diff_decoded(
    before: Any, after: Any, size: int, *, worth: float = WORTH
) -> dict[str, Any] | None:
    """``diff`` of two stored sets already decoded; ``size``: the bytes of
    ``after``'s stored form."""
    if not isinstance(before, dict) or not isinstance(after, dict) or "endpoints" not in after:
        return None
    fields = changed_fields(before, after)
    old_list, new_list = before.get("endpoints"), after["endpoints"]
    if fields is None or not isinstance(old_list, list) or not isinstance(new_list, list):
        return None
    return worth_sending(
        {"fields": fields, "endpoints": [[*s] for s in splices(old_list, new_list)]}, size, worth
    )


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """The set-level fields whose value differs from ``before`` to
    ``after`` (two stored forms, both with their endpoints or neither), or
    None when a delta cannot carry the change: a field added or removed,
    or one a delta may not change."""
    if before.keys() != after.keys():
        return None
    fields = {k: v for k, v in after.items() if k != "endpoints" and before[k] != v}
    return fields if fields.keys() <= PATCH_FIELDS else None


def worth_sending(delta: dict[str, Any], size: int, worth: float = WORTH) -> dict[str, Any] | None:
    """``delta`` if it is under ``worth`` of ``size`` (the new value's bytes)."""
    return delta if len(orjson.dumps(delta)) < worth * size else None


def splices(old: Sequence[_T], new: Sequence[_T]) -> list[tuple[int, int, Sequence[_T]]]:
    """``(start, end, items)``: ``old[start:end]`` becomes ``items``, in
    ascending order (a run of changed positions each, when the lengths are
    equal; one between the common prefix and suffix otherwise)."""
    if len(old) == len(new):
        out: list[tuple[int, int, Sequence[_T]]] = []
        i, n = 0, len(old)
        while i < n:
            if old[i] == new[i]:
                i += 1
                continue
            j = i
            while j < n and old[j] != new[j]:
                j += 1
            out.append((i, j, new[i:j]))
            i = j
        return out
    shortest = min(len(old), len(new))
    prefix = 0
    while prefix < shortest and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return [(prefix, len(old) - suffix, new[prefix : len(new) - suffix])]


def patched(current: EndpointSet, delta: object) -> EndpointSet:
    """``current`` with ``delta`` applied, every new field and endpoint
    validated as a whole set's would be.  A delta that does not fit
    ``current`` (bad indices, unknown fields) is a ValidationError: the
    consumer's copy is not what the registry diffed, so it must relist."""
    f = Fields(delta, frozenset({"fields", "endpoints"}))
    base = checked_fields(current.header_wire(), f.get("fields", {}), PATCH_FIELDS)
    spliced = apply_splices(current.endpoints, parse_splices(f.get("endpoints", [])), as_is)
    return replace(base, endpoints=tuple(spliced))


class Misfit(ValidationError):
    """A delta that does not apply to the set it is applied to: another
    base generation, or a splice past its end."""


Splice = tuple[int, int, tuple[Endpoint, ...]]


def checked_fields(header: dict[str, Any], changes: object, allowed: frozenset[str]) -> EndpointSet:
    """``header`` (a set's fields without its endpoints) with a delta's
    ``changes`` applied, each checked as a whole set's field."""
    if not isinstance(changes, dict):
        raise ValidationError("fields", "expected an object")
    unknown = sorted(str(k) for k in changes if k not in allowed)
    if unknown:
        raise ValidationError(f"fields.{unknown[0]}", "not a field this delta may change")
    try:
        return EndpointSet.from_wire({**header, **changes})
    except ValidationError as err:
        raise err.within("fields") from None


def parse_splices(raw: object) -> tuple[Splice, ...]:
    """A delta's splices, checked: ``[start, end, [endpoint, ...]]`` each,
    ascending and not overlapping, every endpoint checked as a whole set's."""
    if not isinstance(raw, list):
        raise ValidationError("endpoints", "expected a list of splices")
    if len(raw) > MAX_ENDPOINTS_PER_SET:
        raise ValidationError("endpoints", f"{len(raw)} items, at most {MAX_ENDPOINTS_PER_SET}")
    out = []
    at = 0
    for index, splice in enumerate(raw):
        path = f"endpoints[{index}]"
        if not isinstance(splice, list) or len(splice) != 3:
            raise ValidationError(path, "a splice is [start, end, [endpoint, ...]]")
        start = check_int(f"{path}[0]", splice[0], 0, MAX_ENDPOINTS_PER_SET)
        end = check_int(f"{path}[1]", splice[1], 0, MAX_ENDPOINTS_PER_SET)
        if not isinstance(splice[2], list) or len(splice[2]) > MAX_ENDPOINTS_PER_SET:
            bound = f"a list of at most {MAX_ENDPOINTS_PER_SET} endpoints"
            raise ValidationError(f"{path}[2]", bound)
        items = tuple(_endpoint(f"{path}[2][{i}]", e) for i, e in enumerate(splice[2]))
        if start < at or end < start:
            raise Inconsistent(path, "splices are ascending and do not overlap: [start, end] with "
                               f"start >= {at} and end >= start")  # fmt: skip
        out.append((start, end, items))
        at = end
    return tuple(out)


def apply_splices(
    old: Sequence[_T],
    splices: Sequence[tuple[int, int, Sequence[_U]]],
    convert: Callable[[_U], _T],
) -> list[_T]:
    """``old`` with ``splices`` applied, each new endpoint as ``convert``
    gives it (the record itself, or its stored form).  Misfit for a splice
    past the end of ``old``."""
    out: list[_T] = []
    at = 0
    for index, (start, end, items) in enumerate(splices):
        if end > len(old):
            raise Misfit(f"endpoints[{index}][1]", f"{end} is past the {len(old)} endpoints")
        out += old[at:start]
        out += [convert(e) for e in items]
        at = end
    out += old[at:]
    if len(out) > MAX_ENDPOINTS_PER_SET:
        raise Inconsistent("endpoints", f"{len(out)} endpoints, at most {MAX_ENDPOINTS_PER_SET}")
    return out


def as_is(item: _T) -> _T:
    """``apply_splices``' conversion for items already in the wanted form."""
    return item


def _endpoint(path: str, raw: object) -> Endpoint:
    try:
        return Endpoint.from_wire(raw)
    except ValidationError as err:
        raise err.within(path) from None
