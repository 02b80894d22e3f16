"""Replication converges under faults: a Hypothesis state machine over four replicas.

Rules edit (a batch by the replica's own author, some cases urgent), sync (a session
through the wire codec whose frames Hypothesis delivers in order, out of order,
twice, never, or altered by a forger, before it may run to quiescence), partition
and heal, and crash (a replica loses its links and queued store work, never what
it stored). Invariants hold after every step; teardown gossips everyone pairwise
until nothing changes and requires identical logs. The last test breaks the
receiver on purpose and requires the machine to notice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import combinations
from typing import ClassVar

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from meshdesk.errors import SyncError
from meshdesk.store.records import ZERO_HASH, Checkpoint, StoredEvent
from meshdesk.sync import LocalRun, Run, SyncConfig, SyncFrame
from meshdesk.sync.sim import Link, Replica, TraceEntry
from meshdesk.wire import SyncCredit, SyncEvents, WireEvent, decode

NAMES = ("n-a", "n-b", "n-c", "n-d")
PAIRS = list(combinations(NAMES, 2))
# Small numbers so that batches span frames, heads span parts, credit runs out.
CONFIG = SyncConfig(
    window=6,
    frame_events=3,
    frame_bytes=4096,
    load_events=5,
    heads_per_frame=2,
    max_batch_events=64,
    stall_ticks=1,
    max_stall_ticks=4,
)


# -- authoring and verifying (the contract's hash, a fake signature) ---------------------


def event_hash(author: str, e: WireEvent | StoredEvent) -> bytes:
    fields = [author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash]
    return hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest()


def fake_sig(author: str, seq: int, digest: bytes) -> bytes:
    message = b"meshdesk-chain-v1\0" + author.encode() + seq.to_bytes(8, "big") + digest
    return hashlib.sha512(b"key of " + author.encode() + message).digest()


def make_batch(chain: list[StoredEvent], author: str, ranks: list[int]) -> list[StoredEvent]:
    seq, prev = (chain[-1].seq, chain[-1].hash) if chain else (0, ZERO_HASH)
    out = []
    for rank in ranks:
        seq += 1
        body = msgpack.packb({"op": author, "r": rank, "n": seq})
        draft = WireEvent(seq, seq << 16, f"case-{seq % 3}", 1, body, prev)
        prev = event_hash(author, draft)
        out.append(
            StoredEvent(author, seq, draft.hlc, draft.case_id, 1, body, draft.prev_hash, prev)
        )
    return out


def rank_of(events: Sequence[StoredEvent]) -> int:
    return min(int(msgpack.unpackb(e.body)["r"]) for e in events)


def verify(run: Run) -> list[StoredEvent]:
    """What the driver does: recompute every hash, check the chain and the signature."""
    out: list[StoredEvent] = []
    prev = run.events[0].prev_hash
    for e in run.events:
        if e.prev_hash != prev:
            raise SyncError(f"seq {e.seq} does not continue the run")
        prev = event_hash(run.author, e)
        out.append(
            StoredEvent(run.author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, prev)
        )
    ck = run.checkpoint
    if (ck.seq, ck.hash) != (out[-1].seq, prev):
        raise SyncError("run does not end at its checkpoint")
    if ck.sig != fake_sig(ck.author, ck.seq, ck.hash):
        raise SyncError("checkpoint signature forged")
    return out


def trusting_verify(run: Run) -> list[StoredEvent]:
    """Broken: believes the hashes the sender implies instead of computing them."""
    hashes = [e.prev_hash for e in run.events[1:]] + [run.checkpoint.hash]
    return [
        StoredEvent(run.author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, h)
        for e, h in zip(run.events, hashes, strict=True)
    ]


class HalfStoringReplica(Replica):
    """Broken: stores the first half of a peer's run (no checkpoint) and says stored."""

    def store_run(self, events: Sequence[StoredEvent], checkpoint: Checkpoint) -> LocalRun | None:
        if checkpoint.author == self.name or len(events) < 2:
            return super().store_run(events, checkpoint)
        chain = self.store.events.setdefault(checkpoint.author, [])
        chain.extend(e for e in events[: len(events) // 2] if e.seq == len(chain) + 1)
        return None


def forge(frame: SyncFrame) -> SyncFrame:
    """A forger on the path rewrites the first event of an events frame."""
    if not isinstance(frame, SyncEvents):
        return frame
    first, *rest = frame.events
    body = msgpack.packb({"op": "forger", "r": 3, "n": first.seq})
    forged = WireEvent(first.seq, first.hlc, first.case_id, first.kind, body, first.prev_hash)
    return SyncEvents(frame.round, frame.offset, frame.author, (forged, *rest), frame.checkpoints)


# -- checks on what each side sent -------------------------------------------------------


class TraceChecker:
    """Follows a link's trace: credit respected, urgent batches first."""

    def __init__(self, batch_rank: dict[tuple[str, int], int]) -> None:
        self._rank = batch_rank  # (author, checkpoint seq) -> rank, all authors
        self._seen = 0
        # per side: [round, offset, settled, window]
        self._credit = [[0, 0, 0, 0], [0, 0, 0, 0]]
        self._segment: list[list[SyncEvents]] = [[], []]

    def _batch_rank(self, author: str, seq: int) -> int:
        checkpoint = min(s for (a, s) in self._rank if a == author and s >= seq)
        return self._rank[(author, checkpoint)]

    def _starts_batch(self, frame: SyncEvents) -> bool:
        first = frame.events[0].seq
        return first == 1 or (frame.author, first - 1) in self._rank

    def check_segment(self, side: int) -> None:
        """Within a segment (no new knowledge), each frame serves a batch at least as
        urgent as any frame after it: its effective rank never goes down."""
        frames = self._segment[side]
        while frames and not self._starts_batch(frames[0]):
            frames = frames[1:]  # the tail of a batch begun before: must finish first
        best_later: dict[str, int] = {}
        effective = []
        for frame in reversed(frames):
            rank = min(self._batch_rank(frame.author, e.seq) for e in frame.events)
            best_later[frame.author] = min(rank, best_later.get(frame.author, rank))
            effective.append(best_later[frame.author])
        effective.reverse()
        assert effective == sorted(effective), f"urgent batches sent late: {effective}"

    def _break(self, side: int) -> None:
        self.check_segment(side)
        self._segment[side] = []

    def feed(self, trace: list[TraceEntry]) -> None:
        for what, side, item in trace[self._seen :]:
            credit = self._credit[side]
            if what == "local" or (what == "recv" and not isinstance(item, SyncCredit)):
                self._break(side)  # new knowledge may change the plan
            if what == "recv" and isinstance(item, SyncCredit):
                if item.round > credit[0]:
                    self._credit[side] = credit = [item.round, 0, 0, item.window]
                if item.round == credit[0]:
                    credit[2] = max(credit[2], min(item.settled, credit[1]))
                    credit[3] = item.window
            elif what == "send" and isinstance(item, SyncEvents):
                assert item.round == credit[0], "events sent before the peer's credit"
                assert item.offset == credit[1], "stream offsets are not consecutive"
                in_flight, n = credit[1] - credit[2], len(item.events)
                assert in_flight == 0 or in_flight + n <= credit[3], "sent beyond the credit"
                credit[1] += n
                segment = self._segment[side]
                if segment and segment[-1].round != item.round:
                    self._break(side)
                self._segment[side].append(item)
        self._seen = len(trace)
        for side in (0, 1):
            self.check_segment(side)


# -- the machine -------------------------------------------------------------------------

# "pass": deliver what is on the wires in order and do the queued work, once.
KINDS = ("deliver", "deliver", "pass", "pass", "dup", "drop", "forge", "work", "tick")
ACTIONS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 1), st.integers(0, 5)), max_size=16
)


class SyncMachine(RuleBasedStateMachine):
    BROKEN: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        broken = self.BROKEN
        check = trusting_verify if broken == "trusts_sent_hashes" else verify
        cls = HalfStoringReplica if broken == "stores_half_runs" else Replica
        self.replicas = {n: cls(n, check, rank_of, CONFIG) for n in NAMES}
        self.truth: dict[str, list[StoredEvent]] = {n: [] for n in NAMES}
        self.checkpoints: dict[str, list[Checkpoint]] = {n: [] for n in NAMES}
        self.batch_rank: dict[tuple[str, int], int] = {}
        self.links: dict[tuple[str, str], tuple[Link, TraceChecker]] = {}
        self.partitioned: set[tuple[str, str]] = set()
        self.acked: dict[tuple[str, str], int] = {}

    def _link(self, pair: tuple[str, str]) -> tuple[Link, TraceChecker]:
        entry = self.links.get(pair)
        if entry is None or entry[0].closed:
            a, b = (self.replicas[n] for n in pair)
            entry = self.links[pair] = (Link(a, b), TraceChecker(self.batch_rank))
        return entry

    @rule(name=st.sampled_from(NAMES), ranks=st.lists(st.integers(0, 3), min_size=1, max_size=7))
    def edit(self, name: str, ranks: list[int]) -> None:
        events = make_batch(self.truth[name], name, ranks)
        last = events[-1]
        checkpoint = Checkpoint(name, last.seq, last.hash, fake_sig(name, last.seq, last.hash))
        self.truth[name] += events
        self.checkpoints[name].append(checkpoint)
        self.batch_rank[(name, last.seq)] = min(ranks)
        self.replicas[name].commit(events, checkpoint)

    @rule(pair=st.sampled_from(PAIRS), actions=ACTIONS, finish=st.booleans())
    def sync(
        self, pair: tuple[str, str], actions: list[tuple[str, int, int]], finish: bool
    ) -> None:
        if pair in self.partitioned:
            return
        link, checker = self._link(pair)
        for kind, side, index in actions:
            wire = link.wires[side]
            if kind == "work":
                link.ends[side].run_work(limit=1)
            elif kind == "pass":
                for s in (0, 1):
                    for _ in range(len(link.wires[s])):
                        link.deliver(s)
                for end in link.ends:
                    end.run_work()
            elif kind == "tick":
                link.tick()
            elif wire:
                i = index % len(wire)
                if kind == "drop":
                    link.drop(side, i)
                elif kind == "forge":  # the index-th events frame, if any
                    frames = [
                        j for j, data in enumerate(wire) if isinstance(decode(data), SyncEvents)
                    ]
                    if frames:
                        link.alter(side, frames[index % len(frames)], forge)
                else:
                    link.deliver(side, i, keep=kind == "dup")
            checker.feed(link.trace)
        if finish:
            link.settle()
            checker.feed(link.trace)

    # Faults share one rule, so that they are rarer than edits and syncs.
    @rule(fault=st.sampled_from(["partition", "heal", "crash"]), pair=st.sampled_from(PAIRS))
    def fault(self, fault: str, pair: tuple[str, str]) -> None:
        if fault == "partition":  # cut the link and keep a and b apart
            self.partitioned.add(pair)
            entry = self.links.pop(pair, None)
            if entry is not None:
                entry[0].close()
        elif fault == "heal":
            self.partitioned.discard(pair)
        else:  # crash a: it loses its links and queued work, never its store
            self.replicas[pair[0]].crash()

    @invariant()
    def stored_logs_are_verified_prefixes(self) -> None:
        for name, replica in self.replicas.items():
            for author, chain in replica.store.events.items():
                truth = self.truth[author]
                assert chain == truth[: len(chain)], f"{name} holds a forged or broken chain"
                cps = [c.seq for c in self.checkpoints[author]]
                assert not chain or chain[-1].seq in cps, f"{name} holds half a batch"
                held = replica.store.checkpoints.get(author, [])
                assert all(c in self.checkpoints[author] for c in held)
                key = (name, author)
                assert len(chain) >= self.acked.get(key, 0), f"{name} lost stored events"
                self.acked[key] = len(chain)

    @invariant()
    def links_keep_credit_and_priority(self) -> None:
        for link, checker in self.links.values():
            if not link.closed:
                checker.feed(link.trace)

    def teardown(self) -> None:
        for link, _ in self.links.values():
            link.close()
        for _ in range(len(NAMES)):
            before = {n: r.store.local_log().heads for n, r in self.replicas.items()}
            for a, b in PAIRS:
                link = Link(self.replicas[a], self.replicas[b])
                checker = TraceChecker(self.batch_rank)
                try:
                    link.settle()
                finally:  # a broken store can stall a link: say what broke first
                    self.stored_logs_are_verified_prefixes()
                checker.feed(link.trace)
                assert link.idle
                link.close()
            after = {n: r.store.local_log().heads for n, r in self.replicas.items()}
            if after == before:
                break
        self.stored_logs_are_verified_prefixes()
        for name, replica in self.replicas.items():
            held = {a: chain for a, chain in replica.store.events.items() if chain}
            assert held == {a: c for a, c in self.truth.items() if c}, f"{name} is behind"


SyncMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSyncMachine = SyncMachine.TestCase


@pytest.mark.parametrize("broken", ["trusts_sent_hashes", "stores_half_runs"])
def test_the_machine_catches_a_broken_receiver(broken: str) -> None:
    machine = type(f"Broken_{broken}", (SyncMachine,), {"BROKEN": broken})
    with pytest.raises(AssertionError, match=r"forged or broken chain|half a batch"):
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=200,
                stateful_step_count=20,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
