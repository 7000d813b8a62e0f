"""The registry's errors, each with the HTTP status the API answers."""

from __future__ import annotations


class RegistryError(Exception):
    status = 400


class Invalid(RegistryError):
    status = 400


class Unauthorized(RegistryError):
    status = 401


class Revoked(Unauthorized):
    """The caller's credential is good but its member was removed."""

    reason = "Revoked"


class Forbidden(RegistryError):
    status = 403


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class TooLarge(RegistryError):
    status = 413


class Unprocessable(RegistryError):
    """Well formed, as the API document describes it, but not what it must
    be: a CSR or certificate that does not parse, or asks for what it may
    not.  400 is kept for what the document itself forbids."""

    status = 422


class MissingEncryptionKey(RegistryError):
    """The CA key must be encrypted or decrypted and no key was given."""


__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "MissingEncryptionKey",
    "NotFound",
    "RegistryError",
    "Revoked",
    "TooLarge",
    "Unauthorized",
    "Unprocessable",
]
