"""Typed records of the federation: ``records`` holds them, ``policy`` the
traffic policies, ``codec`` their stored form, ``validation`` the field
checks.  Import from here."""

from federation.model.codec import *  # noqa: F403
from federation.model.codec import __all__ as _codec_all
from federation.model.policy import *  # noqa: F403
from federation.model.policy import __all__ as _policy_all
from federation.model.records import *  # noqa: F403
from federation.model.records import __all__ as _records_all
from federation.model.validation import ValidationError

__all__ = [*_records_all, *_policy_all, *_codec_all, "ValidationError"]
