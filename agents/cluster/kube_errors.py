"""What the kube adapter raises: one kind per way the API server refuses
or fails, each with the Status's message and causes, raised ``from`` the
cause."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One cause of a refusal, as a Status's ``details.causes`` gives it."""

    field: str
    message: str
    reason: str = ""


class KubeError(Exception):
    """A call the API server refused or could not answer.  Callers choose by
    kind: ``NotFound``, ``Conflict``, ``Invalid`` (with the causes' field
    paths), ``Forbidden``, ``Gone``, ``Unavailable`` (retry); a base
    ``KubeError`` is any other refusal (400, 405, 413, 415).  ``status`` is
    the HTTP status, 0 when there was no answer."""

    status = 0

    def __init__(self, message: str, *, status: int = 0, causes: tuple[Cause, ...] = ()) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status or type(self).status
        self.causes = causes

    @staticmethod
    def of(status: int, message: str, causes: tuple[Cause, ...] = ()) -> KubeError:
        """The error of the kind ``status`` means."""
        kind = _KINDS.get(status)
        if kind is None:
            kind = Unavailable if status == 0 or status == 429 or status >= 500 else KubeError
        return kind(message, status=status, causes=causes)

    @property
    def fields(self) -> list[str]:
        """The field paths the causes name."""
        return [c.field for c in self.causes if c.field]


class BadConfig(KubeError):
    """The kubeconfig (or the in-cluster config) cannot be used."""


class NotFound(KubeError):
    status = 404


class Conflict(KubeError):
    """409: the object exists already, or changed since it was read."""

    status = 409


class Invalid(KubeError):
    """422: the object breaks validation; ``causes`` say which fields."""

    status = 422


class Forbidden(KubeError):
    """403 (or 401): this credential may not do it."""

    status = 403


class Gone(KubeError):
    """410: the resourceVersion asked for is compacted; relist."""

    status = 410


class Unavailable(KubeError):
    """No answer, a 5xx or a 429: retry with backoff."""


_KINDS: dict[int, type[KubeError]] = {
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def causes_of(status: dict[str, Any]) -> tuple[Cause, ...]:
    details = status.get("details") or {}
    return tuple(
        Cause(str(c.get("field", "")), str(c.get("message", "")), str(c.get("reason", "")))
        for c in details.get("causes") or ()
        if isinstance(c, dict)
    )


__all__ = [
    "BadConfig",
    "Cause",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeError",
    "NotFound",
    "Unavailable",
    "causes_of",
]
