"""``benchmarks/scale.py --quick`` as a smoke test: the benchmark's own
machinery (joins, mTLS, publishes, watch streams, streamed relist) on both
backends, asserting only correctness: every delivery arrived and the relist
was complete.  Its timings are the benchmark's business, not a test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_quick_scale_run_delivers_everything_on_both_backends() -> None:
    done = subprocess.run(
        [sys.executable, "scale.py", "--quick"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["clusters"] == 20 and result["endpoints"] == 20 * 3 * 20
    for run in (result, result["etcd_backed"]):
        assert run["relist_complete"] is True
        assert run["delivered"] == 1.0
        assert run["skipped_updates"] == 0
    for field in ("p50_ms", "p99_ms", "etcd_p50_ms", "etcd_p99_ms", "updates_per_s", "rss_mib",
                  "relist_s", "bootstrap_s", "registry_cores"):  # fmt: skip
        assert isinstance(result[field], int | float), field
