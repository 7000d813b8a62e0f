"""A long-running process freezes its start-up heap and collects its young
generation less often (decisions 51 and 54); checked in a child process,
since both change the whole interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from federation.shared.heap import YOUNG_THRESHOLD

CHILD = """
import gc, json
before = gc.get_threshold()
from federation.shared.heap import freeze_startup
frozen = freeze_startup()
print(json.dumps({"frozen": frozen, "count": gc.get_freeze_count(),
                  "before": before, "after": gc.get_threshold()}))
"""


def test_freeze_startup_freezes_the_heap_and_raises_the_young_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    got = json.loads(out)
    assert got["frozen"] == got["count"] > 1000
    assert got["after"] == [YOUNG_THRESHOLD, *got["before"][1:]]
    assert got["before"][0] < YOUNG_THRESHOLD
