"""Structured logs: the field names every component uses, defined once,
and the two formats a long-running command writes (``--log-format``).

A log call names its subject with ``extra=fields(...)``::

    log.warning("the apiserver refused %s", what, extra=fields(cluster=c, service=s))

``text`` appends the fields as ``key=value`` after the message; ``json``
writes one object per line with ``time``, ``level``, ``logger``,
``message``, the fields, and ``error`` (the traceback) when there is one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Final

CLUSTER: Final = "cluster"
NAMESPACE: Final = "namespace"
SERVICE: Final = "service"
REVISION: Final = "revision"
SPIFFE_ID: Final = "spiffe_id"
FIELDS: Final = (CLUSTER, NAMESPACE, SERVICE, REVISION, SPIFFE_ID)

FORMATS: Final = ("text", "json")
LEVELS: Final = ("debug", "info", "warning", "error")


def fields(
    *,
    cluster: str | None = None,
    namespace: str | None = None,
    service: str | None = None,
    revision: int | None = None,
    spiffe_id: str | None = None,
) -> dict[str, Any]:
    """The ``extra`` of a log call: only the fields given."""
    given = {
        CLUSTER: cluster,
        NAMESPACE: namespace,
        SERVICE: service,
        REVISION: revision,
        SPIFFE_ID: spiffe_id,
    }
    return {name: value for name, value in given.items() if value is not None}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields_of(record)
        if not extra:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below
        pairs = " ".join(f"{name}={value}" for name, value in extra.items())
        return f"{first} {pairs}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields_of(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str = "info", form: str = "text") -> None:
    """Send every log line to stderr at ``level`` and above, in ``form``."""
    if form not in FORMATS:
        raise ValueError(f"log format {form!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


__all__ = [
    "CLUSTER",
    "FIELDS",
    "FORMATS",
    "LEVELS",
    "NAMESPACE",
    "REVISION",
    "SERVICE",
    "SPIFFE_ID",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "fields",
]
