"""SPIFFE identities of the federation.

``spiffe://<td>/federation/cluster/<name>`` for cluster agents,
``spiffe://<td>/federation/vm/<name>`` for VM agents,
``spiffe://<td>/federation/admin/<name>`` for operators, and
``spiffe://<td>/ns/<ns>/sa/<sa>`` for workloads (issue "One trust domain").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from federation.model import SourceKind, SourceRef, ValidationError
from federation.model.validation import DNS1123_SUBDOMAIN, check_dns_label

DEFAULT_TRUST_DOMAIN = "cluster.local"


class Role(Enum):
    ADMIN = "admin"
    CLUSTER = "cluster"
    VM = "vm"


@dataclass(frozen=True, slots=True)
class Identity:
    role: Role
    name: str

    def __post_init__(self) -> None:
        check_dns_label("name", self.name)

    def __str__(self) -> str:
        return f"{self.role.value}/{self.name}"

    def spiffe_id(self, trust_domain: str) -> str:
        return f"spiffe://{trust_domain}/federation/{self.role.value}/{self.name}"

    @property
    def source(self) -> SourceRef | None:
        """The endpoint source this identity owns (None for admins)."""
        if self.role is Role.ADMIN:
            return None
        return SourceRef(kind=SourceKind(self.role.value), name=self.name)

    @classmethod
    def of_source(cls, source: SourceRef) -> Identity:
        return cls(Role(source.kind.value), source.name)

    @classmethod
    def from_spiffe_id(cls, uri: str, trust_domain: str) -> Identity:
        """Parse a federation SPIFFE id of ``trust_domain``; anything else raises."""
        prefix = f"spiffe://{trust_domain}/federation/"
        if not uri.startswith(prefix):
            raise ValidationError("spiffeId", f"{uri!r} is not a federation id of {trust_domain}")
        parts = uri[len(prefix) :].split("/")
        if len(parts) != 2 or parts[0] not in {r.value for r in Role}:
            raise ValidationError("spiffeId", f"{uri!r} is not a federation id of {trust_domain}")
        return cls(Role(parts[0]), parts[1])


def check_trust_domain(trust_domain: str) -> str:
    if len(trust_domain) > 253 or not DNS1123_SUBDOMAIN.fullmatch(trust_domain):
        raise ValidationError("trustDomain", f"{trust_domain!r} is not a DNS name")
    return trust_domain
