"""Receiving half of a sync link: reassemble the peer's stream into verified runs.

We own the *round* of what flows to us. Opening a round announces our heads and
grants credit; the peer streams events at offsets counted from the round's start,
and we process them strictly in offset order (holding early frames, dropping
duplicates and stale rounds). Events are cut into runs at the author's
checkpoints and handed to the driver to verify and store; the tail of a batch
waits for the frame carrying its checkpoint. Nothing half a batch ever reaches
the store, and a new round forgets everything not yet handed over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from meshdesk.store.records import Checkpoint
from meshdesk.sync._index import LocalIndex
from meshdesk.sync.messages import (
    Effect,
    ReportPeer,
    Run,
    Send,
    SyncConfig,
    VerifyAndStore,
)
from meshdesk.wire import (
    AuthorHead,
    CheckpointRef,
    SyncCredit,
    SyncEvents,
    SyncHeads,
    SyncReject,
    WireEvent,
)

__all__ = ["Inbound"]

Fact = tuple[str, int, bytes]


class _Pending(NamedTuple):
    round: int
    held: int  # stream events this run holds back from `settled`


class Inbound:
    """Receiver state for one link."""

    def __init__(self, index: LocalIndex, config: SyncConfig) -> None:
        self._index = index
        self._cfg = config
        self.round = 0
        self.next_offset = 0
        self._unsettled = 0
        self._granted = 0  # `settled` in the last credit we sent
        self._early: dict[int, SyncEvents] = {}
        self._early_events = 0
        #: Events of one author past its last checkpoint so far (a batch in transit).
        self._partial: tuple[str, list[WireEvent]] | None = None
        #: Tips of runs handed to the driver and not settled yet, beyond the index.
        self._tips: dict[str, tuple[int, bytes]] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self.refused: set[str] = set()
        #: Moves whenever ``_tips`` or ``refused`` change (see :meth:`expecting`).
        self._version = 0
        self._expect_key: tuple[int, int, int] | None = None
        self._expect_value = False
        #: Cumulative counters across rounds, for stall detection.
        self.received_total = 0
        self.settled_total = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def settled(self) -> int:
        """Events of this round we are done with; partial batches count as done
        (they are bounded by ``max_batch_events``, not by the window)."""
        return self.next_offset - self._unsettled

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def _known(self, author: str) -> tuple[int, bytes]:
        head = self._index.head(author)
        tip = self._tips.get(author)
        return tip if tip is not None and tip[0] > head[0] else head

    def expecting(self, peer_heads: Mapping[str, tuple[int, bytes]], version: int) -> bool:
        """Something of the peer's is still to come (or stuck in our buffers).

        ``version`` moves whenever ``peer_heads`` changes: with our index's and tips'
        versions it keys the answer (asked on every check of a link's idleness, it
        would otherwise walk every author each time).
        """
        if self._partial is not None or self._early:
            return True
        key = (version, self._index.version, self._version)
        if key == self._expect_key:
            return self._expect_value
        self._expect_key, self._expect_value = key, self._expecting(peer_heads)
        return self._expect_value

    def _expecting(self, peer_heads: Mapping[str, tuple[int, bytes]]) -> bool:
        head_seq, tips, refused = self._index.head_seq, self._tips, self.refused
        for author, (seq, _) in peer_heads.items():
            if seq > head_seq(author) and author not in refused:
                tip = tips.get(author)
                if tip is None or seq > tip[0]:
                    return True
        return False

    # -- rounds and credit ---------------------------------------------------------------

    def restart(self) -> list[Effect]:
        """Open a new round: drop what is in transit, announce heads, grant credit."""
        self.round += 1
        self.next_offset = self._unsettled = self._granted = 0
        self._early.clear()
        self._early_events = 0
        self._partial = None
        return self.announce()

    def announce(self) -> list[Effect]:
        """(Re)send the current round's heads and credit; changes nothing."""
        heads = [AuthorHead(a, seq, h) for a, (seq, h) in sorted(self._index.heads().items())]
        per = self._cfg.heads_per_frame
        parts = [heads[i : i + per] for i in range(0, len(heads), per)] or [[]]
        effects: list[Effect] = [
            Send(SyncHeads(self.round, i, len(parts), tuple(part))) for i, part in enumerate(parts)
        ]
        self._granted = self.settled
        effects.append(Send(SyncCredit(self.round, self._granted, self._cfg.window)))
        return effects

    def _credit(self) -> list[Effect]:
        settled = self.settled
        if settled <= self._granted:
            return []
        if self._unsettled and settled - self._granted < max(1, self._cfg.window // 4):
            return []
        self._granted = settled
        return [Send(SyncCredit(self.round, settled, self._cfg.window))]

    # -- the stream ----------------------------------------------------------------------

    def on_events(self, frame: SyncEvents) -> tuple[list[Effect], list[Fact]]:
        """Take one frame; returns effects and what it shows the peer holds."""
        if frame.round != self.round or frame.offset < self.next_offset:
            return [], []  # an earlier round, or a duplicate
        if frame.offset > self.next_offset:
            # Early: hold it if it fits the credit we gave (a sane sender stays within).
            n = len(frame.events)
            fits = frame.offset + n <= self.settled + self._cfg.window
            if (
                fits
                and frame.offset not in self._early
                and self._early_events + n <= self._cfg.window
            ):
                self._early[frame.offset] = frame
                self._early_events += n
            return [], []
        effects: list[Effect] = []
        facts: list[Fact] = []
        self._process(frame, effects, facts)
        while self.next_offset in self._early:
            early = self._early.pop(self.next_offset)
            self._early_events -= len(early.events)
            self._process(early, effects, facts)
        for offset in [o for o in self._early if o < self.next_offset]:
            self._early_events -= len(self._early.pop(offset).events)  # overlaps: insane peer
        return effects + self._credit(), facts

    def _process(self, frame: SyncEvents, effects: list[Effect], facts: list[Fact]) -> None:
        author, events = frame.author, frame.events
        self.next_offset += len(events)
        self.received_total += len(events)
        if author in self.refused:
            seq = events[-1].seq if events else 0
            effects.append(Send(SyncReject(author, seq, "author refused from this peer")))
            return
        problem = _malformed(events, frame.checkpoints)
        if problem is not None:
            self._refuse(author, events[-1].seq if events else 0, problem, effects, hostile=True)
            return
        partial = self._partial
        self._partial = None
        buffer = list(events)
        if partial is not None and partial[0] == author and partial[1][-1].seq + 1 == events[0].seq:
            buffer = partial[1] + buffer  # else the peer abandoned that batch
        from_frame = len(buffer) - len(events)  # buffer[from_frame:] came in this frame
        start = 0
        for ref in frame.checkpoints:
            end = ref.seq - buffer[0].seq + 1
            counted = end - max(start, from_frame)
            self._complete(author, buffer[start:end], ref, counted, effects)
            facts.append((author, ref.seq, ref.hash))
            start = end
        rest = buffer[start:]
        if len(rest) > self._cfg.max_batch_events:
            reason = f"batch longer than {self._cfg.max_batch_events} events"
            self._refuse(author, rest[-1].seq, reason, effects, hostile=True)
        elif rest:
            self._partial = (author, rest)

    def _complete(
        self,
        author: str,
        events: list[WireEvent],
        ref: CheckpointRef,
        counted: int,
        effects: list[Effect],
    ) -> None:
        """A run up to a checkpoint is whole: hand over the part we do not hold."""
        seq, _ = self._known(author)
        fresh = [e for e in events if e.seq > seq]
        if not fresh or fresh[0].seq != seq + 1:
            return  # all held already, or a gap (a run lost in transit; a new round heals)
        checkpoint = Checkpoint(author, ref.seq, ref.hash, ref.sig)
        self._tips[author] = (ref.seq, ref.hash)
        self._version += 1
        self._pending[(author, ref.seq)] = _Pending(self.round, counted)
        self._unsettled += counted
        effects.append(VerifyAndStore(Run(author, tuple(fresh), checkpoint)))

    # -- the driver's verdicts -----------------------------------------------------------

    def on_stored(self, author: str, seq: int) -> list[Effect]:
        if not self._settle(author, seq):
            return []
        tip = self._tips.get(author)
        if tip is not None and tip[0] <= seq:
            del self._tips[author]  # the index has it (or will, with LocalAdded)
            self._version += 1
        return self._credit()

    def on_rejected(self, author: str, seq: int, reason: str) -> list[Effect]:
        if not self._settle(author, seq):
            return []
        effects: list[Effect] = []
        if author not in self.refused:
            self._refuse(author, seq, reason, effects)
        return effects + self._credit()

    def on_deferred(self, author: str, seq: int) -> list[Effect]:
        """The run could not be stored (a local problem, such as a full disk): forget
        it without refusing its author; a later round asks for it again."""
        if not self._settle(author, seq):
            return []
        self._tips.pop(author, None)
        self._version += 1
        return self._credit()

    def _settle(self, author: str, seq: int) -> bool:
        entry = self._pending.pop((author, seq), None)
        if entry is None:
            return False
        self.settled_total += 1
        if entry.round == self.round:
            self._unsettled -= entry.held
        return True

    def _refuse(
        self, author: str, seq: int, reason: str, effects: list[Effect], *, hostile: bool = False
    ) -> None:
        """Take nothing more of ``author`` from this peer; keep the other authors."""
        self.refused.add(author)
        self._tips.pop(author, None)
        self._version += 1
        if self._partial is not None and self._partial[0] == author:
            self._partial = None
        effects.append(Send(SyncReject(author, seq, reason[:256])))
        effects.append(ReportPeer(author, reason, hostile))


def _malformed(events: tuple[WireEvent, ...], refs: tuple[CheckpointRef, ...]) -> str | None:
    """Why a frame's events or checkpoints cannot be a piece of one chain, if so."""
    if not events:
        return "events frame without events"
    first = events[0].seq
    if first < 1 or [e.seq for e in events] != list(range(first, first + len(events))):
        return "events not contiguous"
    last = first + len(events) - 1
    previous = first - 1
    for ref in refs:
        if not previous < ref.seq <= last:
            return "checkpoint outside its frame or out of order"
        previous = ref.seq
    return None
