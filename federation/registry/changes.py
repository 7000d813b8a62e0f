"""What the registry's snapshot and watch carry: an ``Item`` (kind, key
relative to the prefix, the stored bytes passed through undecoded) and a
``Change`` of one, with its NDJSON line and, for a rewritten endpoint set,
its PATCH line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from federation.model import keys, patches
from federation.registry.trust import BUNDLE

WATCHED = {
    keys.CLUSTERS: "Cluster",
    keys.VMS: "Workload",
    keys.ENDPOINTS: "EndpointSet",
    keys.POLICIES: "TrafficPolicy",
    BUNDLE: "TrustBundle",
}


@dataclass(frozen=True, slots=True)
class Item:
    """One watched object: kind, key relative to the prefix, and the stored
    JSON bytes (None for a deletion), passed through undecoded."""

    kind: str
    key: str
    value: bytes | None

    @property
    def object(self) -> dict[str, Any] | None:
        return None if self.value is None else dict(json.loads(self.value))

    def line(self, type_: str, revision: int) -> bytes:
        """The NDJSON line of this object, its stored bytes spliced in."""
        head = (
            f'{{"type":"{type_}","revision":{revision},"kind":"{self.kind}",'
            f'"key":{json.dumps(self.key)},"object":'
        ).encode()
        return head + (b"null" if self.value is None else self.value) + b"}\n"


@dataclass(frozen=True, slots=True)
class Change:
    type: str  # PUT, DELETE
    revision: int
    item: Item
    previous: bytes | None = None  # the value replaced, on a watch asked with_previous

    def line(self) -> bytes:
        return self.item.line(self.type, self.revision)

    def decoded(self) -> Any:
        """The new value of a rewritten endpoint set, decoded (None for
        anything else, or what does not decode): for ``patch_line`` and
        whatever else reads it, so it is decoded once."""
        item = self.item
        if self.type != "PUT" or item.kind != "EndpointSet" or item.value is None:
            return None
        try:
            return orjson.loads(item.value)
        except orjson.JSONDecodeError:
            return None

    def patch_line(self, decoded: Any = None) -> bytes | None:
        """The PATCH line of a rewritten endpoint set (docs/api.md), when
        the replaced value is known and the delta is worth sending;
        ``decoded``: the new value as ``decoded()`` gave it."""
        item = self.item
        if self.type != "PUT" or item.kind != "EndpointSet":
            return None
        if self.previous is None or item.value is None:
            return None
        return self.patch_line_of(patches.diff(self.previous, item.value, decoded=decoded))

    def patch_line_of(self, delta: dict[str, Any] | None) -> bytes | None:
        """The PATCH line carrying ``delta`` (None: no line)."""
        item = self.item
        if delta is None:
            return None
        head = (
            f'{{"type":"PATCH","revision":{self.revision},"kind":"EndpointSet",'
            f'"key":{json.dumps(item.key)},"patch":'
        ).encode()
        return head + orjson.dumps(delta) + b"}\n"


def item_of(relative: str, value: bytes | None) -> Item | None:
    """The watched object at ``relative`` (a key under the prefix), or
    None for a key the snapshot and watch leave out."""
    for prefix, kind in WATCHED.items():
        if relative.startswith(prefix):
            return Item(kind, relative, value)
    return None


__all__ = ["WATCHED", "Change", "Item", "item_of"]
