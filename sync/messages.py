"""What the replication core takes in and what it asks its driver to do.

The core (:class:`meshdesk.sync.SyncCore`) is sans-IO: it is fed :data:`Input` values
and answers each with a list of :data:`Effect` values. The driver owns the link,
the store and the clock; it carries effects out, in the order given, and feeds
their outcomes back as inputs.

Effects and the input that answers them:

* :class:`Send` — put the frame on the link. No answer.
* :class:`NeedEvents` — read the author's events ``(after_seq, upto_seq]`` from the
  store; answer :class:`EventsLoaded`.
* :class:`VerifyAndStore` — verify the run (chain, checkpoint signature) and store it
  with its checkpoint in one transaction; answer :class:`Stored` or :class:`Rejected`,
  or :class:`Deferred` when it could not be stored for a local reason (a full disk).
* :class:`ReportPeer` — the peer sent something invalid; log it, count it, maybe
  drop the link. No answer.

Inputs that come from elsewhere: the peer's sync frames (:data:`SyncFrame`),
:class:`LocalAdded` after every commit to the local store (own edits and runs
stored from any link), and :class:`Tick` on a timer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from meshdesk.store.records import Checkpoint, StoredEvent
from meshdesk.wire import (
    SyncCredit,
    SyncDelta,
    SyncEvents,
    SyncHeads,
    SyncReject,
    SyncResync,
    WireEvent,
)

__all__ = [
    "SYNC_FRAME_TYPES",
    "Deferred",
    "Effect",
    "EventsLoaded",
    "Input",
    "LocalAdded",
    "LocalLog",
    "LocalRun",
    "NeedEvents",
    "Rejected",
    "ReportPeer",
    "Run",
    "Send",
    "Stored",
    "SyncConfig",
    "SyncFrame",
    "Tick",
    "VerifyAndStore",
]

#: The frames a :class:`~meshdesk.sync.SyncCore` consumes and produces.
SyncFrame: TypeAlias = SyncHeads | SyncDelta | SyncCredit | SyncEvents | SyncReject | SyncResync
#: For ``isinstance`` routing of received frames to the core.
SYNC_FRAME_TYPES: tuple[type[SyncFrame], ...] = (
    SyncHeads,
    SyncDelta,
    SyncCredit,
    SyncEvents,
    SyncReject,
    SyncResync,
)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Knobs of one replication core; tests shrink them.

    Attributes:
        window: Events the peer may have in flight to us (sent, not yet settled).
            Memory for them is bounded by ``window`` times the largest event (a
            typical event is under 1 KiB: a few MiB). A wider window lets a catch-up
            commit in larger groups, each with one disk sync: 4,096 stored 40,000
            events in half the commits of 2,048, and 10–20 % faster.
        frame_events: Events per :class:`~meshdesk.wire.SyncEvents` frame, at most.
        frame_bytes: Estimated encoded size of one events frame, at most (a single
            larger event still goes alone).
        load_events: Events asked of the store per :class:`NeedEvents` (at least one
            whole batch is always asked for).
        heads_per_frame: Authors per :class:`~meshdesk.wire.SyncHeads` part.
        max_batch_events: Longest batch (checkpoint to checkpoint) we buffer for a
            peer; a longer one is refused.
        stall_ticks: Ticks without progress before the core renegotiates; doubles
            after each fruitless renegotiation, up to ``max_stall_ticks``.
        max_stall_ticks: Cap of that backoff.
    """

    window: int = 4096
    frame_events: int = 512
    frame_bytes: int = 512 * 1024
    load_events: int = 2048
    heads_per_frame: int = 2048
    max_batch_events: int = 4096
    stall_ticks: int = 3
    max_stall_ticks: int = 48

    def __post_init__(self) -> None:
        limits = {
            "frame_events": 4096,  # the frames' MaxLen
            "heads_per_frame": 4096,
            "frame_bytes": 960 * 1024,  # leaves room in a 1 MiB frame
            "window": 2**31 - 1,
        }
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SyncConfig.{name} must be a positive int, got {value!r}")
            if value > limits.get(name, value):
                raise ValueError(f"SyncConfig.{name} must be <= {limits[name]}, got {value}")
        if self.max_stall_ticks < self.stall_ticks:
            raise ValueError("SyncConfig.max_stall_ticks must be >= stall_ticks")


@dataclass(frozen=True, slots=True)
class LocalRun:
    """One signed batch in the local store: the author's events up to its checkpoint.

    Attributes:
        checkpoint: The author's checkpoint that ends the batch.
        rank: Priority hint from the driver, ordered like ``Urgency.rank`` (0 = most
            urgent, goes first): the best rank among the cases the batch touches.
            It only orders sending.
    """

    checkpoint: Checkpoint
    rank: int


@dataclass(frozen=True, slots=True)
class LocalLog:
    """The local store as the core sees it when a link opens.

    Attributes:
        heads: ``{author: (seq, hash)}`` for every author stored (relayed ones too).
        runs: Every author's stored batches, oldest first (``Store.checkpoints``
            with a rank per batch). Events past the last checkpoint are
            announced in ``heads`` but never sent.
    """

    heads: Mapping[str, tuple[int, bytes]] = field(default_factory=dict)
    runs: Mapping[str, Sequence[LocalRun]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Run:
    """Contiguous events of one author that end exactly at its ``checkpoint``."""

    author: str
    events: tuple[WireEvent, ...]
    checkpoint: Checkpoint

    @property
    def first_seq(self) -> int:
        return self.events[0].seq


# -- effects ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` to the peer."""

    frame: SyncFrame


@dataclass(frozen=True, slots=True)
class NeedEvents:
    """Load ``author``'s stored events with ``after_seq < seq <= upto_seq``."""

    author: str
    after_seq: int
    upto_seq: int


@dataclass(frozen=True, slots=True)
class VerifyAndStore:
    """Verify ``run`` and store it with its checkpoint, all or nothing.

    The run may overlap what the store already holds (another link stored it in
    the meantime): events at or below the stored head must be identical and are
    skipped. Runs of one author must be stored in the order they were asked for.
    """

    run: Run


@dataclass(frozen=True, slots=True)
class ReportPeer:
    """The peer broke the protocol or sent a run that failed verification.

    ``hostile`` marks what a correct peer never sends (a malformed frame, a batch
    over the limits): the node quarantines the peer for it. A fork or a refused
    author may be an honest peer relaying someone else's chain, so it is not.
    """

    author: str | None
    reason: str
    hostile: bool = False


Effect: TypeAlias = Send | NeedEvents | VerifyAndStore | ReportPeer


# -- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsLoaded:
    """Answer to ``request``: the events found, oldest first."""

    request: NeedEvents
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True)
class Stored:
    """Answer to :class:`VerifyAndStore`: the run ending at ``seq`` is stored."""

    author: str
    seq: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Answer to :class:`VerifyAndStore`: the run ending at ``seq`` failed; none of it
    was stored. The core stops taking ``author`` from this peer."""

    author: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class LocalAdded:
    """Batches just committed to the local store, from any source."""

    runs: tuple[LocalRun, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """The driver's timer fired; the core counts ticks, it never reads a clock."""


@dataclass(frozen=True, slots=True)
class Deferred:
    """Answer to :class:`VerifyAndStore`: the run ending at ``seq`` is sound but could
    not be stored here now (the disk is full). Nothing is refused: the core forgets
    the run, and a later round asks for it again."""

    author: str
    seq: int


Input: TypeAlias = SyncFrame | EventsLoaded | Stored | Rejected | Deferred | LocalAdded | Tick
