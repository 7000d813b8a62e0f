"""The watched ``TrustBundle`` as a record: what agents install and
acknowledge (the roots in force, which of them issues, the rotation's
version and phase)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509

from federation.model.validation import Fields, ValidationError, check_int
from federation.trust.ca import fingerprint

_FIELDS = frozenset({"trustDomain", "version", "phase", "issuer", "roots"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustBundle:
    trust_domain: str
    version: int
    phase: str
    issuer: str  # the sha256 of the issuing root
    roots: tuple[str, ...]  # PEM, every root in force

    @property
    def roots_pem(self) -> bytes:
        return "".join(self.roots).encode()

    def issuing_root(self) -> bytes:
        """The PEM of the issuing root."""
        for pem in self.roots:
            if fingerprint(x509.load_pem_x509_certificate(pem.encode())) == self.issuer:
                return pem.encode()
        raise ValueError("the trust bundle does not hold its issuing root")

    def to_wire(self) -> dict[str, Any]:
        return {
            "trustDomain": self.trust_domain,
            "version": self.version,
            "phase": self.phase,
            "issuer": self.issuer,
            "roots": list(self.roots),
        }

    @classmethod
    def from_wire(cls, obj: object) -> TrustBundle:
        if not isinstance(obj, dict):
            raise ValidationError("", "a TrustBundle is an object")
        fields = Fields(obj, _FIELDS)
        roots = fields.get("roots", None)
        if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
            raise ValidationError("roots", "expected a non-empty list of PEM certificates")
        texts = {}
        for name in ("trustDomain", "phase", "issuer"):
            value = fields.get(name, None)
            if not isinstance(value, str) or not value:
                raise ValidationError(name, "expected a string")
            texts[name] = value
        return cls(
            trust_domain=texts["trustDomain"],
            version=check_int("version", fields.get("version", None), 0, 2**62),
            phase=texts["phase"],
            issuer=texts["issuer"],
            roots=tuple(roots),
        )


__all__ = ["TrustBundle"]
