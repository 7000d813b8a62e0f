"""The API document is exactly as strict as the validators: every string
its patterns allow, the validator takes, and every string the validator
takes (of those hypothesis finds), the pattern allows; its bounds are the
model's constants."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.api import openapi
from federation.model import MAX_ENDPOINTS_PER_SET, MAX_WEIGHT, ValidationError
from federation.model.records import SourceRef
from federation.model.validation import (
    check_dns_label,
    check_label_key,
    check_label_value,
    check_service_name,
)


def accepts(check: Callable[[str, object], object], text: str) -> bool:
    try:
        check("x", text)
    except ValidationError:
        return False
    return True


def source_ok(_: str, text: object) -> object:
    return SourceRef.parse(str(text))


CASES = [
    (openapi._DNS_LABEL, check_dns_label),
    (openapi._DNS_1035, check_service_name),
    (openapi._LABEL_TEXT, check_label_value),
    (openapi._SOURCE_TEXT, source_ok),
]
TEXT = st.text(alphabet="abcxyz09-._/:AZ", max_size=70)


@pytest.mark.parametrize(("regex", "check"), CASES)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_what_the_pattern_allows_the_validator_takes(
    regex: str, check: Callable[[str, object], object], data: st.DataObject
) -> None:
    text = data.draw(st.from_regex(f"^{regex}$", fullmatch=True))
    assert accepts(check, text), text


@pytest.mark.parametrize(("regex", "check"), CASES)
@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_what_the_validator_takes_the_pattern_allows(
    regex: str, check: Callable[[str, object], object], text: str
) -> None:
    assert accepts(check, text) == bool(re.fullmatch(regex, text)), text


@settings(max_examples=200, deadline=None)
@given(text=st.from_regex(f"^{openapi._LABEL_KEY}$", fullmatch=True))
def test_label_keys_the_pattern_allows_are_label_keys(text: str) -> None:
    assert accepts(check_label_key, text), text


def test_bounds_are_the_models() -> None:
    endpoint_set = openapi.SCHEMAS["EndpointSet"]["properties"]
    assert endpoint_set["endpoints"]["maxItems"] == MAX_ENDPOINTS_PER_SET
    weight = openapi.SCHEMAS["Endpoint"]["properties"]["weight"]
    assert weight["maximum"] == MAX_WEIGHT
    for name, schema in openapi.SCHEMAS.items():
        if schema.get("type") == "object" and name != "Error":
            assert schema.get("additionalProperties") is False, name  # unknown fields are 400
