"""What a VM agent keeps in its state dir to start while the registry is
unreachable: its own record (``record.json``) and the last authoritative
view it routed from (``view.json``: every imported service's sets and the
policies).  Both are written only when they changed, atomically, and the
view only up to ``MAX_VIEW_BYTES`` (a VM's imports are small; past that
it starts empty, as before)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from agents.view import View
from federation.model import EndpointSet, TrafficPolicy, ValidationError, Workload

log = logging.getLogger(__name__)

MAX_VIEW_BYTES = 4 * 1024 * 1024


def _write(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def save_record(state_dir: Path, record: Workload) -> None:
    _write(state_dir / "record.json", json.dumps(record.to_wire(), sort_keys=True).encode())


def load_record(state_dir: Path) -> Workload | None:
    try:
        return Workload.from_wire(json.loads((state_dir / "record.json").read_text()))
    except (OSError, ValueError, ValidationError):
        return None


def save_view(state_dir: Path, view: View) -> None:
    """The view's sets and policies, once a snapshot made it authoritative."""
    if not view.authoritative:
        return
    data: dict[str, Any] = {
        "revision": view.revision,
        "sets": [s.to_wire() for by_source in view.sets.values() for s in by_source.values()],
        "policies": [p.to_wire() for p in view.policies.values()],
    }
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_VIEW_BYTES:
        log.info("the view is %d bytes, over %d: not saved", len(raw), MAX_VIEW_BYTES)
        return
    _write(state_dir / "view.json", raw)


def seed_view(state_dir: Path, view: View) -> bool:
    """Seed ``view`` from the saved one (not authoritative: a complete
    snapshot replaces it); whether there was one."""
    try:
        data = json.loads((state_dir / "view.json").read_text())
        sets = [EndpointSet.from_wire(s) for s in data.get("sets", [])]
        policies = [TrafficPolicy.from_wire(p) for p in data.get("policies", [])]
    except (OSError, ValueError, ValidationError, AttributeError) as err:
        if (state_dir / "view.json").exists():
            log.warning("cannot read the saved view in %s: %s", state_dir / "view.json", err)
        return False
    for endpoint_set in sets:
        view.seed(endpoint_set)
    for policy in policies:
        view.policies[policy.service] = policy
    view.loaded = True
    return True


__all__ = ["load_record", "save_record", "save_view", "seed_view"]
