"""The replication core's transitions, one behaviour at a time.

Most tests wire two cores back to back with :mod:`meshdesk.sync.sim` (in-memory
stores, every frame through the wire codec) and step the link by hand; a few feed
one core directly.
"""

from __future__ import annotations

import hashlib
import inspect
import types
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

import msgpack
import pytest

import meshdesk.sync as sync
from meshdesk.errors import SyncError
from meshdesk.store.records import ZERO_HASH, Checkpoint, StoredEvent
from meshdesk.sync import (
    EventsLoaded,
    LocalLog,
    LocalRun,
    NeedEvents,
    ReportPeer,
    Run,
    Send,
    SyncConfig,
    SyncCore,
    SyncFrame,
    Tick,
    VerifyAndStore,
)
from meshdesk.sync.sim import Link, Replica
from meshdesk.wire import (
    AuthorHead,
    CheckpointRef,
    SyncCredit,
    SyncDelta,
    SyncEvents,
    SyncHeads,
    SyncReject,
    SyncResync,
    WireEvent,
)

F = TypeVar("F", bound=SyncFrame)

CONFIG = SyncConfig(
    window=6, frame_events=3, load_events=6, heads_per_frame=2, stall_ticks=1, max_stall_ticks=2
)


def event_hash(author: str, e: WireEvent | StoredEvent) -> bytes:
    fields = [author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash]
    return hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest()


def fake_sig(author: str, seq: int, digest: bytes) -> bytes:
    return hashlib.sha512(author.encode() + seq.to_bytes(8, "big") + digest).digest()


def verify(run: Run) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    prev = run.events[0].prev_hash
    for e in run.events:
        if e.prev_hash != prev:
            raise SyncError("chain broken")
        prev = event_hash(run.author, e)
        out.append(
            StoredEvent(run.author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, prev)
        )
    ck = run.checkpoint
    if (ck.seq, ck.hash) != (out[-1].seq, prev) or ck.sig != fake_sig(ck.author, ck.seq, ck.hash):
        raise SyncError("checkpoint does not vouch for the run")
    return out


def rank_of(events: Sequence[StoredEvent]) -> int:
    return min(int(msgpack.unpackb(e.body)["r"]) for e in events)


class Chains:
    """The authors' true chains; writes batches into whichever replicas hold them."""

    def __init__(self) -> None:
        self.events: dict[str, list[StoredEvent]] = {}

    def batch(self, author: str, ranks: list[int], *into: Replica) -> list[StoredEvent]:
        chain = self.events.setdefault(author, [])
        seq, prev = (chain[-1].seq, chain[-1].hash) if chain else (0, ZERO_HASH)
        batch = []
        for rank in ranks:
            seq += 1
            body = msgpack.packb({"op": author, "r": rank})
            draft = WireEvent(seq, seq, None, 1, body, prev)
            prev = event_hash(author, draft)
            batch.append(StoredEvent(author, seq, seq, None, 1, body, draft.prev_hash, prev))
        chain += batch
        checkpoint = Checkpoint(author, seq, prev, fake_sig(author, seq, prev))
        for replica in into:
            replica.commit(batch, checkpoint)
        return batch


def node(name: str, config: SyncConfig = CONFIG) -> Replica:
    return Replica(name, verify, rank_of, config)


def sent(link: Link, side: int, kind: type[F]) -> list[F]:
    return [f for what, s, f in link.trace if what == "send" and s == side and isinstance(f, kind)]


def seqs_sent(link: Link, side: int) -> list[tuple[str, int]]:
    return [(f.author, e.seq) for f in sent(link, side, SyncEvents) for e in f.events]


def deliver_all(link: Link) -> None:
    for side in (0, 1):
        while link.wires[side]:
            link.deliver(side)


def max_in_flight(link: Link, side: int) -> int:
    """The most events ``side`` ever had sent and unsettled, as it knew it."""
    round_ = offset = settled = top = 0
    for what, s, f in link.trace:
        if s != side:
            continue
        if what == "recv" and isinstance(f, SyncCredit) and f.round >= round_:
            if f.round > round_:
                round_, offset, settled = f.round, 0, 0
            settled = max(settled, min(f.settled, offset))
        elif what == "send" and isinstance(f, SyncEvents):
            offset += len(f.events)
            top = max(top, offset - settled)
    return top


# -- sessions ----------------------------------------------------------------------------


def test_a_session_sends_each_missing_event_once_and_converges() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    chains.batch("n-a", [3, 3], a)
    chains.batch("n-x", [3], a)  # relayed: a stores x's events too
    chains.batch("n-b", [3, 3, 3], b)
    chains.batch("n-a", [3], a)
    link = Link(a, b)
    link.settle()
    assert a.store.events == b.store.events == {k: v for k, v in chains.events.items()}
    assert sorted(seqs_sent(link, 0)) == [
        ("n-a", 1),
        ("n-a", 2),
        ("n-a", 3),
        ("n-x", 1),
    ]
    assert sorted(seqs_sent(link, 1)) == [("n-b", 1), ("n-b", 2), ("n-b", 3)]
    assert link.idle
    assert not a.reports
    assert not b.reports


def test_urgent_batches_go_first_and_pull_their_prefix_along() -> None:
    chains, relay, peer = Chains(), node("n-r", replace(CONFIG, window=100)), node("n-p")
    chains.batch("n-1", [3, 3], relay)
    chains.batch("n-1", [3], relay)
    chains.batch("n-2", [3], relay)
    chains.batch("n-2", [0], relay)  # urgent: n-2's first batch must come with it
    chains.batch("n-3", [1, 3], relay)
    link = Link(relay, peer)
    link.settle()
    assert seqs_sent(link, 0) == [
        ("n-2", 1),
        ("n-2", 2),
        *[("n-3", 1), ("n-3", 2)],
        *[("n-1", 1), ("n-1", 2), ("n-1", 3)],
    ]


def test_the_sender_keeps_within_the_credit_window() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    for _ in range(10):
        chains.batch("n-a", [3, 3], a)
    link = Link(a, b)
    deliver_all(link)  # heads and credit
    for _ in range(5):
        a.run_work()  # loads: the sender stops at the window without credit
    assert sum(len(f.events) for f in sent(link, 0, SyncEvents)) == CONFIG.window
    link.settle()
    assert max_in_flight(link, 0) <= CONFIG.window
    assert b.store.events["n-a"] == chains.events["n-a"]


def test_a_batch_longer_than_window_and_frame_is_stored_whole_or_not_at_all() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    chains.batch("n-a", [3] * 20, a)
    link = Link(a, b)
    stores = []
    while not link.idle:
        deliver_all(link)
        stores += [w for w in b.work if isinstance(w[2], VerifyAndStore)]
        for end in link.ends:
            end.run_work()
        assert len(b.store.events.get("n-a", [])) in (0, 20)
    assert [len(w.run.events) for _, _, w in stores if isinstance(w, VerifyAndStore)] == [20]
    assert max(len(f.events) for f in sent(link, 0, SyncEvents)) == CONFIG.frame_events


def test_a_forged_run_refuses_only_its_author_from_that_peer() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    chains.batch("n-x", [3, 3], a)
    chains.batch("n-y", [3], a)
    link = Link(a, b)
    deliver_all(link)
    a.run_work()
    forged_body = msgpack.packb({"op": "forger", "r": 0})

    def forge(frame: SyncFrame) -> SyncFrame:
        assert isinstance(frame, SyncEvents)
        assert frame.author == "n-x"
        first = replace(frame.events[0], body=forged_body)
        return replace(frame, events=(first, *frame.events[1:]))

    link.alter(0, 0, forge)
    link.settle()
    assert "n-x" not in b.store.events
    assert b.store.events["n-y"] == chains.events["n-y"]
    assert [(peer, r.author) for peer, r in b.reports] == [("n-a", "n-x")]
    assert link.cores[0].refused == link.cores[1].refused == {"n-x"}
    assert [f.author for f in sent(link, 1, SyncReject)] == ["n-x"]
    link.close()
    Link(a, b).settle()  # a new session tries again, from heads
    assert b.store.events["n-x"] == chains.events["n-x"]


def test_a_dropped_frame_stalls_until_ticks_renegotiate() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    chains.batch("n-a", [3, 3, 3], a)
    chains.batch("n-a", [3], a)
    chains.batch("n-a", [3], a)
    link = Link(a, b)
    deliver_all(link)
    a.run_work()
    assert [len(f.events) for f in sent(link, 0, SyncEvents)] == [3, 2]
    link.drop(0, 1)  # the second events frame never arrives
    deliver_all(link)
    b.run_work()
    deliver_all(link)
    assert len(b.store.events["n-a"]) == 3  # 4 and 5 are stuck: nobody sends anything...
    link.tick()
    assert not link.wires[0]
    assert not link.wires[1]
    link.tick()  # ...until a tick without progress: b opens a new round from its heads
    assert {f.round for f in sent(link, 1, SyncHeads)} == {1, 2}
    link.settle()
    assert b.store.events["n-a"] == chains.events["n-a"]
    assert [s for _, s in seqs_sent(link, 0)] == [
        1,
        2,
        3,
        4,
        5,
        4,
        5,
    ]  # only the lost went twice


def test_a_cut_session_resumes_from_heads_without_resending_stored_runs() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    for _ in range(4):
        chains.batch("n-a", [3, 3], a)
    link = Link(a, b)
    deliver_all(link)
    a.run_work()
    deliver_all(link)
    b.run_work(limit=2)  # two runs stored, the rest still queued when the cable goes
    link.close()
    assert len(b.store.events["n-a"]) == 4
    again = Link(a, b)
    again.settle()
    assert seqs_sent(again, 0) == [("n-a", s) for s in range(5, 9)]
    assert b.store.events["n-a"] == chains.events["n-a"]


def test_live_links_relay_new_events_by_delta_without_a_new_round() -> None:
    chains, a, b, c = Chains(), node("n-a"), node("n-b"), node("n-c")
    ab, bc = Link(a, b), Link(b, c)
    ab.settle()
    bc.settle()
    chains.batch("n-a", [2, 2], a)  # a local edit while linked
    ab.settle()
    bc.settle()
    assert c.store.events["n-a"] == chains.events["n-a"]
    assert [f.heads for f in sent(bc, 0, SyncDelta)] == [
        (AuthorHead("n-a", 2, chains.events["n-a"][-1].hash),)
    ]
    assert {f.round for f in sent(bc, 0, SyncHeads) + sent(bc, 1, SyncHeads)} == {1}


def test_a_data_mule_carries_events_between_sites_that_never_meet() -> None:
    chains, a, mule, c = Chains(), node("n-a"), node("n-m"), node("n-c")
    chains.batch("n-a", [1, 3], a)
    chains.batch("n-c", [0], c)
    for site in (a, c, a):  # the mule drives from site to site
        visit = Link(mule, site)
        visit.settle()
        visit.close()
    assert a.store.events == c.store.events == mule.store.events == chains.events
    assert a.store.checkpoints == c.store.checkpoints  # the authors' own signatures


def test_duplicated_and_reordered_frames_are_harmless() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    for _ in range(3):
        chains.batch("n-a", [3, 3, 3, 3], a)
        chains.batch("n-b", [3], b)
    link = Link(a, b)
    for _ in range(30):
        for side in (0, 1):
            wire = link.wires[side]
            if len(wire) >= 2:
                link.deliver(side, 1, keep=True)  # the second frame, ahead of the first, twice
            if wire:
                link.deliver(side, 0)
        for end in link.ends:
            end.run_work()
    link.settle()
    assert a.store.events == b.store.events == chains.events
    assert not a.reports
    assert not b.reports


def test_heads_in_parts_are_used_only_once_every_part_arrived() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    for author in ("n-1", "n-2", "n-3", "n-4", "n-5"):
        chains.batch(author, [3], a)
    chains.batch("n-b", [3], b)
    link = Link(a, b)
    heads = sent(link, 0, SyncHeads)
    assert [(f.part, f.parts, len(f.heads)) for f in heads] == [(0, 3, 2), (1, 3, 2), (2, 3, 1)]
    link.drop(0, 1)  # the middle part of a's heads is lost
    deliver_all(link)
    b.run_work()
    assert sent(link, 1, SyncEvents) == []  # b does not know all that a holds: it waits
    link.settle()  # b's ticks ask for a new round (SyncResync); a announces again
    assert sent(link, 1, SyncResync)
    assert a.store.events == b.store.events == chains.events


def test_a_local_edit_overtakes_a_loaded_run() -> None:
    chains, a, b = Chains(), node("n-a"), node("n-b")
    chains.batch("n-a", [3, 3], a)
    link = Link(a, b)
    deliver_all(link)  # a's core asks the store for n-a's run
    chains.batch("n-z", [0], a)  # an urgent case arrives before the store answers
    a.run_work()
    assert [f.author for f in sent(link, 0, SyncEvents)][:1] == ["n-z"]
    link.settle()
    assert b.store.events == chains.events


# -- one core, fed by hand ---------------------------------------------------------------

H1, H2, OTHER = b"\x01" * 32, b"\x02" * 32, b"\x09" * 32
LOG = LocalLog(
    heads={"n-x": (2, H2)},
    runs={
        "n-x": [
            LocalRun(Checkpoint("n-x", 1, H1, b"s1"), 3),
            LocalRun(Checkpoint("n-x", 2, H2, b"s2"), 3),
        ]
    },
)


def started(log: LocalLog = LOG) -> SyncCore:
    core = SyncCore(log, CONFIG)
    assert [type(e.frame) for e in core.start() if isinstance(e, Send)] == [SyncHeads, SyncCredit]
    return core


def test_the_core_loads_what_the_peer_lacks_and_checks_the_answer() -> None:
    core = started()
    assert core.handle(SyncHeads(1, 0, 1, (AuthorHead("n-x", 1, H1),))) == []
    assert core.handle(SyncCredit(1, 0, 4)) == [NeedEvents("n-x", 1, 2)]
    assert core.handle(EventsLoaded(NeedEvents("n-x", 0, 2), ())) == []  # not asked: stale
    with pytest.raises(SyncError, match="unfitting events"):
        core.handle(EventsLoaded(NeedEvents("n-x", 1, 2), ()))


def test_a_peer_on_another_fork_is_reported_and_not_served() -> None:
    core = started()
    effects = core.handle(SyncHeads(1, 0, 1, (AuthorHead("n-x", 1, OTHER),)))
    assert effects == [ReportPeer("n-x", "chain fork: peer holds another seq 1")]
    assert core.handle(SyncCredit(1, 0, 4)) == []
    assert core.refused == {"n-x"}


def test_a_malformed_events_frame_refuses_its_author() -> None:
    core = started(LocalLog())
    events = (WireEvent(1, 1, None, 1, b"", ZERO_HASH), WireEvent(3, 1, None, 1, b"", H1))
    effects = core.handle(SyncEvents(1, 0, "n-x", events, (CheckpointRef(3, H2, b""),)))
    assert effects[:2] == [
        Send(SyncReject("n-x", 3, "events not contiguous")),
        ReportPeer("n-x", "events not contiguous", hostile=True),
    ]
    again = core.handle(SyncEvents(1, 2, "n-x", events[:1], ()))
    assert again[0] == Send(SyncReject("n-x", 1, "author refused from this peer"))


def test_frames_of_a_closed_round_are_ignored() -> None:
    core = started(LocalLog())
    again = core.handle(SyncResync(0, 0))  # the peer missed our round: announced again
    assert [type(e.frame) for e in again if isinstance(e, Send)] == [SyncHeads, SyncCredit]
    core.handle(SyncResync(1, 5))  # it sent 5 events we never saw: round 2 opens
    event = WireEvent(1, 1, None, 1, b"", ZERO_HASH)
    assert core.handle(SyncEvents(1, 0, "n-x", (event,), (CheckpointRef(1, H1, b""),))) == []
    assert core.handle(SyncResync(5, 0)) == []  # a round we never opened


def test_an_idle_core_never_renegotiates() -> None:
    core = started(LocalLog())
    core.handle(SyncHeads(1, 0, 1, ()))
    core.handle(SyncCredit(1, 0, 4))
    assert core.idle
    assert all(core.handle(Tick()) == [] for _ in range(10))


def test_the_core_must_be_started_once() -> None:
    core = SyncCore(LocalLog())
    with pytest.raises(RuntimeError, match="before start"):
        core.handle(Tick())
    core.start()
    with pytest.raises(RuntimeError, match="twice"):
        core.start()


@pytest.mark.parametrize(
    "changes",
    [
        {"window": 0},
        {"frame_events": 5000},
        {"stall_ticks": 4, "max_stall_ticks": 3},
        {"window": True},
    ],
)
def test_config_refuses_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="SyncConfig"):
        SyncConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", [sync, sync.core, sync.messages, sync.sim])
def test_all_is_complete(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert public <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)
    if module is sync:
        assert set(sync.__all__) == set(sync.core.__all__) | set(sync.messages.__all__)
