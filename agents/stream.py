"""The registry's NDJSON streams as the client reads them: what they
yield (Relist, Event, Synced, Bookmark) and how a line, an ERROR line or a
status becomes one of those or an error."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from agents.errors import (
    Gone,
    RegistryError,
    Rejected,
    Revoked,
    Unauthorized,
    Unavailable,
    UnreadableStream,
)
from federation.model import Cluster, EndpointSet, TrafficPolicy, ValidationError, Workload
from federation.trust.bundle import TrustBundle


@dataclass(frozen=True, slots=True)
class Relist:
    """A snapshot at ``revision`` begins: the Events up to the next
    ``Synced`` are everything the registry holds; what they do not confirm
    is gone.  A snapshot that breaks off starts again with a new Relist."""

    revision: int


@dataclass(frozen=True, slots=True)
class Synced:
    """The snapshot begun by the last Relist is complete."""

    revision: int


Record = EndpointSet | Cluster | Workload | TrafficPolicy | TrustBundle
RECORDS: dict[str, Callable[[object], Record]] = {
    "EndpointSet": EndpointSet.from_wire,
    "Cluster": Cluster.from_wire,
    "Workload": Workload.from_wire,
    "TrafficPolicy": TrafficPolicy.from_wire,
    "TrustBundle": TrustBundle.from_wire,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One change of the registry: ``object`` as it came on the wire (the
    delta, for a PATCH), and ``record``, the same object decoded into its
    model record, once, when first asked (None for a deletion, a PATCH, or
    a kind this client does not know): a consumer that only counts or
    forwards pays no decode.  ``unreadable`` says why an object of a known
    kind did not decode: the consumer leaves it out and goes on."""

    type: str  # PUT, DELETE, or PATCH (``object`` is then the delta)
    revision: int
    kind: str
    key: str
    object: dict[str, Any] | None
    # (record, why it did not decode), once decoded: a frozen Event's cache
    _decoded: list[tuple[Record | None, str | None]] = field(
        default_factory=list, repr=False, compare=False
    )

    @property
    def record(self) -> Record | None:
        return self._decode()[0]

    @property
    def unreadable(self) -> str | None:
        return self._decode()[1]

    def _decode(self) -> tuple[Record | None, str | None]:
        if not self._decoded:
            decode = RECORDS.get(self.kind) if self.type == "PUT" else None
            record, why = None, None
            if decode is not None and self.object is not None:
                try:
                    record = decode(self.object)
                except ValidationError as err:
                    why = str(err)
            self._decoded.append((record, why))
        return self._decoded[0]


@dataclass(frozen=True, slots=True)
class Bookmark:
    revision: int


Change = Relist | Synced | Event | Bookmark

BROKEN_WARN_EVERY = 60.0  # seconds between warnings while the registry stays unreachable


@dataclass
class StreamState:
    """The registry stream as the agent's metrics tell it: connected while
    lines arrive, when the last one came (wall clock; bookmarks count), and
    how often it broke."""

    connected: bool = False
    last_line_at: float = 0.0
    breaks: int = 0
    breaks_in_a_row: int = 0

    def line(self) -> None:
        self.connected = True
        self.last_line_at = time.time()
        self.breaks_in_a_row = 0

    def broke(self) -> None:
        self.connected = False
        self.breaks += 1
        self.breaks_in_a_row += 1


MAX_LINE = 4 * 1024 * 1024  # well over the largest legal record (MAX_SET_BYTES)
CHUNK = 64 * 1024


def parse_line(raw: bytes) -> dict[str, Any]:
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise UnreadableStream(f"a stream line is not JSON: {err}") from err
    if not isinstance(line, dict):
        raise UnreadableStream("a stream line is not a JSON object")
    return line


def refusal(status: int, data: dict[str, Any]) -> RegistryError:
    """The error for an answer (or an ERROR line) of ``status`` with the
    registry's JSON error body ``data``."""
    message = str(data.get("message") or f"HTTP {status}")
    reason = data.get("reason")
    if reason == "Revoked":
        return Revoked(message)
    if status == 410:
        return Gone(message)
    if status == 401:
        return Unauthorized(message, Unauthorized.REFUSED)
    if 400 <= status < 500:
        field = data.get("field")
        return Rejected(
            status,
            message,
            reason=str(reason) if reason else None,
            field=str(field) if field else None,
        )
    return Unavailable(message, status)


def raise_error_line(line: dict[str, Any]) -> None:
    raise refusal(int(line.get("code", 0) or 0), line)


async def check_status(answer: aiohttp.ClientResponse) -> None:
    if answer.status == 410:
        raise Gone("compacted")
    if answer.status != 200:
        data = await json_body(answer)
        if answer.status == 400 and data.get("field") == "since":
            raise Ahead(str(data.get("message")))
        raise refusal(answer.status, data)


class Ahead(Exception):
    """A watch from a revision the registry has not reached (a restored store)."""


async def json_body(answer: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await answer.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {"message": f"HTTP {answer.status} {answer.reason}"}
    return data if isinstance(data, dict) else {"items": data}


__all__ = [
    "BROKEN_WARN_EVERY",
    "CHUNK",
    "MAX_LINE",
    "RECORDS",
    "Ahead",
    "Bookmark",
    "Change",
    "Event",
    "Gone",
    "Record",
    "Relist",
    "StreamState",
    "Synced",
    "check_status",
    "json_body",
    "parse_line",
    "raise_error_line",
    "refusal",
]  # fmt: skip
