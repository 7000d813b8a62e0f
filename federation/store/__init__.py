"""Revisioned key-value stores: ``open_store(url)`` picks the backend.

``sqlite:///path/to/file.db`` (single replica, the default) or
``etcd://host:port[,host:port...]`` (highly available).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from federation.clock import Clock
from federation.store.base import (
    DEFAULT_PREFIX,
    Compacted,
    Compare,
    Delete,
    Event,
    EventType,
    GetResult,
    InvalidKey,
    KeyValue,
    Lease,
    LeaseId,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreError,
    TxnResult,
    Unavailable,
    ValueTooLarge,
)

__all__ = [
    "DEFAULT_PREFIX",
    "Compacted",
    "Compare",
    "Delete",
    "Event",
    "EventType",
    "GetResult",
    "InvalidKey",
    "KeyValue",
    "Lease",
    "LeaseId",
    "LeaseNotFound",
    "Put",
    "RangeResult",
    "Store",
    "StoreError",
    "StoreURLError",
    "TxnResult",
    "Unavailable",
    "ValueTooLarge",
    "open_store",
]


class StoreURLError(StoreError):
    """A store URL that names no backend we have, or names it wrongly."""


async def open_store(url: str, *, clock: Clock | None = None) -> Store:
    """Open and start the store a URL names."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from federation.store.sqlite import SqliteStore

        if not parts.path or parts.netloc:
            raise StoreURLError(f"{url!r}: expected sqlite:///path/to/file.db")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        Path(parts.path).parent.mkdir(parents=True, exist_ok=True)
        sqlite = SqliteStore(
            parts.path, clock=clock, synchronous=options.get("synchronous", "normal")
        )
        await sqlite.start()
        return sqlite
    if parts.scheme == "etcd":
        try:
            from federation.store.etcd import EtcdStore
        except ImportError as err:
            raise StoreURLError(
                "etcd:// needs the etcd extra: pip install 'federation[etcd]'"
            ) from err

        etcd = EtcdStore(parse_endpoints(url))
        await etcd.start()
        return etcd
    raise StoreURLError(f"{url!r}: unknown store; use sqlite:///FILE or etcd://HOST:PORT[,...]")


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """``etcd://a:2379,b:2379`` -> [("a", 2379), ("b", 2379)]."""
    body = url.removeprefix("etcd://").rstrip("/")
    endpoints = []
    for item in filter(None, body.split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise StoreURLError(f"{url!r}: {item!r} is not HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    if not endpoints:
        raise StoreURLError(f"{url!r}: no etcd endpoints")
    return endpoints
