"""The registry's key space, relative to the store prefix: every key is
built and parsed here, and nowhere else.

- ``clusters/<name>``, ``vms/<name>``: the members;
- ``endpoints/<ns>/<name>/<source>/<shard>``: one EndpointSet shard;
- ``sources/<source>/<ns>/<name>/<shard>``: the index of a source's shards,
  so liveness, withdraw and removal touch only that source's records;
- ``policies/<ns>/<name>``: a TrafficPolicy;
- ``tokens/<sha256>``, ``alive/<source>``, ``trust/...``, ``leader``,
  ``removing/<member key>``, ``admins/<name>``: registry-internal.

Namespaces and names are DNS labels and a source is ``kind:name``, so no
part holds a ``/``."""

from __future__ import annotations

from dataclasses import dataclass

from federation.model.records import ServiceRef, SourceKind, SourceRef
from federation.model.validation import ValidationError

ENDPOINTS = "endpoints/"
SOURCES = "sources/"
POLICIES = "policies/"
CLUSTERS = "clusters/"
VMS = "vms/"
ALIVE = "alive/"
TOKENS = "tokens/"
LEADER = "leader"
REMOVING = "removing/"
ADMINS = "admins/"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardKey:
    """Where one shard of one source's endpoint set of one service lives."""

    service: ServiceRef
    source: SourceRef
    shard: int = 0

    @property
    def key(self) -> str:
        return f"{ENDPOINTS}{self.service}/{self.source}/{self.shard}"

    @property
    def index_key(self) -> str:
        return f"{SOURCES}{self.source}/{self.service}/{self.shard}"


def service_prefix(service: ServiceRef) -> str:
    return f"{ENDPOINTS}{service}/"


def source_prefix(source: SourceRef, service: ServiceRef | None = None) -> str:
    """The index keys of a source's shards (of one service, or of all)."""
    return f"{SOURCES}{source}/" + ("" if service is None else f"{service}/")


def member_key(kind: SourceKind, name: str) -> str:
    return f"{CLUSTERS if kind is SourceKind.CLUSTER else VMS}{name}"


def removing_key(kind: SourceKind, name: str) -> str:
    """Held while a member is being removed (its record is already gone)."""
    return f"{REMOVING}{member_key(kind, name)}"


def parse_member(key: str) -> tuple[SourceKind, str] | None:
    """A ``clusters/`` or ``vms/`` key back into its kind and name."""
    for prefix, kind in ((CLUSTERS, SourceKind.CLUSTER), (VMS, SourceKind.VM)):
        if key.startswith(prefix) and "/" not in key[len(prefix) :]:
            return kind, key[len(prefix) :]
    return None


def alive_key(source: SourceRef) -> str:
    return f"{ALIVE}{source}"


def policy_key(service: ServiceRef) -> str:
    return f"{POLICIES}{service}"


def parse_shard(key: str) -> ShardKey:
    """An ``endpoints/`` key back into its parts."""
    namespace, name, source, shard = _four(key, ENDPOINTS, "an endpoint set key")
    return _shard_key(namespace, name, source, shard)


def parse_index(key: str) -> ShardKey:
    """A ``sources/`` index key back into the shard it indexes."""
    source, namespace, name, shard = _four(key, SOURCES, "a source index key")
    return _shard_key(namespace, name, source, shard)


def _four(key: str, prefix: str, what: str) -> list[str]:
    parts = key.removeprefix(prefix).split("/")
    if not key.startswith(prefix) or len(parts) != 4 or not parts[3].isdigit():
        raise ValidationError("key", f"{key!r} is not {what}")
    return parts


def _shard_key(namespace: str, name: str, source: str, shard: str) -> ShardKey:
    return ShardKey(
        service=ServiceRef(namespace=namespace, name=name),
        source=SourceRef.parse(source),
        shard=int(shard),
    )


def parse_policy(key: str) -> ServiceRef:
    namespace, _, name = key.removeprefix(POLICIES).partition("/")
    return ServiceRef(namespace=namespace, name=name)


def parse_alive(key: str) -> SourceRef:
    return SourceRef.parse(key.rsplit("/", 1)[1])


def parse_vm(key: str) -> str:
    return key.removeprefix(VMS)


__all__ = [
    "ADMINS",
    "ALIVE",
    "CLUSTERS",
    "ENDPOINTS",
    "LEADER",
    "POLICIES",
    "REMOVING",
    "SOURCES",
    "TOKENS",
    "VMS",
    "ShardKey",
    "alive_key",
    "member_key",
    "parse_alive",
    "parse_index",
    "parse_member",
    "parse_policy",
    "parse_shard",
    "parse_vm",
    "policy_key",
    "removing_key",
    "service_prefix",
    "source_prefix",
]
