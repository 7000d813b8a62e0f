"""agents/progress.py: the materialized revision never claims an unwritten change."""

from __future__ import annotations

from agents.progress import Progress


def test_nothing_waiting_is_the_views_revision() -> None:
    assert Progress[str]().applied(42) == 42


def test_a_dirty_key_holds_the_revision_until_its_reconcile_succeeds() -> None:
    progress = Progress[str]()
    progress.dirtied("a", 10)
    progress.dirtied("b", 12)
    assert progress.applied(12) == 9
    progress.started("a", 12)
    progress.finished("a", succeeded=True)
    assert progress.applied(12) == 11  # b's change at 12 is not written
    progress.started("b", 12)
    progress.finished("b", succeeded=False)
    assert progress.applied(12) == 11  # a failure holds it back
    progress.started("b", 12)
    progress.finished("b", succeeded=True)
    assert progress.applied(12) == 12


def test_a_change_during_the_reconcile_keeps_the_key_waiting() -> None:
    progress = Progress[str]()
    progress.dirtied("a", 10)
    progress.started("a", 10)
    progress.dirtied("a", 15)  # arrives while the reconcile writes revision 10's state
    progress.finished("a", succeeded=True)
    assert progress.applied(15) == 10
    progress.started("a", 15)
    progress.finished("a", succeeded=True)
    assert progress.applied(15) == 15


def test_a_reconcile_not_begun_for_a_registry_change_clears_nothing() -> None:
    progress = Progress[str]()
    progress.finished("a", succeeded=True)  # a kube event's reconcile, never started here
    progress.dirtied("a", 7)
    progress.finished("a", succeeded=True)
    assert progress.applied(9) == 6
    progress.forget("a")
    assert progress.applied(9) == 9
