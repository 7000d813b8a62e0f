"""Revisioned key-value stores: ``open_store(url)`` picks the backend.

``sqlite:///path/to/file.db`` (single replica, the default) or
``etcd://host:port[,host:port...]`` (highly available).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from federation.shared.clock import Clock
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

        from federation.store.etcd_client import EtcdTls

        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - {"timeout", "cacert", "cert", "key"}
        if unknown:
            raise StoreURLError(f"{url!r}: unknown option {sorted(unknown)[0]!r}")
        tls = None
        if "cacert" in options:
            tls = EtcdTls(
                ca=Path(options["cacert"]),
                cert=Path(options["cert"]) if "cert" in options else None,
                key=Path(options["key"]) if "key" in options else None,
            )
        elif "cert" in options or "key" in options:
            raise StoreURLError(f"{url!r}: cert and key need cacert (the members' CA)")
        try:
            timeout = float(options.get("timeout", "2"))
        except ValueError:
            raise StoreURLError(f"{url!r}: timeout must be seconds") from None
        etcd = EtcdStore(parse_endpoints(url), timeout=timeout, tls=tls)
        try:
            await etcd.start()
        except BaseException:
            await etcd.close()
            raise
        return etcd
    raise StoreURLError(f"{url!r}: unknown store; use sqlite:///FILE or etcd://HOST:PORT[,...]")


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """``etcd://a:2379,b:2379`` -> [("a", 2379), ("b", 2379)]."""
    body = urlsplit(url).netloc
    endpoints = []
    for item in filter(None, body.split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise StoreURLError(f"{url!r}: {item!r} is not HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    if not endpoints:
        raise StoreURLError(f"{url!r}: no etcd endpoints")
    return endpoints
