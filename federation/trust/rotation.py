"""The trust domain's state and the root rotation state machine (pure).

``TrustState`` is every root in force (oldest first), which one issues,
the trust bundle's version and the rotation phase.  A rotation walks:

    Idle -> Prepared -> Published -> Switched -> Retiring -> Idle

- Prepared: the next root exists; the bundle has not changed yet.
- Published: the bundle holds both roots (version N); waiting until every
  agent has acknowledged N.
- Switched: the new root issues, and chains it issues carry the new root
  cross-signed by the old one, so a peer that still trusts only the old
  root verifies them; agents reissue their intermediates and certificates
  and acknowledge N+1.
- Retiring: the old root has left the bundle (N+2) and its key is gone;
  once every agent has acknowledged N+2 the rotation is over.

Each transition is a pure function; ``TrustDomain`` (``registry.trust``)
applies them in guarded store transactions.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.trust.bundle import TrustBundle
from federation.trust.ca import cert_pem, fingerprint


class Phase(Enum):
    IDLE = "Idle"
    PREPARED = "Prepared"
    PUBLISHED = "Published"
    SWITCHED = "Switched"
    RETIRING = "Retiring"


class RotationError(ValueError):
    """A transition asked for in the wrong phase."""


@dataclass(frozen=True)
class Root:
    cert: x509.Certificate
    key_pem: bytes  # PKCS#8, encrypted with the registry's encryption key
    generation: int
    cross: x509.Certificate | None = None  # this root certified by the one before

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cert": cert_pem(self.cert).decode(),
            "key": self.key_pem.decode(),
            "generation": self.generation,
        }
        if self.cross is not None:
            out["cross"] = cert_pem(self.cross).decode()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Root:
        cross = data.get("cross")
        return cls(
            cert=x509.load_pem_x509_certificate(data["cert"].encode()),
            key_pem=data["key"].encode(),
            generation=int(data.get("generation", 1)),
            cross=x509.load_pem_x509_certificate(cross.encode()) if cross else None,
        )


@dataclass(frozen=True)
class TrustState:
    roots: tuple[Root, ...]  # oldest first
    issuer: str  # fingerprint of the issuing root
    published: tuple[str, ...]  # fingerprints in the trust bundle
    version: int  # of the trust bundle
    phase: Phase = Phase.IDLE
    since: float = 0.0  # when the phase began
    # Retired roots and the cross-signature each gave its successor, newest
    # last: a join token pinned to a retired root can still prove, link by
    # link, that the root in force descends from the one it pins.
    succession: tuple[tuple[x509.Certificate, x509.Certificate], ...] = ()

    @classmethod
    def first(cls, root: Root, now: float) -> TrustState:
        return cls((root,), root.fingerprint, (root.fingerprint,), 1, Phase.IDLE, now)

    @property
    def issuing(self) -> Root:
        return next(r for r in self.roots if r.fingerprint == self.issuer)

    @property
    def bundle(self) -> list[x509.Certificate]:
        return [r.cert for r in self.roots if r.fingerprint in self.published]

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(cert_pem(c) for c in self.bundle)

    @property
    def chain(self) -> list[x509.Certificate]:
        """What a certificate issued now carries above itself, below the root."""
        cross = self.issuing.cross
        return [cross] if cross is not None else []

    @property
    def chain_pem(self) -> bytes:
        return b"".join(cert_pem(c) for c in self.chain)

    @property
    def waits_for_acks(self) -> bool:
        return self.phase in (Phase.PUBLISHED, Phase.SWITCHED, Phase.RETIRING)

    def bundle_object(self, trust_domain: str) -> dict[str, Any]:
        """The watched ``TrustBundle``: what agents install and acknowledge."""
        return TrustBundle(
            trust_domain=trust_domain,
            version=self.version,
            phase=self.phase.value,
            issuer=self.issuer,
            roots=tuple(cert_pem(c).decode() for c in self.bundle),
        ).to_wire()

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "roots": [r.to_json() for r in self.roots],
                "issuer": self.issuer,
                "published": list(self.published),
                "version": self.version,
                "phase": self.phase.value,
                "since": self.since,
                "succession": [
                    {"root": cert_pem(old).decode(), "cross": cert_pem(cross).decode()}
                    for old, cross in self.succession
                ],
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TrustState:
        data = json.loads(raw)
        return cls(
            roots=tuple(Root.from_json(r) for r in data["roots"]),
            issuer=data["issuer"],
            published=tuple(data["published"]),
            version=int(data["version"]),
            phase=Phase(data["phase"]),
            since=float(data.get("since", 0.0)),
            succession=tuple(
                (
                    x509.load_pem_x509_certificate(link["root"].encode()),
                    x509.load_pem_x509_certificate(link["cross"].encode()),
                )
                for link in data.get("succession", [])
            ),
        )


SUCCESSION_KEPT = 8  # join tokens live at most 7 days; rotations are rarer


def _expect(state: TrustState, phase: Phase) -> None:
    if state.phase is not phase:
        raise RotationError(f"the rotation is in phase {state.phase.value}, not {phase.value}")


def prepare(state: TrustState, root: Root, now: float) -> TrustState:
    """Step 1: the next root, kept out of the bundle for now."""
    _expect(state, Phase.IDLE)
    return replace(state, roots=(*state.roots, root), phase=Phase.PREPARED, since=now)


def publish(state: TrustState, now: float) -> TrustState:
    """Step 2: both roots in the bundle, a new bundle version to acknowledge."""
    _expect(state, Phase.PREPARED)
    return replace(
        state,
        published=tuple(r.fingerprint for r in state.roots),
        version=state.version + 1,
        phase=Phase.PUBLISHED,
        since=now,
    )


def switch(state: TrustState, cross: x509.Certificate, now: float) -> TrustState:
    """Step 4: the new root issues, cross-signed by the old one."""
    _expect(state, Phase.PUBLISHED)
    *old, new = state.roots
    return replace(
        state,
        roots=(*old, replace(new, cross=cross)),
        issuer=new.fingerprint,
        version=state.version + 1,
        phase=Phase.SWITCHED,
        since=now,
    )


def retire(state: TrustState, now: float) -> TrustState:
    """Step 6: only the new root stays; the old key is dropped."""
    _expect(state, Phase.SWITCHED)
    new = replace(state.issuing, cross=None)
    retired = next(r for r in state.roots if r.fingerprint != new.fingerprint)
    links = state.succession
    if state.issuing.cross is not None:
        links = (*links, (retired.cert, state.issuing.cross))[-SUCCESSION_KEPT:]
    return replace(
        state,
        succession=links,
        roots=(new,),
        published=(new.fingerprint,),
        version=state.version + 1,
        phase=Phase.RETIRING,
        since=now,
    )


def settle(state: TrustState, now: float) -> TrustState:
    _expect(state, Phase.RETIRING)
    return replace(state, phase=Phase.IDLE, since=now)


def jwks(state: TrustState, refresh_hint: int) -> dict[str, Any]:
    """The bundle as a SPIFFE bundle (JWKS): one ``x509-svid`` key per root,
    its certificate in ``x5c``; ``spiffe_sequence`` is the bundle version."""
    keys = []
    for cert in state.bundle:
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)  # roots are EC (ca.load_root)
        numbers, size = public.public_numbers(), (public.curve.key_size + 7) // 8
        keys.append(
            {
                "use": "x509-svid",
                "kty": "EC",
                "crv": {256: "P-256", 384: "P-384"}[public.curve.key_size],
                "x": _b64url(numbers.x.to_bytes(size, "big")),
                "y": _b64url(numbers.y.to_bytes(size, "big")),
                "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
            }
        )
    return {"keys": keys, "spiffe_sequence": state.version, "spiffe_refresh_hint": refresh_hint}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
