"""Single-use join tokens.

A token reads ``fj1.<secret>.<pin>``: ``pin`` is the sha256 of the mesh root
certificate, so an agent holding only the token can check it is talking to
the right registry before it trusts it (kubeadm's discovery-token CA hash,
carried inside the token).  The registry keeps only the sha256 of the whole
token, and deletes it when it is used.
"""

from __future__ import annotations

import hashlib
import re
import secrets

_FORMAT = re.compile(r"fj1\.([A-Za-z0-9_-]{43})\.([0-9a-f]{64})")


class TokenError(ValueError):
    pass


def mint(pin: str) -> str:
    return f"fj1.{secrets.token_urlsafe(32)}.{pin}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pin_of(token: str) -> str:
    """The root fingerprint a well-formed token pins."""
    match = _FORMAT.fullmatch(token.strip())
    if match is None:
        raise TokenError("the join token is malformed (expected fj1.<secret>.<ca-sha256>)")
    return match.group(2)
