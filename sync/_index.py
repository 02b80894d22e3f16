"""The core's copy of the local store's shape: heads, checkpoints, rank per batch.

Kept per core and fed by :class:`~meshdesk.sync.LocalLog` and
:class:`~meshdesk.sync.LocalAdded`, so the core never reads the store itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from meshdesk.store.records import Checkpoint
from meshdesk.sync.messages import LocalLog, LocalRun

__all__ = ["LocalIndex"]


class _Author:
    __slots__ = ("checkpoints", "head", "seqs", "top")

    def __init__(self) -> None:
        self.head: tuple[int, bytes] = (0, b"")
        self.seqs: list[int] = []
        self.checkpoints: list[Checkpoint] = []
        #: rank -> seq of the last batch of that rank
        self.top: dict[int, int] = {}


class LocalIndex:
    """Per author: stored head, checkpoints (ascending) and their rank."""

    __slots__ = ("_authors", "_grown", "version")

    def __init__(self, log: LocalLog) -> None:
        #: Moves whenever a batch is added (lets the inbound side cache what it derives).
        self.version = 0
        self._authors: dict[str, _Author] = {}
        #: Authors with batches added since :meth:`take_grown` last ran.
        self._grown: set[str] = set()
        for author, (seq, digest) in log.heads.items():
            self._entry(author).head = (seq, digest)
        for runs in log.runs.values():
            self.add(runs)

    def _entry(self, author: str) -> _Author:
        entry = self._authors.get(author)
        if entry is None:
            entry = self._authors[author] = _Author()
        return entry

    def add(self, runs: Iterable[LocalRun]) -> dict[str, tuple[int, bytes]]:
        """Take in newly stored batches; returns the heads that moved."""
        moved: dict[str, tuple[int, bytes]] = {}
        self.version += 1
        for run in runs:
            ck = run.checkpoint
            entry = self._entry(ck.author)
            if entry.seqs and ck.seq <= entry.seqs[-1]:
                continue  # known already
            entry.seqs.append(ck.seq)
            self._grown.add(ck.author)
            entry.checkpoints.append(ck)
            entry.top[run.rank] = ck.seq
            if ck.seq > entry.head[0]:
                entry.head = moved[ck.author] = (ck.seq, ck.hash)
        return moved

    def authors(self) -> Iterator[str]:
        return iter(self._authors)

    def take_grown(self) -> set[str]:
        """Authors given new batches since the last call (for the core's one sender)."""
        grown, self._grown = self._grown, set()
        return grown

    def last_seq(self, author: str) -> int:
        """Seq of ``author``'s last batch we hold (0: none)."""
        entry = self._authors.get(author)
        return entry.seqs[-1] if entry is not None and entry.seqs else 0

    def rank_past(self, author: str, after: int) -> int:
        """:meth:`rank_after` for an author known to have batches past ``after``."""
        return min(r for r, seq in self._authors[author].top.items() if seq > after)

    def heads(self) -> dict[str, tuple[int, bytes]]:
        return {a: e.head for a, e in self._authors.items() if e.head[0] > 0}

    def head_seq(self, author: str) -> int:
        """Seq of our head of ``author`` (0: none)."""
        entry = self._authors.get(author)
        return entry.head[0] if entry is not None else 0

    def head(self, author: str) -> tuple[int, bytes]:
        entry = self._authors.get(author)
        return entry.head if entry is not None else (0, b"")

    def hash_at(self, author: str, seq: int) -> bytes | None:
        """Our hash at ``seq`` if we know it (a checkpoint or the head), else None."""
        entry = self._authors.get(author)
        if entry is None:
            return None
        if entry.head[0] == seq:
            return entry.head[1]
        i = bisect.bisect_left(entry.seqs, seq)
        if i < len(entry.seqs) and entry.seqs[i] == seq:
            return entry.checkpoints[i].hash
        return None

    def rank_after(self, author: str, after: int) -> int | None:
        """Priority of sending ``author`` past ``after``: the best rank among the
        batches still to go (a batch pulls its whole prefix along); None if nothing."""
        entry = self._authors.get(author)
        if entry is None or not entry.seqs or entry.seqs[-1] <= after:
            return None
        return min(r for r, seq in entry.top.items() if seq > after)

    def plan(self, author: str, after: int, rank: int, limit: int) -> Checkpoint:
        """Checkpoint to load up to from ``after``: not past the last batch of
        ``rank``, at most ``limit`` events unless a single batch is longer."""
        entry = self._authors[author]
        target = entry.top[rank]
        cap = min(target, after + limit)
        i = bisect.bisect_right(entry.seqs, cap) - 1
        if i < 0 or entry.seqs[i] <= after:
            i = bisect.bisect_right(entry.seqs, after)  # one batch, however long
        return entry.checkpoints[i]

    def checkpoints_between(self, author: str, after: int, upto: int) -> list[Checkpoint]:
        """Checkpoints with ``after < seq <= upto``, ascending."""
        entry = self._authors.get(author)
        if entry is None:
            return []
        lo = bisect.bisect_right(entry.seqs, after)
        hi = bisect.bisect_right(entry.seqs, upto)
        return entry.checkpoints[lo:hi]
