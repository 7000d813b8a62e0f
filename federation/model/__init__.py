"""Typed records of the federation: ``records`` the endpoints' records,
``members`` the members' (clusters, VM workloads), ``policy`` the traffic
policies, ``codec`` their stored form, ``validation`` the field checks.
Import from here."""

from federation.model.codec import *  # noqa: F403
from federation.model.codec import __all__ as _codec_all
from federation.model.members import *  # noqa: F403
from federation.model.members import __all__ as _members_all
from federation.model.policy import *  # noqa: F403
from federation.model.policy import __all__ as _policy_all
from federation.model.records import *  # noqa: F403
from federation.model.records import __all__ as _records_all
from federation.model.validation import ValidationError

__all__ = [*_records_all, *_members_all, *_policy_all, *_codec_all, "ValidationError"]
