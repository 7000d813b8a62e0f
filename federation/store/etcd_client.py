"""aetcd's client as the etcd store uses it: over TLS when asked (aetcd
itself opens plaintext channels only), its raw gRPC errors classified as
aetcd's own methods classify them, and etcd's answers and errors mapped to
the store's types."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions as etcd_errors
import grpc
from aetcd import watcher as etcd_watcher

from federation.store.base import (
    Compacted,
    Delete,
    KeyValue,
    LeaseId,
    Op,
    StoreError,
    Unavailable,
)

_T = TypeVar("_T")

# What etcd answers while it has no leader or is overloaded: worth a retry.
TRANSIENT = (
    "leader changed",
    "no leader",
    "request timed out",
    "too many requests",
    "unhealthy cluster",
    "not capable",
    "stopped",
    "context deadline exceeded",
)


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """Files for TLS to etcd: the CA that signed the members' certificates,
    and this client's certificate and key (PEM)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca.read_bytes(),
                certificate_chain=self.cert.read_bytes() if self.cert else None,
                private_key=self.key.read_bytes() if self.key else None,
            )
        except OSError as err:
            raise StoreError(f"cannot read the etcd TLS files: {err}") from err


class TlsClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client, over TLS when given channel credentials."""

    def __init__(self, credentials: grpc.ChannelCredentials | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._credentials is None:
            await super().connect()
            return
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            target = f"{self._host}:{self._port}"
            channel = aetcd.rpc.secure_channel(
                target, self._credentials, options=self._options.items()
            )
            self.channel = channel
            self.kvstub = aetcd.rpc.KVStub(channel)
            self.clusterstub = aetcd.rpc.ClusterStub(channel)
            self.leasestub = aetcd.rpc.LeaseStub(channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(channel)
            self._watcher = etcd_watcher.Watcher(
                aetcd.rpc.WatchStub(channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def connected(
    run: Callable[[aetcd.Client], Awaitable[_T]],
) -> Callable[[aetcd.Client], Awaitable[_T]]:
    """Make sure the client is connected before using its stubs directly,
    and classify raw gRPC errors as aetcd's decorated methods do."""

    async def call(client: aetcd.Client) -> _T:
        await client.connect()
        try:
            return await run(client)
        except aetcd.rpc.AioRpcError as err:
            etcd_errors._handle_exception(err)
            raise  # unreachable: the handler always raises

    return call


def request_op(client: aetcd.Client, op: Op) -> Any:
    if isinstance(op, Delete):
        return client.transactions.delete(op.key.encode())
    return client.transactions.put(op.key.encode(), op.value, lease=op.lease)


class LeaseMissing(StoreError):
    """etcd refused a write naming a lease it does not have."""


def classify(err: Exception) -> StoreError:
    if isinstance(err, etcd_errors.WatchTimeoutError):
        return Unavailable(f"etcd watch timed out: {err}")
    text = str(err)
    if any(marker in text for marker in TRANSIENT):
        return Unavailable(f"etcd cannot serve now: {text}")
    if "lease not found" in text:
        return LeaseMissing(f"etcd: requested lease not found: {text}")
    if "required revision has been compacted" in text:
        return Compacted(0, 0)
    if "too large" in text:
        return StoreError(f"etcd refused the request as too large: {text}")
    return StoreError(f"etcd error: {text}")


def key_value(raw: Any) -> KeyValue:
    return KeyValue(
        key=raw.key.decode(),
        value=bytes(raw.value),
        create_revision=int(raw.create_revision),
        mod_revision=int(raw.mod_revision),
        version=int(raw.version),
        lease=LeaseId(raw.lease) if raw.lease else None,
    )


__all__ = [
    "TRANSIENT",
    "EtcdTls",
    "LeaseMissing",
    "TlsClient",
    "classify",
    "connected",
    "key_value",
    "request_op",
]
