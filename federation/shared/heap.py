"""The collector's view of a long-running process's heap.

A server's startup objects (modules, functions, classes, the app's routes:
some 125,000 of the 150,000 objects the collector tracks in a registry
serving 255 clusters) never become garbage, yet every full collection
walked them all: 40-55 ms with the event loop stopped, several times a
churn benchmark's 20 s, and so most of its p99 (docs/performance.md, run
K).  ``freeze_startup`` moves what exists once the process has started
into the permanent generation, so a full collection walks only what was
made since (decision 51).

What is made since still costs: a registry under churn keeps 65-90k live
objects of its own (per shard, per connection, the hub's entries), and
with CPython's default thresholds (700, 10, 10) a full collection of them
ran about once a second at 33-40 ms of CPU each, 8-10% of the loop with
the young collections.  ``freeze_startup`` also sets the youngest
threshold to YOUNG_THRESHOLD allocations: 14x fewer young collections, and
so fewer full ones, for a few thousand more objects waiting to be
collected (decision 54)."""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "freeze_startup"]

YOUNG_THRESHOLD = 10_000


def freeze_startup() -> int:
    """Collect once, then freeze every surviving object; returns how many
    were frozen.  Call once, after start-up, before serving load."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()
