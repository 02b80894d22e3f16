"""The async shell around :class:`~meshdesk.sync.SyncCore`: links, store, verification.

One :class:`SyncService` per node. Each link gets its own core; the service feeds
the core the link's sync frames and carries out its effects: sends frames, loads
events from the store, verifies received runs against the author's certified key
(``verify_run``) and stores them with their checkpoint. Every commit, local or
received, is announced to every other live core, so a new case reaches linked peers
with no further command, and events flow hop by hop.

Received runs are stored by one committer task with *group commit*: a verified run
joins a queue, and each commit takes everything queued so far (from every link) in
one transaction — one fsync, however many runs. A commit is durable when it returns
(the store runs ``synchronous = FULL``); only then is the run answered ``Stored``
(the peer's credit moves on) and announced to other links, so no event is
acknowledged to a peer or passed on before it would survive a power cut. The answers
go out from a task of their own, in commit order: answering waits for the peer's
lock, which the link's verification holds while it works through a frame, and the
next group commit need not wait for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshdesk._lifecycle import AsyncResource
from meshdesk.cases.chain import verify_run
from meshdesk.cases.summary import run_rank
from meshdesk.errors import ChannelClosed, MeshdeskError, StoreError, StoreFull, SyncError
from meshdesk.net.link import Link
from meshdesk.store import CaseSummary, Checkpoint, Store, StoredEvent
from meshdesk.sync.core import SyncCore
from meshdesk.sync.messages import (
    SYNC_FRAME_TYPES,
    Deferred,
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
from meshdesk.wire import Frame

__all__ = [
    "KeyOf",
    "SyncService",
    "UnknownAuthor",
    "is_sync_frame",
    "urgency_rank",
    "verify_received",
]

log = logging.getLogger(__name__)

KeyOf = Callable[[str], Awaitable[Ed25519PublicKey | None]]

#: Most events one group commit stores (bounds a transaction's size and latency).
_GROUP_EVENTS = 10_000


def _deferred(run: Run) -> Deferred:
    return Deferred(run.author, run.checkpoint.seq)


def is_sync_frame(frame: Frame) -> TypeGuard[SyncFrame]:
    return isinstance(frame, SYNC_FRAME_TYPES)


def urgency_rank(events: Iterable[StoredEvent]) -> int:
    """The most urgent urgency an event of the batch sets (0 = immediate): the batch's
    sending priority, the same rule the store keeps with each checkpoint."""
    return run_rank(events)


class UnknownAuthor(SyncError):
    """No certificate that verifies now names the run's author (unknown, revoked or
    expired): the run is refused, without blaming whoever passed it on."""


async def verify_received(run: Run, key_of: KeyOf) -> list[StoredEvent]:
    """The one check every run from elsewhere passes before it is stored — from a
    link (:class:`SyncService`) or from a USB bundle (:mod:`meshdesk.bundles`): the
    author's signing key from a certificate that verifies now, then the hash chain
    from the run's own start and the signed checkpoint that ends it (``verify_run``).

    Raises:
        UnknownAuthor: no valid certificate for the author.
        SyncError: the run fails verification.
    """
    key = await key_of(run.author)
    if key is None:
        raise UnknownAuthor(f"no verified certificate for author {run.author} (yet)")
    first = run.events[0]
    return verify_run(run.author, (first.seq - 1, first.prev_hash), run.events, run.checkpoint, key)


@dataclass(slots=True)
class _Queued:
    """A verified run waiting for the next group commit."""

    peer: _Peer
    run: Run
    verified: list[StoredEvent]
    #: Sending priority of the run (ranked once: stored with its checkpoint, announced).
    rank: int
    #: Index rows of the run's cases (``Store.fold_run``), worked out while the
    #: previous group commit is being written rather than inside the next one.
    folded: Mapping[str, CaseSummary]


@dataclass
class _Peer:
    link: Link
    core: SyncCore
    lock: asyncio.Lock
    #: Wall-clock ms of the last sync frame either way (None: nothing exchanged yet).
    last_exchange_ms: int | None = None


class SyncService(AsyncResource):
    """Replicates the store over every link; an async context manager."""

    def __init__(
        self,
        store: Store,
        *,
        key_of: KeyOf,
        received_at: Callable[[], int],
        config: SyncConfig | None = None,
        tick_interval: float = 0.5,
    ) -> None:
        self._store = store
        self._key_of = key_of
        self._received_at = received_at
        self._config = config or SyncConfig()
        self._tick_interval = tick_interval
        self._peers: dict[int, _Peer] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._attaching: dict[int, asyncio.Future[None]] = {}
        self._queue: list[_Queued] = []
        self._full = False  # the last group commit found the disk full
        self._queued = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        #: Runs stored and not yet answered, in commit order (``_answer_forever``).
        self._answers: asyncio.Queue[tuple[_Queued, int | StoreError]] = asyncio.Queue()
        self._answerer: asyncio.Task[None] | None = None
        #: Stored runs counted for status screens and benches.
        self.stored_events = 0
        #: Told the events of each run stored from a peer (the node publishes them).
        self.on_stored: Callable[[list[StoredEvent]], None] | None = None
        #: Told when a peer sends what no correct peer sends: a forged or broken run,
        #: a malformed sync frame (the node quarantines the peer).
        self.on_offence: Callable[[Link, str], None] | None = None

    async def __aenter__(self) -> SyncService:
        self._ticker = asyncio.create_task(self._tick_forever(), name="sync ticker")
        self._committer = asyncio.create_task(self._commit_forever(), name="sync committer")
        self._answerer = asyncio.create_task(self._answer_forever(), name="sync answers")
        return self

    async def aclose(self) -> None:
        for task in (self._ticker, self._committer, self._answerer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._committer = self._answerer = None
        self._queue.clear()  # verified but never stored: never acknowledged either
        # Stored but not answered: the peer asks again on its next link (durable).
        self._answers = asyncio.Queue()
        self._peers.clear()
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- links ---------------------------------------------------------------------

    async def _local_log(self) -> LocalLog:
        heads = await self._store.heads()
        runs: dict[str, list[LocalRun]] = {}
        for author in heads:
            runs[author] = await self._ranked(author)
        return LocalLog(heads=heads, runs=runs)

    async def _ranked(self, author: str) -> list[LocalRun]:
        """The author's batches with their rank: stored with each checkpoint since
        schema 3; batches stored before are ranked from their events (one pass)."""
        ranked = await self._store.ranked_checkpoints(author)
        unranked = [c for c, rank in ranked if rank is None]
        ranks: dict[int, int] = {}
        if unranked:
            events = await self._store.events_after(author, 0, unranked[-1].seq)
            start = 0
            for checkpoint, rank in ranked:
                end = start
                while end < len(events) and events[end].seq <= checkpoint.seq:
                    end += 1
                if rank is None:
                    ranks[checkpoint.seq] = urgency_rank(events[start:end])
                start = end
        return [LocalRun(c, rank if rank is not None else ranks[c.seq]) for c, rank in ranked]

    async def attach(self, link: Link) -> None:
        """Start replicating over a link that just came up (idempotent).

        The peer's first sync frames may arrive before the link-up hook gets
        here; whichever comes first attaches, the other waits for it.
        """
        key = id(link)
        if key in self._peers:
            return
        pending = self._attaching.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._attach(link))
            self._attaching[key] = pending
            pending.add_done_callback(lambda _: self._attaching.pop(key, None))
        await asyncio.shield(pending)

    async def _attach(self, link: Link) -> None:
        core = SyncCore(await self._local_log(), self._config)
        peer = _Peer(link, core, asyncio.Lock())
        async with peer.lock:
            self._peers[id(link)] = peer
            await self._run(peer, core.start())

    def detach(self, link: Link) -> None:
        self._peers.pop(id(link), None)

    async def on_frame(self, link: Link, frame: SyncFrame) -> None:
        peer = self._peers.get(id(link))
        if peer is None:
            if link.channel.closed:
                return  # the link is going away
            await self.attach(link)  # frames that overtook the link-up hook
            peer = self._peers.get(id(link))
            if peer is None:
                return
        peer.last_exchange_ms = self._received_at()
        await self._feed(peer, frame)

    def progress(self) -> list[dict[str, object]]:
        """Per linked peer: backlog both ways and the last exchange (JSON-safe)."""
        out: list[dict[str, object]] = []
        for peer in self._peers.values():
            hello = peer.link.peer_hello
            progress = peer.core.progress()
            out.append(
                {
                    "node_id": peer.link.peer_id,
                    "name": hello.name if hello is not None else "",
                    "site": hello.site if hello is not None else "",
                    "outbox": progress.outbox,
                    "inbox": progress.inbox,
                    "sent_events": progress.sent,
                    "received_events": progress.received,
                    "last_exchange_ms": peer.last_exchange_ms,
                    "idle": peer.core.idle,
                }
            )
        return sorted(out, key=lambda p: (str(p["name"]), str(p["node_id"])))

    async def local_added(
        self, runs: tuple[LocalRun, ...], *, except_link: Link | None = None
    ) -> None:
        """Announce batches just committed (our edits, or runs from another link)."""
        for peer in list(self._peers.values()):
            if peer.link is not except_link:
                await self._feed(peer, LocalAdded(runs))

    async def imported(self, runs: Sequence[tuple[list[StoredEvent], Checkpoint]]) -> None:
        """Runs stored from elsewhere than a link (a USB bundle): told to the node
        (``on_stored``) and announced to every link, like runs stored from a peer."""
        added = []
        for events, checkpoint in runs:
            self.stored_events += len(events)
            if self.on_stored is not None:
                self.on_stored(events)
            added.append(LocalRun(checkpoint, urgency_rank(events)))
        if added:
            await self.local_added(tuple(added))

    async def committed(self, events: list[StoredEvent]) -> None:
        """Our own commit (CaseBook.on_commit): announce its batch to every link."""
        if not events:
            return
        author = events[-1].author
        checkpoints = await self._store.checkpoints(author, events[0].seq - 1)
        runs = tuple(LocalRun(cp, urgency_rank(events)) for cp in checkpoints)
        if runs:
            await self.local_added(runs)

    # -- the core's effects --------------------------------------------------------

    async def _feed(self, peer: _Peer, msg: Input) -> None:
        async with peer.lock:
            if self._peers.get(id(peer.link)) is not peer:
                return
            await self._run(peer, peer.core.handle(msg))

    async def _run(self, peer: _Peer, effects: list[Effect]) -> None:
        queue = list(effects)
        while queue:
            effect = queue.pop(0)
            match effect:
                case Send(frame=frame):
                    try:
                        await peer.link.send(frame)
                    except ChannelClosed:
                        self.detach(peer.link)
                        return
                    peer.last_exchange_ms = self._received_at()
                case NeedEvents() as need:
                    events = await self._store.events_after(
                        need.author, need.after_seq, need.upto_seq - need.after_seq
                    )
                    queue.extend(peer.core.handle(EventsLoaded(need, tuple(events))))
                case VerifyAndStore(run=run):
                    rejected = await self._verify(peer, run)
                    if rejected is not None:
                        queue.extend(peer.core.handle(rejected))
                    # A frame holds several runs: let the group commit take its next
                    # step between them, or it waits for the whole frame each time.
                    await asyncio.sleep(0)
                case ReportPeer(author=author, reason=reason, hostile=hostile):
                    log.warning("sync with %s: %s (author %s)", peer.link, reason, author or "-")
                    if hostile:
                        self._offence(peer, reason)

    async def _verify(self, peer: _Peer, run: Run) -> Rejected | None:
        """Verify a run and queue it for the next group commit; its answer comes then."""
        author, checkpoint = run.author, run.checkpoint
        try:
            verified = await verify_received(run, self._key_of)
        except UnknownAuthor as exc:
            return Rejected(author, checkpoint.seq, str(exc))
        except SyncError as exc:
            log.warning("refused a run of %s from %s: %s", author, peer.link, exc)
            self._offence(peer, f"a run that fails verification: {exc}")
            return Rejected(author, checkpoint.seq, str(exc))
        rank, folded = self._store.fold_run(verified)
        if rank is None:  # a store without a case index (tests of the sync layer)
            rank = urgency_rank(verified)
        queued = _Queued(peer, run, verified, rank, folded)
        self._queue.append(queued)
        self._queued.set()
        return None

    def _offence(self, peer: _Peer, what: str) -> None:
        if self.on_offence is not None:
            self.on_offence(peer.link, what)

    async def _commit_forever(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                size = end = 0
                while end < len(self._queue) and (end == 0 or size < _GROUP_EVENTS):
                    size += len(self._queue[end].verified)
                    end += 1
                group, self._queue = self._queue[:end], self._queue[end:]
                await self._commit(group)

    async def _commit(self, group: list[_Queued]) -> None:
        """Store a group in one transaction, then answer and announce each run.

        If the group fails as a whole (one run forks, or does not continue what is
        stored), each run is stored on its own so that only the bad one is refused.
        A full disk is nobody's fault: the group and every run queued behind it
        (they continue what could not be stored) are deferred, not refused; rounds
        ask for them again, and they are stored once space returns.
        """
        received_at = self._received_at()
        outcomes: list[int | StoreError | None]  # None: answered already (deferred)
        try:
            outcomes = list(
                await self._store.append_runs(
                    [(q.verified, q.run.checkpoint) for q in group],
                    received_at,
                    ranks=[q.rank for q in group],
                    folded=[q.folded for q in group],
                )
            )
        except StoreFull as exc:
            await self._answers.join()  # what was stored before is answered first
            await self._defer(group, exc)
            return
        except StoreError:
            await self._answers.join()
            outcomes = []
            for queued in group:
                if await self._behind(queued.run):
                    # It continues a run that was deferred (a full disk): not stored,
                    # not refused; a later round brings the whole chain again.
                    await self._feed(queued.peer, _deferred(queued.run))
                    outcomes.append(None)
                    continue
                try:
                    outcomes.append(
                        await self._store.append_run(
                            queued.verified, queued.run.checkpoint, received_at, rank=queued.rank
                        )
                    )
                except StoreFull as exc:
                    answered = len(outcomes)
                    for done, outcome in zip(group, outcomes, strict=False):
                        if outcome is not None:
                            await self._answer(done, outcome)
                    await self._defer(group[answered:], exc)
                    return
                except StoreError as exc:
                    outcomes.append(exc)
        if self._full and any(isinstance(o, int) for o in outcomes):
            log.info("the disk has room again: received runs are stored")
            self._full = False
        for queued, outcome in zip(group, outcomes, strict=True):
            if outcome is not None:
                self._answers.put_nowait((queued, outcome))

    async def _answer_forever(self) -> None:
        """Answer stored runs in commit order, while the next group is written."""
        while True:
            queued, outcome = await self._answers.get()
            try:
                await self._answer(queued, outcome)
            except Exception:  # a bug in a hook: logged, and later runs still answered
                log.exception("answering a stored run of %s failed", queued.run.author)
            finally:
                self._answers.task_done()

    async def _behind(self, run: Run) -> bool:
        """Whether ``run`` starts past what the store holds of its author (a gap)."""
        head = (await self._store.heads()).get(run.author)
        return run.events[0].seq > (head[0] if head is not None else 0) + 1

    async def _defer(self, group: list[_Queued], full: StoreFull) -> None:
        if not self._full:
            log.error("received runs are not stored until space returns: %s", full)
        self._full = True
        waiting, self._queue = group + self._queue, []
        for queued in waiting:
            await self._feed(queued.peer, _deferred(queued.run))

    async def _answer(self, queued: _Queued, outcome: int | StoreError) -> None:
        peer, run = queued.peer, queued.run
        author, checkpoint = run.author, run.checkpoint
        if isinstance(outcome, StoreError):
            log.warning("refused a run of %s from %s: %s", author, peer.link, outcome)
            await self._feed(peer, Rejected(author, checkpoint.seq, str(outcome)))
            return
        await self._feed(peer, Stored(author, checkpoint.seq))
        if outcome:
            self.stored_events += outcome
            if self.on_stored is not None:
                self.on_stored(queued.verified)
            added = (LocalRun(checkpoint, queued.rank),)
            # Every live core hears of every commit, the source too: its index
            # learns the run it just handed over.
            await self._feed(peer, LocalAdded(added))
            await self._announce_from(peer, added)

    async def _announce_from(self, source: _Peer, runs: tuple[LocalRun, ...]) -> None:
        # Other cores may be mid-effect under their own locks; announce after this
        # effect loop without holding two locks at once.
        for peer in list(self._peers.values()):
            if peer is not source:
                task = asyncio.create_task(self._feed(peer, LocalAdded(runs)))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            for peer in list(self._peers.values()):
                if peer.link.channel.closed:
                    self.detach(peer.link)
                    continue
                try:
                    await self._feed(peer, Tick())
                except MeshdeskError as exc:
                    log.warning("sync tick with %s failed: %s", peer.link, exc)
