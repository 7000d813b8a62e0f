"""sim/kube/tables.py: ages as apimachinery's HumanDuration writes them,
and which Accept headers ask for a Table."""

from __future__ import annotations

import pytest

from federation.sim.kube.tables import human_duration, wants_table


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 60, "3h1m"),
     (9 * 3600, "9h"), (50 * 3600, "2d2h"), (30 * 86400, "30d"), (3 * 365 * 86400, "3y"),
     (9 * 365 * 86400, "9y")],
)  # fmt: skip
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_what_kubectl_sends_asks_for_a_table_and_plain_json_does_not() -> None:
    kubectl = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    assert wants_table(kubectl)
    assert not wants_table("application/json")
    assert not wants_table("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")
    assert not wants_table("")
