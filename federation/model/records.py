"""Typed records of the federation's endpoints (localities, sources,
services, ports, endpoints, endpoint sets), their validation and their JSON
form; the members that publish them are in ``members``.

Every record is a frozen, keyword-only dataclass that validates itself on
construction, so an invalid record cannot exist in memory.  The wire form is
plain JSON; ``from_wire`` rebuilds a record and, when the input is wrong,
raises one error type, ``ValidationError``, naming the path of the bad field
(``endpoints[3].ports[0].port``) so an API can answer with it verbatim.

This package imports nothing of ours and no I/O library: the store, the API,
the agents and ``routing`` all share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from federation.model.validation import (
    MAX_LABELS,
    Fields,
    Inconsistent,
    ValidationError,
    check_bool,
    check_dns_label,
    check_enum,
    check_int,
    check_ip,
    check_label_value,
    check_number,
    check_service_name,
    memo_wire,
    require_str,
)

MAX_ENDPOINTS_PER_SET = 1000  # per shard: a larger source publishes several shards
MAX_SHARDS = 1000
MAX_SET_BYTES = 768 * 1024  # a shard's stored JSON: every client reads any legal one
MAX_PORTS_PER_ENDPOINT = 100
MAX_WEIGHT = 1_000_000

__all__ = [
    "MAX_ENDPOINTS_PER_SET",
    "MAX_LABELS",
    "MAX_PORTS_PER_ENDPOINT",
    "MAX_SET_BYTES",
    "MAX_SHARDS",
    "MAX_WEIGHT",
    "Endpoint",
    "EndpointPort",
    "EndpointSet",
    "Locality",
    "NetworkMode",
    "Protocol",
    "ServiceRef",
    "SessionAffinity",
    "SourceKind",
    "SourceRef",
]


_LOCALITIES: dict[bytes, Locality] = {}
_PORTS: dict[bytes, EndpointPort] = {}


# -- records ----------------------------------------------------------------------


class SourceKind(Enum):
    CLUSTER = "cluster"
    VM = "vm"


class Protocol(Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class NetworkMode(Enum):
    FLAT = "flat"
    GATEWAY = "gateway"


class SessionAffinity(Enum):
    NONE = "None"
    CLIENT_IP = "ClientIP"


MAX_AFFINITY_TIMEOUT = 86400  # kube's bound on sessionAffinityConfig.clientIP.timeoutSeconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Locality:
    region: str
    zone: str
    cluster: str = ""
    network: str = ""

    def __post_init__(self) -> None:
        check_label_value("region", self.region)
        check_label_value("zone", self.zone)
        if self.cluster:
            check_dns_label("cluster", self.cluster)
        check_label_value("network", self.network)

    def to_wire(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "zone": self.zone,
            "cluster": self.cluster,
            "network": self.network,
        }

    @classmethod
    def from_wire(cls, data: object) -> Locality:
        return memo_wire(_LOCALITIES, data, cls._from_wire)

    @classmethod
    def _from_wire(cls, data: object) -> Locality:
        f = Fields(data, frozenset({"region", "zone", "cluster", "network"}))
        return cls(
            region=check_label_value("region", f.get("region")),
            zone=check_label_value("zone", f.get("zone")),
            cluster=require_str("cluster", f.get("cluster", "")),
            network=check_label_value("network", f.get("network", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRef:
    """Who publishes an endpoint set: a cluster or a VM."""

    kind: SourceKind
    name: str

    def __post_init__(self) -> None:
        check_enum("kind", SourceKind, self.kind)
        check_dns_label("name", self.name)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> SourceRef:
        """``cluster:east`` or ``vm:db-1``."""
        kind, sep, name = text.partition(":")
        if not sep:
            raise ValidationError("", f"{text!r} is not KIND:NAME (cluster:NAME or vm:NAME)")
        return cls(kind=check_enum("kind", SourceKind, kind), name=name)

    @classmethod
    def from_wire(cls, data: object) -> SourceRef:
        return cls.parse(require_str("", data))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRef:
    """A global service: ``<ns>/<name>`` is the same service everywhere."""

    namespace: str
    name: str

    def __post_init__(self) -> None:
        check_dns_label("namespace", self.namespace)
        check_service_name("name", self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        namespace, sep, name = text.partition("/")
        if not sep:
            raise ValidationError("", f"{text!r} is not NAMESPACE/NAME")
        return cls(namespace=namespace, name=name)

    def to_wire(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name}

    @classmethod
    def from_wire(cls, data: object) -> ServiceRef:
        f = Fields(data, frozenset({"namespace", "name"}))
        return cls(
            namespace=check_dns_label("namespace", f.get("namespace")),
            name=check_service_name("name", f.get("name")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointPort:
    name: str
    port: int
    protocol: Protocol = Protocol.TCP

    def __post_init__(self) -> None:
        if self.name:
            check_dns_label("name", self.name)
        check_int("port", self.port, 1, 65535)
        check_enum("protocol", Protocol, self.protocol)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "protocol": self.protocol.value}

    @classmethod
    def from_wire(cls, data: object) -> EndpointPort:
        return memo_wire(_PORTS, data, cls._from_wire)

    @classmethod
    def _from_wire(cls, data: object) -> EndpointPort:
        f = Fields(data, frozenset({"name", "port", "protocol"}))
        return cls(
            name=require_str("name", f.get("name", "")),
            port=check_int("port", f.get("port"), 1, 65535),
            protocol=check_enum("protocol", Protocol, f.get("protocol", "TCP")),
        )


def _hostname(value: object) -> str:
    return check_dns_label("hostname", value) if value != "" else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One backend address with EndpointSlice-style conditions, and the
    ``hostname`` its slice gives it (a headless Service's pod: DNS answers
    ``<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local``)."""

    address: str
    ports: tuple[EndpointPort, ...]
    locality: Locality
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    weight: int = 1
    hostname: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", check_ip("address", self.address))
        if self.hostname:
            check_dns_label("hostname", self.hostname)
        if len(self.ports) > MAX_PORTS_PER_ENDPOINT:
            raise ValidationError("ports", f"at most {MAX_PORTS_PER_ENDPOINT} ports")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise Inconsistent("ports", "port names must be unique")
        check_int("weight", self.weight, 0, MAX_WEIGHT)

    @property
    def healthy(self) -> bool:
        return self.ready and not self.terminating

    def to_wire(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "ports": [p.to_wire() for p in self.ports],
            "locality": self.locality.to_wire(),
            "ready": self.ready,
            "serving": self.serving,
            "terminating": self.terminating,
            "weight": self.weight,
            **({"hostname": self.hostname} if self.hostname else {}),
        }

    @classmethod
    def from_wire(cls, data: object) -> Endpoint:
        """Checks every field once, here, then builds the record without
        ``__post_init__`` checking them again: a publish of a 100-endpoint
        shard decodes 100 of these, and the second pass was 40% of it."""
        f = Fields(data, _ENDPOINT_FIELDS)
        ports = f.items("ports", EndpointPort.from_wire, MAX_PORTS_PER_ENDPOINT)
        if len(ports) > 1 and len({p.name for p in ports}) != len(ports):
            raise Inconsistent("ports", "port names must be unique")
        hostname = f.get("hostname", "")
        endpoint = object.__new__(cls)
        for name, value in (
            ("address", check_ip("address", f.get("address"))),
            ("ports", ports),
            ("locality", f.nested("locality", Locality.from_wire)),
            ("ready", check_bool("ready", f.get("ready", True))),
            ("serving", check_bool("serving", f.get("serving", True))),
            ("terminating", check_bool("terminating", f.get("terminating", False))),
            ("weight", check_int("weight", f.get("weight", 1), 0, MAX_WEIGHT)),
            ("hostname", check_dns_label("hostname", hostname) if hostname else ""),
        ):
            object.__setattr__(endpoint, name, value)
        return endpoint


_ENDPOINT_FIELDS = frozenset(
    {"address", "ports", "locality", "ready", "serving", "terminating", "weight", "hostname"}
)
_SET_FIELDS = frozenset(
    {"service", "source", "generation", "endpoints", "ports", "stale", "changedAt", "staleSince"}
    | {"shard", "headless", "sessionAffinity", "sessionAffinityTimeoutSeconds", "exportedAt"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSet:
    """The whole endpoint set of one service from one source, versioned by
    the source's ``generation``; ``stale`` is set when the source's lease
    expired, at ``stale_since`` (by the registry's clock).  ``changed_at``
    is the source's wall-clock time of the change, carried end to end for
    the propagation metric.  ``ports`` are the
    exported Service's own ports (name and port number), which an importing
    cluster gives its ``-global`` Service; the endpoints' ports are what a
    connection is forwarded to.

    A source with more endpoints than one record may carry publishes
    several ``shard``s (0, 1, ...), each a record of its own with its own
    generation; consumers merge them (``merge_shards``).  The per-shard
    bounds (endpoints, bytes) hold at the wire, so a merged set may be
    larger.

    What the MCS API derives an import from travels too: whether the
    exported Service is ``headless``, its session affinity (and timeout),
    and ``exported_at``, when its ServiceExport was created, which decides
    conflicts (the oldest export wins).  On the wire they appear only when
    not at their defaults."""

    service: ServiceRef
    source: SourceRef
    generation: int
    shard: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    stale: bool = False
    changed_at: float = 0.0
    stale_since: float = 0.0
    headless: bool = False
    session_affinity: SessionAffinity = SessionAffinity.NONE
    affinity_timeout: int = 0  # seconds; 0: kube's default
    exported_at: float = 0.0

    def __post_init__(self) -> None:
        check_int("generation", self.generation, 0, 2**63 - 1)
        check_int("shard", self.shard, 0, MAX_SHARDS - 1)
        if len(self.ports) > MAX_PORTS_PER_ENDPOINT:
            raise ValidationError("ports", f"at most {MAX_PORTS_PER_ENDPOINT} ports")
        check_number("changedAt", self.changed_at, 0.0, 1e11)
        check_number("staleSince", self.stale_since, 0.0, 1e11)
        check_enum("sessionAffinity", SessionAffinity, self.session_affinity)
        check_int("sessionAffinityTimeoutSeconds", self.affinity_timeout, 0, MAX_AFFINITY_TIMEOUT)
        check_number("exportedAt", self.exported_at, 0.0, 1e11)

    def to_wire(self) -> dict[str, Any]:
        return {**self.header_wire(), "endpoints": [e.to_wire() for e in self.endpoints]}

    def header_wire(self) -> dict[str, Any]:
        """Every field but the endpoints (what a delta's fields change)."""
        wire = {
            "service": self.service.to_wire(),
            "source": str(self.source),
            "generation": self.generation,
            "shard": self.shard,
            "ports": [p.to_wire() for p in self.ports],
            "stale": self.stale,
            "changedAt": self.changed_at,
            "staleSince": self.stale_since,
        }
        if self.headless:
            wire["headless"] = True
        if self.session_affinity is not SessionAffinity.NONE:
            wire["sessionAffinity"] = self.session_affinity.value
        if self.affinity_timeout:
            wire["sessionAffinityTimeoutSeconds"] = self.affinity_timeout
        if self.exported_at:
            wire["exportedAt"] = self.exported_at
        return wire

    @classmethod
    def from_wire(cls, data: object) -> EndpointSet:
        f = Fields(data, _SET_FIELDS)
        return cls(
            service=f.nested("service", ServiceRef.from_wire),
            source=f.nested("source", SourceRef.from_wire),
            generation=check_int("generation", f.get("generation"), 0, 2**63 - 1),
            shard=check_int("shard", f.get("shard", 0), 0, MAX_SHARDS - 1),
            endpoints=f.items("endpoints", Endpoint.from_wire, MAX_ENDPOINTS_PER_SET),
            ports=f.items("ports", EndpointPort.from_wire, MAX_PORTS_PER_ENDPOINT),
            stale=check_bool("stale", f.get("stale", False)),
            changed_at=check_number("changedAt", f.get("changedAt", 0.0), 0.0, 1e11),
            stale_since=check_number("staleSince", f.get("staleSince", 0.0), 0.0, 1e11),
            headless=check_bool("headless", f.get("headless", False)),
            session_affinity=check_enum(
                "sessionAffinity", SessionAffinity, f.get("sessionAffinity", "None")
            ),
            affinity_timeout=check_int(
                "sessionAffinityTimeoutSeconds",
                f.get("sessionAffinityTimeoutSeconds", 0),
                0,
                MAX_AFFINITY_TIMEOUT,
            ),
            exported_at=check_number("exportedAt", f.get("exportedAt", 0.0), 0.0, 1e11),
        )
