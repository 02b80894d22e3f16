"""In-memory replicas and links that drive :class:`SyncCore` the way the driver does.

For tests and drills. A :class:`Replica` keeps its chains in dicts and carries out
its cores' store effects when told to (:meth:`Replica.run_work`); a :class:`Link`
passes every frame through the wire codec and lets the caller deliver, drop,
duplicate, reorder or alter frames in transit, and records what it saw in
:attr:`Link.trace`. Nothing here draws random numbers: the caller decides every
fault, so a test (or a seeded drill) replays exactly.

Verification is injected: the real driver uses ``meshdesk.cases.chain.verify_run``
with the author's key; tests pass a fake.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

from meshdesk.errors import SyncError
from meshdesk.store.records import ZERO_HASH, Checkpoint, StoredEvent
from meshdesk.sync.core import SyncCore
from meshdesk.sync.messages import (
    SYNC_FRAME_TYPES,
    Effect,
    EventsLoaded,
    Input,
    LocalAdded,
    LocalLog,
    LocalRun,
    NeedEvents,
    Rejected,
    ReportPeer,
    Run,
    Send,
    Stored,
    SyncConfig,
    SyncFrame,
    Tick,
    VerifyAndStore,
)
from meshdesk.wire import DEFAULT_LIMITS, WireLimits, decode, encode

__all__ = ["Link", "MemoryStore", "RankOf", "Replica", "RunVerifier", "TraceEntry"]

#: Checks a run on its own (hashes, chain inside the run, checkpoint signature) and
#: returns its events with their computed hashes; raises SyncError when it is bad.
RunVerifier: TypeAlias = Callable[[Run], list[StoredEvent]]
#: The rank of a batch (0 = most urgent), from its events (the driver reads their cases).
RankOf: TypeAlias = Callable[[Sequence[StoredEvent]], int]
#: ``("send" | "recv" | "local", side, frame or LocalAdded)``, in the order it happened.
TraceEntry: TypeAlias = tuple[Literal["send", "recv", "local"], int, SyncFrame | LocalAdded]


class MemoryStore:
    """Chains and checkpoints in dicts, with the same append rules as the store."""

    def __init__(self) -> None:
        self.events: dict[str, list[StoredEvent]] = {}
        self.checkpoints: dict[str, list[Checkpoint]] = {}
        self.ranks: dict[tuple[str, int], int] = {}

    def head(self, author: str) -> tuple[int, bytes]:
        chain = self.events.get(author)
        return (chain[-1].seq, chain[-1].hash) if chain else (0, ZERO_HASH)

    def local_log(self) -> LocalLog:
        return LocalLog(
            heads={a: self.head(a) for a, chain in self.events.items() if chain},
            runs={
                a: [LocalRun(c, self.ranks[(a, c.seq)]) for c in cps]
                for a, cps in self.checkpoints.items()
            },
        )

    def read(self, author: str, after: int, upto: int) -> tuple[StoredEvent, ...]:
        return tuple(self.events.get(author, [])[after:upto])

    def append_run(
        self, events: Sequence[StoredEvent], checkpoint: Checkpoint, rank: int
    ) -> LocalRun | None:
        """Store a verified run and its checkpoint, all or nothing.

        Events held already must be identical and are skipped; the rest must
        continue the stored chain, and the checkpoint must match it.

        Returns:
            The new batch, or None when the store held all of it.

        Raises:
            SyncError: a fork, a gap, a broken chain, or a checkpoint off the chain.
        """
        author = checkpoint.author
        chain = self.events.get(author, [])
        seq, digest = self.head(author)
        new: list[StoredEvent] = []
        for event in events:
            if event.author != author:
                raise SyncError(f"run of {author} holds an event of {event.author}")
            if event.seq <= len(chain):
                if chain[event.seq - 1].hash != event.hash:
                    raise SyncError(f"fork of {author} at seq {event.seq}")
                continue
            if event.seq != seq + 1 or event.prev_hash != digest:
                raise SyncError(f"seq {event.seq} of {author} does not continue the chain")
            new.append(event)
            seq, digest = event.seq, event.hash
        tip = chain + new
        if not 1 <= checkpoint.seq <= len(tip) or tip[checkpoint.seq - 1].hash != checkpoint.hash:
            raise SyncError(f"checkpoint {checkpoint.seq} of {author} is not on the chain")
        self.events[author] = tip
        cps = self.checkpoints.setdefault(author, [])
        i = bisect.bisect_left([c.seq for c in cps], checkpoint.seq)
        if i == len(cps) or cps[i].seq != checkpoint.seq:
            cps.insert(i, checkpoint)
            self.ranks[(author, checkpoint.seq)] = rank
        return LocalRun(checkpoint, self.ranks[(author, checkpoint.seq)]) if new else None


class Replica:
    """One node: a :class:`MemoryStore`, its links, and the driver's work queue."""

    def __init__(
        self,
        name: str,
        verify: RunVerifier,
        rank: RankOf,
        config: SyncConfig | None = None,
    ) -> None:
        self.name = name
        self.store = MemoryStore()
        self.config = config or SyncConfig()
        self.links: list[Link] = []
        self.work: deque[tuple[Link, int, NeedEvents | VerifyAndStore]] = deque()
        self.reports: list[tuple[str, ReportPeer]] = []
        self._verify = verify
        self._rank = rank

    def commit(self, events: Sequence[StoredEvent], checkpoint: Checkpoint) -> None:
        """A local edit: store our own batch and announce it on every link."""
        added = self.store_run(events, checkpoint)
        if added is not None:
            self.broadcast(added)

    def store_run(self, events: Sequence[StoredEvent], checkpoint: Checkpoint) -> LocalRun | None:
        """The store step of :class:`VerifyAndStore` (tests override it to break it)."""
        return self.store.append_run(events, checkpoint, self._rank(events))

    def broadcast(self, run: LocalRun) -> None:
        for link in list(self.links):
            link.feed(link.side_of(self), LocalAdded((run,)))

    def run_work(self, limit: int | None = None) -> int:
        """Carry out queued store effects, oldest first; returns how many."""
        done = 0
        while self.work and (limit is None or done < limit):
            link, side, effect = self.work.popleft()
            done += 1
            if link.closed:
                continue  # the driver drops the work of a closed link
            if isinstance(effect, NeedEvents):
                events = self.store.read(effect.author, effect.after_seq, effect.upto_seq)
                link.feed(side, EventsLoaded(effect, events))
                continue
            run = effect.run
            try:
                added = self.store_run(self._verify(run), run.checkpoint)
            except SyncError as exc:
                link.feed(side, Rejected(run.author, run.checkpoint.seq, str(exc)))
                continue
            link.feed(side, Stored(run.author, run.checkpoint.seq))
            if added is not None:
                self.broadcast(added)
        return done

    def crash(self) -> None:
        """Lose everything but the store: links, their cores, queued work."""
        for link in list(self.links):
            link.close()
        self.work.clear()


class Link:
    """Two cores joined by two FIFO wires of encoded frames (``wires[side]`` holds
    what ``side`` sent). Opening a link starts both cores."""

    #: Record every frame in :attr:`trace` (tests read it; a drill of a thousand nodes
    #: turns it off, as it would hold every frame of the run).
    tracing = True

    def __init__(self, a: Replica, b: Replica, *, limits: WireLimits = DEFAULT_LIMITS) -> None:
        self.ends = (a, b)
        self.cores = (
            SyncCore(a.store.local_log(), a.config),
            SyncCore(b.store.local_log(), b.config),
        )
        self.wires: tuple[deque[bytes], deque[bytes]] = (deque(), deque())
        self.trace: list[TraceEntry] = []
        #: Bytes of encoded sync frames each side sent on this link.
        self.sent_bytes = [0, 0]
        self.closed = False
        self._limits = limits
        a.links.append(self)
        b.links.append(self)
        for side in (0, 1):
            self._apply(side, self.cores[side].start())

    def side_of(self, replica: Replica) -> int:
        return self.ends.index(replica)

    @property
    def idle(self) -> bool:
        """Nothing on the wires, no queued work of this link, both cores idle."""
        return (
            not (self.wires[0] or self.wires[1])
            and not any(w[0] is self for end in self.ends for w in end.work)
            and all(core.idle for core in self.cores)
        )

    def feed(self, side: int, msg: Input) -> None:
        """Give ``msg`` to the core of ``side`` and carry out its effects."""
        if self.closed:
            return
        if isinstance(msg, LocalAdded) and self.tracing:
            self.trace.append(("local", side, msg))
        self._apply(side, self.cores[side].handle(msg))

    def _apply(self, side: int, effects: list[Effect]) -> None:
        end = self.ends[side]
        for effect in effects:
            if isinstance(effect, Send):
                data = encode(effect.frame, self._limits)
                self.wires[side].append(data)
                self.sent_bytes[side] += len(data)
                if self.tracing:
                    self.trace.append(("send", side, effect.frame))
            elif isinstance(effect, ReportPeer):
                end.reports.append((self.ends[1 - side].name, effect))
            else:
                end.work.append((self, side, effect))

    def deliver(self, side: int, index: int = 0, *, keep: bool = False) -> None:
        """Deliver frame ``index`` of those ``side`` sent (0 = oldest; more is a
        reorder); ``keep`` leaves it on the wire, to arrive again later."""
        wire = self.wires[side]
        data = wire[index]
        if not keep:
            del wire[index]
        frame = decode(data, self._limits)
        if not isinstance(frame, SYNC_FRAME_TYPES):
            raise SyncError(f"not a sync frame: {type(frame).__name__}")
        if self.tracing:
            self.trace.append(("recv", 1 - side, frame))
        self.feed(1 - side, frame)

    def drop(self, side: int, index: int = 0) -> None:
        del self.wires[side][index]

    def alter(self, side: int, index: int, change: Callable[[SyncFrame], SyncFrame]) -> None:
        """Replace a frame in transit by ``change(frame)`` (a forger on the path)."""
        wire = self.wires[side]
        frame = decode(wire[index], self._limits)
        if not isinstance(frame, SYNC_FRAME_TYPES):
            raise SyncError(f"not a sync frame: {type(frame).__name__}")
        wire[index] = encode(change(frame), self._limits)

    def tick(self) -> None:
        for side in (0, 1):
            self.feed(side, Tick())

    def settle(self, max_rounds: int = 500) -> None:
        """Deliver everything in order, do all work, tick when stuck, until idle.

        Raises:
            SyncError: the link is still busy after ``max_rounds`` (a livelock).
        """
        for _ in range(max_rounds):
            if self.closed:
                return
            progressed = False
            while self.wires[0] or self.wires[1]:
                for side in (0, 1):
                    if self.wires[side]:
                        self.deliver(side)
                progressed = True
            for end in self.ends:
                progressed = end.run_work() > 0 or progressed
            if not progressed:
                if self.idle:
                    return
                self.tick()
        a, b = self.ends
        raise SyncError(f"link {a.name}-{b.name} did not settle in {max_rounds} rounds")

    def close(self) -> None:
        """Pull the cable: frames in transit and queued work of this link are lost."""
        if self.closed:
            return
        self.closed = True
        for end in self.ends:
            end.links.remove(self)
        for wire in self.wires:
            wire.clear()
