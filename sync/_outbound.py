"""Sending half of a sync link: what the peer lacks, in priority order, under credit.

The peer's heads are facts that only grow (a store never forgets), so they are
merged by maximum from every :class:`SyncHeads`, :class:`SyncDelta` and run the
peer sends us. What we sent in the current round but the peer has not confirmed
is the only state a new round throws away.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from meshdesk.errors import SyncError
from meshdesk.store.records import Checkpoint, StoredEvent
from meshdesk.sync._index import LocalIndex
from meshdesk.sync.messages import (
    Effect,
    EventsLoaded,
    NeedEvents,
    ReportPeer,
    Send,
    SyncConfig,
)
from meshdesk.wire import CheckpointRef, SyncCredit, SyncEvents, SyncHeads, SyncReject, WireEvent
from meshdesk.wire.frames import wire_event

__all__ = ["Outbound"]

#: Estimated msgpack overhead of one event and one checkpoint in an events frame.
_EVENT_OVERHEAD = 96
_CHECKPOINT_OVERHEAD = 192

Fact = tuple[str, int, bytes]


@dataclass(frozen=True, slots=True)
class _Chunk:
    author: str
    events: tuple[WireEvent, ...]
    checkpoints: tuple[CheckpointRef, ...]
    ends_batch: bool


class Outbound:
    """Sender state for one link."""

    def __init__(self, index: LocalIndex, config: SyncConfig) -> None:
        self._index = index
        self._cfg = config
        self.peer_heads: dict[str, tuple[int, bytes]] = {}
        #: Moves whenever ``peer_heads`` changes.
        self.heads_version = 0
        self.heads_round = 0  # highest peer round whose heads we hold whole
        self._collect: tuple[int, int, set[int]] = (0, 0, set())
        self.round = 0  # peer round we stream into (from its credit)
        self.offset = 0
        self.settled = 0
        self.window = 0
        self._sent_upto: dict[str, int] = {}
        #: max(peer_heads seq, _sent_upto) per author, kept up to date (see peer_seq).
        self._peer_seq: dict[str, int] = {}
        #: Authors that may have batches past peer_seq (a superset; _next prunes it).
        self._behind: set[str] = set(index.authors())
        index.take_grown()
        self.refused: set[str] = set()
        self.loading: NeedEvents | None = None
        self._outbox: deque[_Chunk] = deque()
        self._outbox_rank = 0  # rank the loaded run was planned for
        self._overtake: int | None = None  # best rank of local batches added since
        self._mid_batch: str | None = None  # author whose batch the last frame left open
        self._serving: str | None = None  # author of the last run loaded
        #: Cumulative counters across rounds, for stall detection.
        self.sent_total = 0
        self.credited_total = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.round > 0 and self.heads_round >= self.round

    @property
    def in_flight(self) -> int:
        return self.offset - self.settled

    def peer_seq(self, author: str) -> int:
        """How far the peer has ``author``'s chain: announced by it, or sent by us."""
        return self._peer_seq.get(author, 0)

    def _next(self) -> tuple[str, int, int] | None:
        """The author to send next: best rank first; on a tie the author served last
        keeps its turn (its urgent batch arrives whole and soon), then the lowest id."""
        best: tuple[int, bool, str, int] | None = None
        behind = self._behind
        behind |= self._index.take_grown()
        index, peer_seq, refused = self._index, self._peer_seq, self.refused
        for author in list(behind):
            after = peer_seq.get(author, 0)
            if index.last_seq(author) <= after or author in refused:
                behind.discard(author)  # back only when it grows or a round resets
                continue
            # The key is unique per author, so the set's order does not matter.
            key = (index.rank_past(author, after), author != self._serving, author, after)
            if best is None or key < best:
                best = key
        return None if best is None else (best[2], best[3], best[0])

    @property
    def wants_to_send(self) -> bool:
        return bool(self._outbox) or self.loading is not None or self._next() is not None

    @property
    def idle(self) -> bool:
        return self.heads_round >= 1 and self.in_flight == 0 and not self.wants_to_send

    @property
    def stuck(self) -> bool:
        """Waiting on the peer: no heads yet, unsettled frames, or data but no room."""
        return self.heads_round == 0 or self.in_flight > 0 or self.wants_to_send

    # -- inputs --------------------------------------------------------------------------

    def learn(self, facts: Iterable[Fact]) -> list[Effect]:
        """Merge what the peer is known to hold; refuse authors whose chains fork."""
        effects: list[Effect] = []
        for author, seq, digest in facts:
            known = self.peer_heads.get(author)
            if known is None or seq > known[0]:
                self.peer_heads[author] = (seq, digest)
                self.heads_version += 1
                if seq > self._peer_seq.get(author, 0):
                    self._peer_seq[author] = seq
            ours = self._index.hash_at(author, seq)
            if ours is not None and ours != digest and author not in self.refused:
                self._refuse(author)
                effects.append(ReportPeer(author, f"chain fork: peer holds another seq {seq}"))
        return effects

    def on_heads(self, frame: SyncHeads) -> list[Effect]:
        if frame.parts < 1 or frame.part >= frame.parts:
            return [ReportPeer(None, f"heads part {frame.part} of {frame.parts}", hostile=True)]
        effects = self.learn((h.author, h.seq, h.hash) for h in frame.heads)
        collecting, parts, got = self._collect
        if frame.round > collecting:
            self._collect = collecting, parts, got = frame.round, frame.parts, set()
        if frame.round == collecting:
            got.add(frame.part)
            if len(got) >= parts and collecting > self.heads_round:
                self.heads_round = collecting
        return effects + self.pump()

    def on_credit(self, frame: SyncCredit) -> list[Effect]:
        if frame.round < self.round:
            return []
        if frame.round > self.round:
            self._reset(frame.round)
        settled = min(frame.settled, self.offset)
        if settled > self.settled:
            self.credited_total += settled - self.settled
            self.settled = settled
        self.window = frame.window
        return self.pump()

    def on_reject(self, frame: SyncReject) -> list[Effect]:
        self._refuse(frame.author)
        return self.pump()

    def on_loaded(self, msg: EventsLoaded) -> list[Effect]:
        request = self.loading
        if request is None or msg.request != request:
            return []  # stale: asked before a new round or a preemption
        self.loading = None
        if request.author in self.refused:
            return self.pump()
        events = msg.events
        expected = range(request.after_seq + 1, request.upto_seq + 1)
        if len(events) != len(expected) or any(
            e.author != request.author or e.seq != s for e, s in zip(events, expected, strict=True)
        ):
            raise SyncError(f"store answered {request} with {len(events)} unfitting events")
        checkpoints = self._index.checkpoints_between(
            request.author, request.after_seq, request.upto_seq
        )
        self._outbox.extend(self._cut(request.author, events, checkpoints))
        return self.pump()

    def local_added(self, authors: Iterable[str]) -> list[Effect]:
        """New local batches: more urgent ones overtake what is loaded but not sent."""
        ranks = [
            r for a in authors if (r := self._index.rank_after(a, self.peer_seq(a))) is not None
        ]
        if ranks and (self._outbox or self.loading is not None):
            best = min(ranks)
            if best < self._outbox_rank and (self._overtake is None or best < self._overtake):
                self._overtake = best
        return self.pump()

    # -- sending -------------------------------------------------------------------------

    def pump(self) -> list[Effect]:
        """Send what credit allows; ask the store for the next run when out of data."""
        effects: list[Effect] = []
        while self.active:
            if self._overtake is not None and self._mid_batch is None:
                self._overtake = None  # between batches: drop the load, plan afresh
                self._outbox.clear()
                self.loading = None
            if self._outbox:
                chunk = self._outbox[0]
                if chunk.events[-1].seq <= self.peer_heads.get(chunk.author, (0, b""))[0]:
                    self._outbox.popleft()  # the peer got it meanwhile (from another link)
                    self._mid_batch = None if chunk.ends_batch else chunk.author
                    continue
                n = len(chunk.events)
                if self.in_flight and self.in_flight + n > self.window:
                    break
                self._outbox.popleft()
                effects.append(
                    Send(
                        SyncEvents(
                            self.round, self.offset, chunk.author, chunk.events, chunk.checkpoints
                        )
                    )
                )
                self.offset += n
                self.sent_total += n
                upto = self._sent_upto[chunk.author] = chunk.events[-1].seq
                if upto > self._peer_seq.get(chunk.author, 0):
                    self._peer_seq[chunk.author] = upto
                self._mid_batch = None if chunk.ends_batch else chunk.author
                continue
            if self.loading is not None:
                break
            choice = self._next()
            if choice is None:
                break
            author, after, rank = choice
            checkpoint = self._index.plan(author, after, rank, self._cfg.load_events)
            self.loading = NeedEvents(author, after, checkpoint.seq)
            self._outbox_rank = rank
            self._serving = author
            effects.append(self.loading)
            break
        return effects

    def _cut(
        self, author: str, events: tuple[StoredEvent, ...], checkpoints: list[Checkpoint]
    ) -> list[_Chunk]:
        """Split a loaded run into frames, cutting at batch ends where sizes allow."""
        refs = {c.seq: CheckpointRef(c.seq, c.hash, c.sig) for c in checkpoints}
        cfg = self._cfg
        chunks: list[_Chunk] = []
        cur: list[WireEvent] = []
        sizes: list[int] = []
        total = 0  # sum(sizes)
        boundary = 0  # cur[:boundary] ends at a checkpoint

        def flush(k: int) -> None:
            nonlocal cur, sizes, total, boundary
            part = tuple(cur[:k])
            cps = tuple(refs[e.seq] for e in part if e.seq in refs)
            chunks.append(_Chunk(author, part, cps, part[-1].seq in refs))
            cur, sizes = cur[k:], sizes[k:]
            total, boundary = sum(sizes), 0

        for event in events:
            size = _EVENT_OVERHEAD + len(event.body) + 4 * len(event.case_id or "")
            if event.payloads:
                size += sum(len(blob) + 5 for blob in event.payloads)
            if event.seq in refs:
                size += _CHECKPOINT_OVERHEAD
            while cur and (len(cur) >= cfg.frame_events or total + size > cfg.frame_bytes):
                flush(boundary or len(cur))
            cur.append(
                wire_event(
                    event.seq,
                    event.hlc,
                    event.case_id,
                    event.kind,
                    event.body,
                    event.prev_hash,
                    event.payloads,
                )
            )
            sizes.append(size)
            total += size
            if event.seq in refs:
                boundary = len(cur)
        if cur:
            flush(len(cur))
        return chunks

    def _refuse(self, author: str) -> None:
        self.refused.add(author)
        if self._mid_batch == author:
            self._mid_batch = None  # abandoned; the peer drops what it holds of it
        self._outbox = deque(c for c in self._outbox if c.author != author)
        if self.loading is not None and self.loading.author == author:
            self.loading = None

    def _reset(self, round_: int) -> None:
        """The peer opened a new round: forget what was in flight, start from heads."""
        self.round = round_
        self.offset = self.settled = 0
        self._sent_upto.clear()
        self._peer_seq = {author: seq for author, (seq, _) in self.peer_heads.items()}
        self._behind = set(self._index.authors())
        self._outbox.clear()
        self.loading = None
        self._mid_batch = None
        self._overtake = None
