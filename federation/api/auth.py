"""Who is calling: the SPIFFE id of a verified client certificate.

The TLS layer has already checked the chain against the mesh root (a client
certificate is optional at the handshake, so join and the probes work
without one).  Here the URI SAN becomes an ``Identity``, and the validity
window is checked again against the registry's clock, so a certificate
that has expired by that clock is refused even on a long-lived connection.
"""

from __future__ import annotations

import datetime as dt
import ssl
import weakref
from collections.abc import Collection
from enum import Enum
from typing import Any

from aiohttp import web

from federation.model import SourceRef, ValidationError
from federation.registry import Forbidden, Unauthorized
from federation.shared.clock import Clock
from federation.trust.identity import Identity, Role


class Access(Enum):
    OPEN = "open"  # no credential: probes, CA, join (the token is the credential)
    ANY = "any"  # any valid federation identity
    MEMBER = "member"  # a cluster or VM agent
    ADMIN = "admin"
    OWNER = "owner"  # the source named in the path, or an admin
    VM = "vm"  # a VM agent, and no one else


# The parsed peer of each TLS connection: a connection keeps its
# certificate, so it is read once, and the expiry is checked on every request.
_peers: weakref.WeakKeyDictionary[ssl.SSLObject, tuple[Identity, float, str] | str] = (
    weakref.WeakKeyDictionary()
)


def peer_identity(
    request: web.Request, trust_domain: str, clock: Clock, roots: Collection[str]
) -> Identity | None:
    """The caller's identity; ``roots`` are the common names of the roots in
    force (the TLS layer cannot forget a retired root, this check does)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    peer = _peers.get(ssl_object)
    if peer is None:
        cert = ssl_object.getpeercert()
        if not cert:
            return None
        peer = _parse_peer(cert, trust_domain)
        _peers[ssl_object] = peer
    if isinstance(peer, str):
        raise Unauthorized(peer)
    identity, not_after, issuer = peer
    if not_after <= clock.now():
        raise Unauthorized("the client certificate has expired; join again")
    if issuer not in roots:
        raise Unauthorized("the client certificate was issued under a retired root; join again")
    return identity


def _parse_peer(cert: dict[str, Any], trust_domain: str) -> tuple[Identity, float, str] | str:
    """The identity and expiry of a peer certificate, or why it is refused."""
    uris = [str(entry[1]) for entry in cert.get("subjectAltName", ()) if entry[0] == "URI"]
    if len(uris) != 1:
        return "the client certificate must carry exactly one SPIFFE id"
    not_after = dt.datetime.strptime(str(cert["notAfter"]), "%b %d %H:%M:%S %Y %Z")
    try:
        identity = Identity.from_spiffe_id(uris[0], trust_domain)
    except ValidationError as err:
        return str(err)
    issuer = next(
        (str(value) for rdn in cert.get("issuer", ()) for key, value in rdn if key == "commonName"),
        "",
    )
    return identity, not_after.replace(tzinfo=dt.UTC).timestamp(), issuer


def authorize(access: Access, identity: Identity | None, source: SourceRef | None) -> None:
    """Raise unless ``identity`` may call a route of ``access``."""
    if access is Access.OPEN:
        return
    if identity is None:
        raise Unauthorized("a client certificate is required")
    if access is Access.VM and identity.role is not Role.VM:
        raise Forbidden(f"{identity} is not a VM agent")
    if access is Access.ANY or identity.role is Role.ADMIN:
        return
    if access is Access.ADMIN:
        raise Forbidden(f"{identity} is not an admin")
    if access in (Access.MEMBER, Access.VM):
        return
    if source is None or identity.source != source:
        raise Forbidden(f"{identity} may not write records of {source}")
