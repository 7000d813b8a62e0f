"""federation/shared/logs.py: one set of field names, two formats, and
every long-running command takes --log-format and --log-level."""

from __future__ import annotations

import json
import logging

import pytest

from federation.cli import build_parser
from federation.shared import logs


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "agents.cluster.writer", logging.WARNING, "x", 1, "refused %s", ("svc",), None
    )
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_json_lines_carry_the_fields_by_their_one_name() -> None:
    record = _record(**logs.fields(cluster="east", namespace="shop", service="cart", revision=7))
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "refused svc"
    assert line["level"] == "warning" and line["logger"] == "agents.cluster.writer"
    assert {k: line[k] for k in logs.FIELDS if k in line} == {
        "cluster": "east", "namespace": "shop", "service": "cart", "revision": 7,
    }  # fmt: skip
    assert line["time"].endswith("Z")


def test_text_lines_append_the_fields_and_leave_out_the_missing() -> None:
    text = logs.TextFormatter().format(_record(**logs.fields(spiffe_id="spiffe://td/x")))
    assert text.endswith("agents.cluster.writer: refused svc spiffe_id=spiffe://td/x")
    assert "cluster=" not in text


@pytest.mark.parametrize(
    "argv",
    [
        ["registry", "serve", "--data-dir", "/tmp/x"],
        ["agent", "cluster", "--registry", "https://127.0.0.1:1"],
        ["agent", "vm", "--registry", "https://127.0.0.1:1", "--state-dir", "/tmp/x"],
        ["sim", "cluster", "east", "--kubeconfig", "/tmp/k"],
        ["demo"],
    ],
)
def test_every_long_running_command_takes_the_log_flags(argv: list[str]) -> None:
    args = build_parser().parse_args([*argv, "--log-format", "json", "--log-level", "debug"])
    assert (args.log_format, args.log_level) == ("json", "debug")


def test_configure_writes_json_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        logs.configure("info", "json")
        logging.getLogger("federation.api").info("up", extra=logs.fields(revision=3))
        logging.getLogger("federation.api").debug("not shown")
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
        assert [(x["message"], x["revision"]) for x in lines] == [("up", 3)]
    finally:
        root.handlers[:], _ = before[0], root.setLevel(before[1])
