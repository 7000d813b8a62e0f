"""The collector's view of a long-running process's heap.

A server's startup objects (modules, functions, classes, the app's routes:
some 125,000 of the 150,000 objects the collector tracks in a registry
serving 255 clusters) never become garbage, yet every full collection
walked them all: 40-55 ms with the event loop stopped, several times a
churn benchmark's 20 s, and so most of its p99 (docs/performance.md, run
K).  ``freeze_startup`` moves what exists once the process has started
into the permanent generation, so a full collection walks only what was
made since (decision 51)."""

from __future__ import annotations

import gc

__all__ = ["freeze_startup"]


def freeze_startup() -> int:
    """Collect once, then freeze every surviving object; returns how many
    were frozen.  Call once, after start-up, before serving load."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
