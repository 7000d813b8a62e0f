"""``fedctl demo`` end to end: three simulated clusters, real echo processes,
a client in east1; traffic moves east1 -> east2 -> west and fails back."""

from __future__ import annotations

import io
from pathlib import Path

from federation.sim.demo import run_demo


async def test_the_demo_fails_over_by_locality_and_fails_back(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_demo(out, base=tmp_path) == 0
    text = out.getvalue()
    assert "SIMULATED" in text and "The clusters were simulated." in text
    phases = text.split("== ")[1:]
    assert len(phases) == 4
    for phase in phases:
        assert "did not settle" not in phase, phase
    assert "east2" in phases[1] and "west" in phases[2] and "east1" in phases[3]
