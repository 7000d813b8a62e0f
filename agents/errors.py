"""What the registry client raises.  Callers choose by kind, never by an
HTTP status:

- ``Unavailable``: no answer in time, a 5xx, a broken or unreadable
  stream.  Retry.
- ``Rejected``: the registry answered 4xx; ``status`` and ``reason`` are
  the server's, the message is its message.  The request itself is wrong.
- ``Unauthorized``: a certificate problem, named in ``reason`` (an
  untrusted or retired root, an expired or unaccepted client certificate,
  another host's name, a pin that does not match); ``Revoked`` is the
  member removed from the federation.
- ``Gone``: a watch or continue point the registry has compacted (410).
- ``BadURL``: a registry URL that cannot be right, found before asking.

Each is raised ``from`` its cause where there is one.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Anything the registry client raises."""

    status = 0  # the HTTP status the registry answered, 0 when it did not


class Unavailable(RegistryError):
    """No usable answer: retry, with backoff."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class UnreadableStream(Unavailable):
    """A watch or snapshot line the client cannot read (too long, not JSON)."""


class Rejected(RegistryError):
    """The registry refused the request (4xx), with its reason."""

    def __init__(
        self, status: int, message: str, *, reason: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.field = field


class Unauthorized(RegistryError):
    """The registry does not accept this client's certificate, or this
    client does not trust the registry's: ``reason`` says which."""

    UNTRUSTED_REGISTRY = "untrusted-registry"  # its root is not in our bundle (rotated?)
    WRONG_NAME = "wrong-name"  # its certificate names another host
    EXPIRED = "expired"  # our certificate expired
    NOT_ACCEPTED = "not-accepted"  # our certificate's root is unknown to it, or retired
    PIN_MISMATCH = "pin-mismatch"  # its roots are not the join token's
    REFUSED = "refused"  # it answered 401 (no credential, a bad token)
    NO_CREDENTIAL = "no-credential"  # this client holds no usable credential of its kind
    REVOKED = "revoked"  # the member was removed

    def __init__(self, message: str, reason: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class Revoked(Unauthorized):
    """This member was removed from the federation: its credential is refused
    on every replica until it is registered and joins again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Unauthorized.REVOKED)


class Gone(RegistryError):
    """What was asked for is compacted away (410): take a new snapshot."""

    status = 410


class BadURL(RegistryError):
    """A registry URL that cannot be right: no scheme, plain http, no host."""


REVOKED_RETRY = 30.0  # how often a removed member asks again (it may be re-added)


def why(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0]


__all__ = [
    "REVOKED_RETRY",
    "BadURL",
    "Gone",
    "RegistryError",
    "Rejected",
    "Revoked",
    "Unauthorized",
    "Unavailable",
    "UnreadableStream",
    "why",
]
