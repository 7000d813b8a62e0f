"""API errors as a real apiserver returns them: a ``Status`` object body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from federation.sim.kube.objects import ResourceType


class KubeError(Exception):
    """An API error with its HTTP code, reason and Status details."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    @staticmethod
    def _details(rt: ResourceType, name: str) -> dict[str, Any]:
        return {"name": name, "group": rt.group, "kind": rt.plural}

    @classmethod
    def not_found(cls, rt: ResourceType, name: str) -> KubeError:
        what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return cls(404, "NotFound", f'{what} "{name}" not found', cls._details(rt, name))

    @classmethod
    def already_exists(cls, rt: ResourceType, name: str) -> KubeError:
        what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return cls(409, "AlreadyExists", f'{what} "{name}" already exists', cls._details(rt, name))

    @classmethod
    def conflict(cls, rt: ResourceType, name: str) -> KubeError:
        what = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            cls._details(rt, name),
        )

    @classmethod
    def invalid(cls, rt: ResourceType, name: str, path: str, message: str) -> KubeError:
        details = cls._details(rt, name) | {
            "kind": rt.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": path}],
        }
        return cls(422, "Invalid", f'{rt.kind} "{name}" is invalid: {path}: {message}', details)

    @classmethod
    def gone(cls, revision: int) -> KubeError:
        return cls(410, "Expired", f"too old resource version: {revision}")

    @classmethod
    def bad_request(cls, message: str) -> KubeError:
        return cls(400, "BadRequest", message)

    @classmethod
    def unauthorized(cls) -> KubeError:
        return cls(401, "Unauthorized", "Unauthorized")

    @classmethod
    def unavailable(cls, message: str) -> KubeError:
        return cls(503, "ServiceUnavailable", message)
