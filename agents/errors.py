"""What the registry client raises: ``RegistryError`` (with the HTTP status,
0 when there was no answer) and its kinds."""

from __future__ import annotations


class RegistryError(Exception):
    """The registry refused a request (4xx), or could not be reached in time."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Revoked(RegistryError):
    """This member was removed from the federation: its credential is refused
    on every replica until it is registered and joins again."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message)


REVOKED_RETRY = 30.0  # how often a removed member asks again (it may be re-added)


class UnreadableStream(RegistryError):
    """A watch or snapshot line the client cannot read (too long, not JSON)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class BadURL(RegistryError):
    """A registry URL that cannot be right: no scheme, plain http, no host."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


def why(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0]


__all__ = ["REVOKED_RETRY", "BadURL", "RegistryError", "Revoked", "UnreadableStream", "why"]
