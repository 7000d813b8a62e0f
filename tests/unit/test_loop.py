"""The long-running commands' event loop: uvloop's unless asked otherwise."""

from __future__ import annotations

import asyncio

import pytest

from federation.shared.loop import LOOP_ENV, UnknownLoop, run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_commands_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert run(_loop_module()).startswith("uvloop")


def test_asyncio_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert run(_loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "trio")
    with pytest.raises(UnknownLoop, match="FEDERATION_EVENT_LOOP='trio'"):
        run(_loop_module())
