"""``fedctl demo`` end to end: three simulated clusters, real echo processes,
a client in east1 and one on a VM in us-west; east1's traffic moves east1 ->
east2 -> west and fails back, the VM's moves west -> east1."""

from __future__ import annotations

import io
from pathlib import Path

from federation.sim.demo import run_demo


async def test_the_demo_fails_over_by_locality_and_fails_back(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_demo(out, base=tmp_path) == 0
    text = out.getvalue()
    assert "SIMULATED" in text and "The clusters were simulated." in text
    phases = [p.splitlines() for p in text.split("== ")[1:]]
    assert len(phases) == 5
    for phase in phases:
        assert not any("not settled" in line for line in phase), phase
    expected = [
        ("east1", "west"),
        ("east2", "west"),
        ("west", "west"),
        ("east1", "west"),
        ("east1", "east1"),
    ]
    for phase, (east1, vm) in zip(phases, expected, strict=True):
        rows = {line.split()[0]: line.split()[1] for line in phase[2:4]}
        assert rows == {"east1": east1, "vm1": vm}, phase
