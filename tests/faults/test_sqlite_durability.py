"""Every acknowledged SQLite write survives a SIGKILL of the writer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from federation.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


def run_writer_until_killed(path: Path, acknowledged_before_kill: int) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.sqlite_writer", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acknowledged = []
    try:
        for line in child.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) >= acknowledged_before_kill:
                break
        child.send_signal(signal.SIGKILL)  # mid-stream: it is still writing
        rest, errors = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, errors
    # Lines it printed after our read loop stopped were acknowledged too.
    acknowledged.extend(line.strip() for line in rest.splitlines() if line.strip())
    return acknowledged


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    acknowledged = run_writer_until_killed(path, acknowledged_before_kill=2000)
    assert len(acknowledged) >= 2000

    store = SqliteStore(path)
    await store.start()
    try:
        held = {kv.key for kv in (await store.range("/durability/")).kvs}
        missing = [key for key in acknowledged if key not in held]
        assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:3]}"
        # The reopened store keeps counting revisions from where it stopped.
        before = (await store.range("/durability/")).revision
        assert await store.put("/durability/after", b"x") == before + 1
    finally:
        await store.close()
