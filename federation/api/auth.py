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
from enum import Enum

from aiohttp import web

from federation.clock import Clock
from federation.model import SourceRef, ValidationError
from federation.registry import Forbidden, Unauthorized
from federation.trust.identity import Identity, Role


class Access(Enum):
    OPEN = "open"  # no credential: probes, CA, join (the token is the credential)
    ANY = "any"  # any valid federation identity
    MEMBER = "member"  # a cluster or VM agent
    ADMIN = "admin"
    OWNER = "owner"  # the source named in the path, or an admin


def peer_identity(request: web.Request, trust_domain: str, clock: Clock) -> Identity | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    uris = [str(entry[1]) for entry in cert.get("subjectAltName", ()) if entry[0] == "URI"]
    if len(uris) != 1:
        raise Unauthorized("the client certificate must carry exactly one SPIFFE id")
    not_after = dt.datetime.strptime(str(cert["notAfter"]), "%b %d %H:%M:%S %Y %Z")
    if not_after.replace(tzinfo=dt.UTC).timestamp() <= clock.now():
        raise Unauthorized("the client certificate has expired; join again")
    try:
        return Identity.from_spiffe_id(uris[0], trust_domain)
    except ValidationError as err:
        raise Unauthorized(str(err)) from None


def authorize(access: Access, identity: Identity | None, source: SourceRef | None) -> None:
    """Raise unless ``identity`` may call a route of ``access``."""
    if access is Access.OPEN:
        return
    if identity is None:
        raise Unauthorized("a client certificate is required")
    if access is Access.ANY or identity.role is Role.ADMIN:
        return
    if access is Access.ADMIN:
        raise Forbidden(f"{identity} is not an admin")
    if access is Access.MEMBER:
        return
    if source is None or identity.source != source:
        raise Forbidden(f"{identity} may not write records of {source}")
