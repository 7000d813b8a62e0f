"""Field checks and typed access to JSON objects, with errors naming paths.

Every check takes the path of the field it checks, so an error says where
the input was wrong (``endpoints[3].ports[0].port``), not just what.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from enum import Enum
from typing import TypeVar

import orjson

_E = TypeVar("_E", bound=Enum)
_R = TypeVar("_R")
MEMO_ENTRIES = 4096  # small records (localities, ports) remembered per kind

MAX_LABELS = 64

# Kubernetes' name grammars; use with ``fullmatch`` (``$`` would let a
# trailing newline through).
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ValidationError(ValueError):
    """A record or its wire form is invalid; ``path`` names the bad field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message

    def within(self, prefix: str) -> ValidationError:
        """The same error seen from an enclosing record."""
        kind = type(self)  # an Inconsistent error stays one
        if not self.path:
            return kind(prefix, self.message)
        joiner = "" if self.path.startswith("[") else "."
        return kind(f"{prefix}{joiner}{self.path}", self.message)


class Inconsistent(ValidationError):
    """Every field is valid on its own, the record as a whole is not (two
    ports of one name; a record that contradicts its path or its
    publisher).  The API answers 422 for these, 400 for what its document
    already forbids."""


# -- field checks -------------------------------------------------------------


def _matching(path: str, value: object, grammar: re.Pattern[str], what: str) -> str:
    text = require_str(path, value)
    if len(text) > 63 or not grammar.fullmatch(text):
        raise ValidationError(path, f"{text!r} is not {what}")
    return text


def check_dns_label(path: str, value: object) -> str:
    """A DNS-1123 label: namespaces, cluster and workload names."""
    return _matching(path, value, DNS1123_LABEL, "a DNS-1123 label (lower case a-z0-9 and -)")


def check_service_name(path: str, value: object) -> str:
    """A Service name: a DNS-1035 label (starts with a letter)."""
    return _matching(path, value, DNS1035_LABEL, "a DNS-1035 label (a-z first, then a-z0-9-)")


def check_label_value(path: str, value: object) -> str:
    """A Kubernetes label value (may be empty): regions, zones, networks."""
    return _matching(path, value, LABEL_VALUE, "a valid label value")


def check_label_key(path: str, value: object) -> str:
    """A Kubernetes label key: optional DNS subdomain prefix, then a name."""
    text = require_str(path, value)
    prefix, _, name = text.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise ValidationError(path, f"label key prefix {prefix!r} is not a DNS subdomain")
    if len(name) > 63 or not LABEL_NAME.fullmatch(name):
        raise ValidationError(path, f"label key {text!r} is not valid")
    return text


def check_ip(path: str, value: object) -> str:
    """An IPv4 or IPv6 address, returned in canonical form."""
    text = require_str(path, value)
    canonical = _canonical_ip(text)
    if canonical is None:
        raise ValidationError(path, f"{text!r} is not an IP address")
    return canonical


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


def _canonical_ip(text: str) -> str | None:
    """A dotted quad without leading zeros is its own canonical form: one
    regular expression, where parsing would be most of a large set's
    validation."""
    if CANONICAL_IPV4.fullmatch(text):
        return text
    return _parsed_ip(text)


@functools.lru_cache(maxsize=65536)
def _parsed_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def memo_wire(cache: dict[bytes, _R], data: object, build: Callable[[object], _R]) -> _R:
    """``build(data)`` for a small record of scalar fields, remembered by
    its JSON encoding (one C call: ``80.0`` and ``true`` never encode as
    ``80`` and ``1``, and key order is part of the key, so a different
    input is a miss, never a wrong hit; NaN and infinities encode as
    ``null`` but never build a record).  Records are frozen, so one object
    may serve every endpoint that has the same locality or port."""
    if not isinstance(data, dict) or len(cache) > MEMO_ENTRIES:
        if isinstance(data, dict):
            cache.clear()
        return build(data)
    try:
        key = orjson.dumps(data)
    except TypeError:  # not JSON (a Python caller's own value): validate as is
        return build(data)
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = build(data)
    return hit


def check_int(path: str, value: object, low: int, high: int) -> int:
    """An integer in ``low..high``.  ``80.0`` is the integer 80, as JSON
    Schema's ``integer`` (and so the API document) has it; ``80.5`` and
    ``true`` are not integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValidationError(path, f"{value} is outside {low}..{high}")
    return value


def check_number(path: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(path, f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not low <= number <= high:
        raise ValidationError(path, f"{value} is outside {low}..{high}")
    return number


def check_bool(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(path, f"expected true or false, got {type(value).__name__}")
    return value


def check_labels(path: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError(path, "expected an object of label key to value")
    if len(value) > MAX_LABELS:
        raise ValidationError(path, f"{len(value)} labels, at most {MAX_LABELS}")
    return {
        check_label_key(f"{path}[{k!r}]", k): check_label_value(f"{path}[{k!r}]", v)
        for k, v in value.items()
    }


def require_str(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(path, f"expected a string, got {type(value).__name__}")
    return value


def check_enum(path: str, kind: type[_E], value: object) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise ValidationError(path, f"{value!r} is not one of {allowed}") from None


# -- wire access ---------------------------------------------------------------


class Fields:
    """Typed access to a JSON object, with errors that name the field."""

    def __init__(self, data: object, known: frozenset[str]) -> None:
        if not isinstance(data, Mapping):
            raise ValidationError("", f"expected an object, got {type(data).__name__}")
        if not known.issuperset(data):
            unknown = sorted(str(k) for k in data if k not in known)
            raise ValidationError(unknown[0], "unknown field")
        self._data = data

    def get(self, name: str, default: object = ...) -> object:
        if name in self._data:
            return self._data[name]
        if default is ...:
            raise ValidationError(name, "required field is missing")
        return default

    def nested(self, name: str, build: Callable[[object], _R], default: object = ...) -> _R:
        raw = self.get(name, default)
        try:
            return build(raw)
        except ValidationError as err:
            raise err.within(name) from None

    def items(self, name: str, build: Callable[[object], _R], limit: int) -> tuple[_R, ...]:
        raw = self.get(name, [])
        if not isinstance(raw, list):
            raise ValidationError(name, "expected a list")
        if len(raw) > limit:
            raise ValidationError(name, f"{len(raw)} items, at most {limit}")
        out = []
        for index, item in enumerate(raw):
            try:
                out.append(build(item))
            except ValidationError as err:
                raise err.within(f"{name}[{index}]") from None
        return tuple(out)
