"""The registry revision an agent has materialized, for convergence lag.

Every key a registry change dirtied waits with the revision of the first
change it has not written yet; a reconcile that succeeds clears what it
started with.  The materialized revision is one before the oldest change
still waiting, or the view's revision when none waits: every change at or
before it is in the cluster.  A key whose write keeps failing (a refused
object) holds the revision back, so lag shows it: that part of the
federation is not in this cluster."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Progress(Generic[K]):
    def __init__(self) -> None:
        self._waiting: dict[K, int] = {}  # key -> first change not written
        self._latest: dict[K, int] = {}  # key -> last change that dirtied it
        self._started: dict[K, int] = {}  # key -> view revision its reconcile began at

    def dirtied(self, key: K, revision: int) -> None:
        """A registry change at ``revision`` touched ``key``."""
        self._waiting.setdefault(key, revision)
        self._latest[key] = revision

    def started(self, key: K, revision: int) -> None:
        """A reconcile of ``key`` begins, with the view at ``revision``."""
        self._started[key] = revision

    def finished(self, key: K, succeeded: bool) -> None:
        began = self._started.pop(key, None)
        if not succeeded or began is None or key not in self._waiting:
            return
        if self._latest.get(key, 0) > began:
            self._waiting[key] = began + 1  # a later change came in meanwhile
        else:
            del self._waiting[key]
            self._latest.pop(key, None)

    def forget(self, key: K) -> None:
        """``key`` no longer exists for this agent (nothing to write)."""
        self._waiting.pop(key, None)
        self._latest.pop(key, None)
        self._started.pop(key, None)

    def applied(self, head: int) -> int:
        """Every change at or before this revision is materialized
        (``head``: the revision of the agent's view)."""
        if not self._waiting:
            return head
        return min(head, min(self._waiting.values()) - 1)


__all__ = ["Progress"]
