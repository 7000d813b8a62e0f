"""The registry's errors, in the domain's words.  They carry no HTTP
status: the API maps each kind to one (``api.app.STATUS``).

The store's errors a caller of the registry may see are re-exported here
under the same names, so the API reaches storage only through the
registry: ``StoreError`` (``StoreUnavailable`` among them), ``Compacted``,
``ValueTooLarge``, ``InvalidKey``.
"""

from __future__ import annotations

from federation.store import Compacted, InvalidKey, StoreError, ValueTooLarge
from federation.store import Unavailable as StoreUnavailable


class RegistryError(Exception):
    """A request the registry will not do, as asked."""


class Invalid(RegistryError):
    """Breaks the API document (a field, a path, a parameter)."""


class Unauthorized(RegistryError):
    """No proven identity, or one this registry does not accept."""


class Revoked(Unauthorized):
    """The caller's credential is good but its member was removed."""

    reason = "Revoked"


class Forbidden(RegistryError):
    """A proven identity asking for what is not its own."""


class NotFound(RegistryError):
    pass


class Conflict(RegistryError):
    """The record's state forbids it now (a generation, a rotation phase)."""


class TooLarge(RegistryError):
    pass


class Unprocessable(RegistryError):
    """Well formed, as the API document describes it, but not what it must
    be: a CSR or certificate that does not parse, or asks for what it may
    not.  ``Invalid`` is kept for what the document itself forbids."""


class MissingEncryptionKey(RegistryError):
    """The CA key must be encrypted or decrypted and no key was given."""


__all__ = [
    "Compacted",
    "Conflict",
    "Forbidden",
    "Invalid",
    "InvalidKey",
    "MissingEncryptionKey",
    "NotFound",
    "RegistryError",
    "Revoked",
    "StoreError",
    "StoreUnavailable",
    "TooLarge",
    "Unauthorized",
    "Unprocessable",
    "ValueTooLarge",
]
