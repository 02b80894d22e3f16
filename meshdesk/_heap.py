"""The garbage collector of a long-running node process.

CPython's cycle collector runs a young pass every 700 new container objects and, now
and then, a full pass over every tracked object. A node that is catching up decodes,
verifies and stores tens of thousands of events a second, each several short-lived
objects: with the defaults the collector took about a tenth of a cold sync, most of
it full passes over what start-up made (modules, configuration, the node's parts),
none of which ever becomes garbage.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["YOUNG_THRESHOLD", "settled_heap"]

#: New container objects between two young passes (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """While a node runs: collect, move every surviving object out of the collector's
    reach (``gc.freeze``), and let young passes come less often; all undone after.

    For a process that runs one node (``meshdesk run``, a bench's measured node):
    what is frozen is not collected until the block ends.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
