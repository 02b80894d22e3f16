"""The replication core of one link: ``state + input -> (new state, effects)``.

No sockets, no clock, no store: :class:`SyncCore` is fed :data:`~meshdesk.sync.Input`
values and returns :data:`~meshdesk.sync.Effect` values for the driver to carry out
(see :mod:`meshdesk.sync.messages`). One core serves one link, both directions.

Protocol, per direction (each side is sender and receiver at once):

1. The receiver opens a *round*: :class:`~meshdesk.wire.SyncHeads` in parts (every
   author it stores, relayed ones too), then :class:`~meshdesk.wire.SyncCredit`.
2. The sender, holding every part and the credit, streams what the receiver
   lacks as :class:`~meshdesk.wire.SyncEvents` at consecutive offsets: one author
   at a time, whole batches, the author whose most urgent pending batch is most
   urgent first (earlier batches of that author come along: chains are ordered).
   It never has more than ``window`` events sent and unsettled, except one
   frame when nothing is in flight (so a batch larger than the window still goes).
3. The receiver processes frames in offset order, cuts them into runs at the
   author's checkpoints, has the driver verify and store each run
   (:class:`VerifyAndStore`), and grants credit as runs settle. A run that fails
   refuses its author from this peer (:class:`~meshdesk.wire.SyncReject`); the
   other authors keep flowing.
4. New local batches (own edits, runs from other links: :class:`LocalAdded`) go
   to the peer as :class:`~meshdesk.wire.SyncDelta` and are streamed at once.
5. On :class:`Tick`, a side that waited ``stall_ticks`` ticks without progress
   renegotiates: a receiver that knows the peer holds more opens a new round; a
   stuck sender says how far it got (:class:`~meshdesk.wire.SyncResync`), and the
   receiver opens a new round if events went missing, else announces its round
   again. A new round resumes from heads, so only what was in flight is sent
   again (and the receiver drops what it holds already).

What the driver must do: call :meth:`SyncCore.start` once the link is up, feed
every sync frame, answer every :class:`NeedEvents` and :class:`VerifyAndStore`,
broadcast :class:`LocalAdded` to every live core after each store commit, call
``handle(Tick())`` on a timer, and drop the core with the link. Verifying a run:
``meshdesk.cases.chain.verify_run`` with ``head = (first_seq - 1, first prev_hash)``
and the author's key, then ``Store.append_run``, which checks the junction with
the stored chain and skips events it holds already.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from meshdesk.sync._inbound import Inbound
from meshdesk.sync._index import LocalIndex
from meshdesk.sync._outbound import Outbound
from meshdesk.sync.messages import (
    Deferred,
    Effect,
    EventsLoaded,
    Input,
    LocalAdded,
    LocalLog,
    Rejected,
    Send,
    Stored,
    SyncConfig,
    Tick,
)
from meshdesk.wire import (
    AuthorHead,
    SyncCredit,
    SyncDelta,
    SyncEvents,
    SyncHeads,
    SyncReject,
    SyncResync,
)

__all__ = ["SyncCore", "SyncProgress"]

_DEFAULT_CONFIG = SyncConfig()


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """What one link still has to move, as far as the peer's announcements tell.

    Attributes:
        outbox: Events we store that the peer is not known to store (None until
            the peer's heads arrived: until then we cannot tell).
        inbox: Events the peer announced that we do not store yet.
        sent: Events sent on this link since it opened.
        received: Events received on this link since it opened.
    """

    outbox: int | None
    inbox: int
    sent: int
    received: int


class SyncCore:
    """Replication state of one link; see the module docstring for the protocol.

    Args:
        local: The local store's heads and batches when the link opens; later
            changes arrive as :class:`LocalAdded`.
        config: Window, frame sizes and stall timing.
    """

    __slots__ = ("_cfg", "_in", "_index", "_marker", "_out", "_stalled", "_started", "_threshold")

    def __init__(self, local: LocalLog, config: SyncConfig = _DEFAULT_CONFIG) -> None:
        self._cfg = config
        self._index = LocalIndex(local)
        self._in = Inbound(self._index, config)
        self._out = Outbound(self._index, config)
        self._started = False
        self._stalled = 0
        self._threshold = config.stall_ticks
        self._marker: tuple[int, ...] = ()

    # -- what the driver may look at -----------------------------------------------------

    @property
    def idle(self) -> bool:
        """Both directions are done: the peer has all we have, and we all it has
        (as far as its announcements tell), with nothing in flight."""
        return (
            self._started
            and self._out.idle
            and not self._in.pending
            and not self._in.expecting(self._out.peer_heads, self._out.heads_version)
        )

    @property
    def peer_heads(self) -> Mapping[str, tuple[int, bytes]]:
        """What the peer is known to store, ``{author: (seq, hash)}`` (read-only)."""
        return MappingProxyType(self._out.peer_heads)

    @property
    def refused(self) -> frozenset[str]:
        """Authors whose runs we stopped taking from this peer, or it from us."""
        return frozenset(self._in.refused | self._out.refused)

    def progress(self) -> SyncProgress:
        """Backlog both ways, for status screens and drills (cost: one pass over authors)."""
        peer = self._out.peer_heads
        outbox: int | None = None
        if self._out.heads_round >= 1:
            outbox = sum(
                max(0, self._index.head(author)[0] - self._out.peer_seq(author))
                for author in self._index.authors()
                if author not in self._out.refused
            )
        inbox = sum(
            max(0, seq - self._index.head(author)[0])
            for author, (seq, _) in peer.items()
            if author not in self._in.refused
        )
        return SyncProgress(outbox, inbox, self._out.sent_total, self._in.received_total)

    # -- inputs --------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """Open the first round; call once, before anything else."""
        if self._started:
            raise RuntimeError("SyncCore.start() called twice")
        self._started = True
        return self._in.restart()

    def handle(self, msg: Input) -> list[Effect]:
        """Take one input; returns the effects to carry out, in order."""
        if not self._started:
            raise RuntimeError("SyncCore.handle() before start()")
        match msg:
            case SyncEvents():
                effects, facts = self._in.on_events(msg)
                return effects + self._out.learn(facts)
            case SyncHeads():
                return self._out.on_heads(msg)
            case SyncDelta():
                return self._out.learn((h.author, h.seq, h.hash) for h in msg.heads)
            case SyncCredit():
                return self._out.on_credit(msg)
            case SyncReject():
                return self._out.on_reject(msg)
            case SyncResync():
                if msg.round > self._in.round:
                    return []  # a round we never opened
                if msg.round == self._in.round and msg.sent > self._in.next_offset:
                    return self._in.restart()  # events went missing
                return self._in.announce()  # our heads or credit went missing
            case EventsLoaded():
                return self._out.on_loaded(msg)
            case Stored():
                return self._in.on_stored(msg.author, msg.seq)
            case Rejected():
                return self._in.on_rejected(msg.author, msg.seq, msg.reason)
            case Deferred():
                return self._in.on_deferred(msg.author, msg.seq)
            case LocalAdded():
                return self._local_added(msg)
            case Tick():
                return self._tick()

    def _local_added(self, msg: LocalAdded) -> list[Effect]:
        moved = self._index.add(msg.runs)
        news = [
            AuthorHead(author, seq, digest)
            for author, (seq, digest) in sorted(moved.items())
            if self._out.peer_heads.get(author, (0, b""))[0] < seq
        ]
        per = self._cfg.heads_per_frame
        effects: list[Effect] = [
            Send(SyncDelta(tuple(news[i : i + per]))) for i in range(0, len(news), per)
        ]
        return effects + self._out.local_added(moved)

    def _tick(self) -> list[Effect]:
        inbound, outbound = self._in, self._out
        marker = (
            inbound.received_total,
            inbound.settled_total,
            outbound.sent_total,
            outbound.credited_total,
            outbound.heads_round,
        )
        if marker != self._marker:  # progress since the last tick
            self._marker = marker
            self._stalled = 0
            self._threshold = self._cfg.stall_ticks
            return []
        if self.idle or inbound.pending or outbound.loading is not None:
            self._stalled = 0  # nothing expected, or the driver is still working
            return []
        self._stalled += 1
        if self._stalled < self._threshold:
            return []
        self._stalled = 0
        self._threshold = min(2 * self._threshold, self._cfg.max_stall_ticks)
        effects: list[Effect] = []
        if inbound.expecting(outbound.peer_heads, outbound.heads_version):
            effects += inbound.restart()
        if outbound.stuck:
            effects.append(Send(SyncResync(outbound.round, outbound.offset)))
        return effects
