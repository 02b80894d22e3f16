"""A running node's collector settings, and that they are undone afterwards."""

from __future__ import annotations

import gc

from meshdesk._heap import YOUNG_THRESHOLD, settled_heap


def test_the_heap_is_settled_while_the_block_runs_and_restored_after() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with settled_heap():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen  # start-up's objects, out of full passes
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
