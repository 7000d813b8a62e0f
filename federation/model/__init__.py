"""Typed records of the federation: ``records`` holds them, ``validation``
holds the field checks.  Import from here."""

from federation.model.records import *  # noqa: F403
from federation.model.records import __all__ as _records_all
from federation.model.validation import ValidationError

__all__ = [*_records_all, "ValidationError"]
