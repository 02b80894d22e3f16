"""Folding case events into state, and the writer that builds the next event."""

from __future__ import annotations

import random
from collections.abc import Iterable

import msgpack
import pytest

from meshdesk.cases.events import (
    CaseOpened,
    EventKind,
    EventRef,
    FieldSet,
    PersonalSet,
    ReferralStateSet,
)
from meshdesk.cases.fold import CaseWriter, Draft, Event, fold
from meshdesk.cases.hlc import Clock, hlc_wall_ms, make_hlc
from meshdesk.cases.ids import id_wall_ms
from meshdesk.cases.model import (
    CaseField,
    Category,
    ReferralState,
    Status,
    Urgency,
    referral_register,
)
from meshdesk.cases.state import Candidate, CaseState
from meshdesk.errors import SyncError, UsageError
from meshdesk.identity.nodeid import NodeId
from meshdesk.store.records import ZERO_HASH, StoredEvent

A, B, C = (NodeId.from_public_bytes(bytes([i]) * 32).text for i in (1, 2, 3))
NOW = 1_700_000_000_000


class Replica:
    """One node: its chain of authored events and the events it holds."""

    def __init__(self, author: str, op: str, skew_ms: int = 0) -> None:
        self.author = author
        self.writer = CaseWriter(op, Clock(), random.Random(author))
        self.skew_ms = skew_ms
        self.seq = 0
        self.events: dict[EventRef, Event] = {}

    def write(self, draft: Draft) -> Event:
        self.seq += 1
        event = draft.event(self.author, self.seq)
        self.events[event.ref] = event
        return event

    def receive(self, events: Iterable[Event]) -> None:
        for event in events:
            self.writer.clock.observe(event.hlc, NOW + self.skew_ms)
            self.events[event.ref] = event

    def state(self) -> CaseState:
        return fold(self.events.values())


def opened_case(*replicas: Replica, **fields: object) -> Event:
    """The first replica opens a case; every replica receives the opening."""
    args: dict[str, object] = {"site": "横手南小学校", "category": "medical", "urgency": "high"}
    args.update(fields)
    event = replicas[0].write(replicas[0].writer.open_case(wall_ms=NOW, **args))  # type: ignore[arg-type]
    for replica in replicas[1:]:
        replica.receive([event])
    return event


def test_single_writer_sequence() -> None:
    a = Replica(A, "佐藤 花子")
    w = a.writer
    opened = opened_case(a, consent=["長寿支援課"], sealed=b"p1")
    a.write(w.set_field(a.state(), "urgency", "immediate", wall_ms=NOW + 1))
    a.write(w.set_status(a.state(), "in_progress", wall_ms=NOW + 2))
    a.write(w.set_field(a.state(), CaseField.DEPARTMENT, "福祉課", wall_ms=NOW + 3))
    a.write(w.add_note(a.state(), b"note", wall_ms=NOW + 4))
    a.write(w.refer(a.state(), "長寿支援課", "介護認定の申請", wall_ms=NOW + 5))
    rid = a.state().referrals[0].referral_id
    a.write(w.set_referral_state(a.state(), rid, "accepted", wall_ms=NOW + 6))
    a.write(w.add_consent(a.state(), "子育て支援課", wall_ms=NOW + 7))
    a.write(
        w.log_call(
            a.state(),
            participants=[A, B, A],
            started_hlc=make_hlc(NOW + 8),
            ended_hlc=make_hlc(NOW + 9),
            duration_s=1,
            wall_ms=NOW + 9,
        )
    )
    a.write(w.set_personal(a.state(), b"p2", wall_ms=NOW + 10))
    a.write(w.grant_keys(a.state(), b"g", wall_ms=NOW + 11))

    state = a.state()
    assert state.opened
    assert state.id == opened.case_id
    assert id_wall_ms(state.id) == NOW
    assert (state.created_hlc, state.origin, state.site) == (opened.hlc, A, "横手南小学校")
    assert (state.category, state.urgency, state.status) == (
        Category.MEDICAL,
        Urgency.IMMEDIATE,
        Status.IN_PROGRESS,
    )
    assert state.department == "福祉課"
    assert state.consent == ("子育て支援課", "長寿支援課")
    assert [n.sealed for n in state.notes] == [b"note"]
    assert [(r.department, r.reason, r.state) for r in state.referrals] == [
        ("長寿支援課", "介護認定の申請", ReferralState.ACCEPTED)
    ]
    assert state.calls[0].participants == (A, B)
    assert state.personal_sealed == b"p2"
    assert [g.grants for g in state.grants] == [b"g"]
    assert state.conflicts == ()
    assert [h.kind for h in state.history] == [
        EventKind(k) for k in (1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9)
    ]
    assert {(h.author, h.op) for h in state.history} == {(A, "佐藤 花子")}
    hlcs = [h.hlc for h in state.history]
    assert hlcs == sorted(hlcs)
    assert len(set(hlcs)) == len(hlcs)
    assert state.heads("urgency") == (EventRef(A, 2),)


def test_two_concurrent_writes_conflict_with_both_candidates() -> None:
    a, b = Replica(A, "佐藤"), Replica(B, "田中")
    opened_case(a, b)
    ea = a.write(a.writer.set_field(a.state(), "urgency", "immediate", wall_ms=NOW + 5))
    eb = b.write(b.writer.set_field(b.state(), "urgency", "low", wall_ms=NOW + 5))
    a.receive([eb])
    b.receive([ea])
    state = a.state()
    assert state == b.state()
    (conflict,) = state.conflicts
    assert conflict.field == "urgency"
    # Same HLC: the author breaks the tie, and both candidates stay visible.
    assert ea.hlc == eb.hlc
    assert B > A
    assert conflict.candidates == (
        Candidate(Urgency.LOW, B, eb.hlc, "田中"),
        Candidate(Urgency.IMMEDIATE, A, ea.hlc, "佐藤"),
    )
    assert state.urgency is Urgency.LOW
    assert state.heads("urgency") == (ea.ref, eb.ref)
    assert state.conflict("urgency") is conflict
    assert state.conflict("status") is None


def test_concurrent_writes_of_the_same_value_are_no_conflict() -> None:
    a, b = Replica(A, "佐藤"), Replica(B, "田中")
    opened_case(a, b)
    ea = a.write(a.writer.set_field(a.state(), "category", "housing", wall_ms=NOW + 5))
    eb = b.write(b.writer.set_field(b.state(), "category", "housing", wall_ms=NOW + 9))
    a.receive([eb])
    state = a.state()
    assert state.conflicts == ()
    assert state.category is Category.HOUSING
    assert state.heads("category") == (ea.ref, eb.ref)


def test_resolution_clears_the_conflict_only_when_it_saw_every_candidate() -> None:
    a, b, c = Replica(A, "佐藤"), Replica(B, "田中"), Replica(C, "鈴木")
    opened_case(a, b, c)
    ea = a.write(a.writer.set_status(a.state(), "resolved", wall_ms=NOW + 5))
    eb = b.write(b.writer.set_status(b.state(), "referred", wall_ms=NOW + 6))
    # C saw only A's write: its edit supersedes A's, B's stays live.
    c.receive([ea])
    ec = c.write(c.writer.set_status(c.state(), "closed", wall_ms=NOW + 7))
    a.receive([eb, ec])
    state = a.state()
    assert [cand.value for cand in state.conflicts[0].candidates] == ["closed", "referred"]
    assert state.heads("status") == tuple(sorted([eb.ref, ec.ref]))

    with pytest.raises(UsageError, match="category has no conflict"):
        a.writer.resolve_conflict(state, "category", "other", wall_ms=NOW + 8)
    fix = a.write(a.writer.resolve_conflict(state, "status", "referred", wall_ms=NOW + 8))
    assert fix.payload == FieldSet("佐藤", CaseField.STATUS, "referred", state.heads("status"))
    state = a.state()
    assert state.conflicts == ()
    assert state.status is Status.REFERRED
    assert state.heads("status") == (fix.ref,)


def test_add_only_sets_merge() -> None:
    a, b = Replica(A, "佐藤"), Replica(B, "田中")
    opened_case(a, b, consent=["福祉課"])
    for r in (a, b):
        r.write(r.writer.add_note(r.state(), r.author.encode(), wall_ms=NOW + 1))
        r.write(r.writer.refer(r.state(), f"課{r.author[:2]}", "理由", wall_ms=NOW + 2))
        r.write(r.writer.add_consent(r.state(), f"課{r.author[:2]}", wall_ms=NOW + 3))
        r.write(
            r.writer.log_call(
                r.state(),
                participants=[r.author],
                started_hlc=0,
                ended_hlc=None,
                duration_s=0,
                wall_ms=NOW + 4,
            )
        )
    a.receive(b.events.values())
    b.receive(a.events.values())
    state = a.state()
    assert state == b.state()
    assert state.conflicts == ()
    assert sorted(n.sealed for n in state.notes) == sorted([A.encode(), B.encode()])
    assert len(state.referrals) == 2
    assert len(state.calls) == 2
    assert state.consent == tuple(sorted(["福祉課", f"課{A[:2]}", f"課{B[:2]}"]))


def test_case_opened_arriving_last_folds_like_in_order() -> None:
    a, b = Replica(A, "佐藤"), Replica(B, "田中")
    opened = opened_case(a, b)
    later = [
        b.write(b.writer.set_field(b.state(), "urgency", "low", wall_ms=NOW + 1)),
        b.write(b.writer.refer(b.state(), "税務課", "罹災証明", wall_ms=NOW + 2)),
    ]
    rid = b.state().referrals[0].referral_id
    later.append(b.write(b.writer.set_referral_state(b.state(), rid, "done", wall_ms=NOW + 3)))

    early = fold(later)
    assert not early.opened
    assert (early.created_hlc, early.origin, early.site, early.category) == (None,) * 4
    assert early.urgency is Urgency.LOW
    assert early.status is None
    assert early.referrals[0].state is ReferralState.DONE
    with pytest.raises(UsageError, match="is incomplete here"):
        a.writer.set_field(early, "urgency", "high", wall_ms=NOW + 4)

    complete = fold([*later, opened])
    assert complete == b.state()
    assert complete.opened
    assert complete.conflicts == ()
    assert complete.urgency is Urgency.LOW


def test_referral_state_before_its_referral_is_held_back() -> None:
    a = Replica(A, "佐藤")
    opened = opened_case(a)
    added = a.write(a.writer.refer(a.state(), "税務課", "罹災証明", wall_ms=NOW + 1))
    rid = a.state().referrals[0].referral_id
    state_event = a.write(a.writer.set_referral_state(a.state(), rid, "declined", wall_ms=NOW + 2))
    partial = fold([opened, state_event])
    assert partial.referrals == ()
    assert partial.conflicts == ()
    assert fold([opened, state_event, added]).referrals[0].state is ReferralState.DECLINED


def test_referral_and_personal_conflicts_are_resolvable() -> None:
    a, b = Replica(A, "佐藤"), Replica(B, "田中")
    opened_case(a, b, sealed=b"v1")
    a.write(a.writer.refer(a.state(), "税務課", "相談", wall_ms=NOW + 1))
    b.receive(a.events.values())
    rid = a.state().referrals[0].referral_id
    ea = [
        a.write(a.writer.set_referral_state(a.state(), rid, "accepted", wall_ms=NOW + 2)),
        a.write(a.writer.set_personal(a.state(), b"va", wall_ms=NOW + 2)),
    ]
    b.write(b.writer.set_referral_state(b.state(), rid, "declined", wall_ms=NOW + 2))
    b.write(b.writer.set_personal(b.state(), b"vb", wall_ms=NOW + 2))
    b.receive(ea)
    state = b.state()
    assert [c.field for c in state.conflicts] == ["personal", referral_register(rid)]
    assert state.personal_sealed == b"vb"  # B > A at the same HLC
    assert state.referrals[0].state is ReferralState.DECLINED
    b.write(b.writer.resolve_conflict(state, "personal", b"merged", wall_ms=NOW + 3))
    b.write(b.writer.resolve_conflict(b.state(), referral_register(rid), "done", wall_ms=NOW + 3))
    state = b.state()
    assert state.conflicts == ()
    assert state.personal_sealed == b"merged"
    assert state.referrals[0].state is ReferralState.DONE


def test_duplicates_and_forks_fold_deterministically() -> None:
    a = Replica(A, "佐藤")
    opened = opened_case(a)
    e1 = a.write(a.writer.set_field(a.state(), "urgency", "low", wall_ms=NOW + 1))
    fork = Event(e1.case_id, A, e1.seq, e1.hlc, FieldSet("偽", CaseField.URGENCY, "normal"))
    assert fold([opened, e1, e1, opened]) == fold([opened, e1])
    assert fold([opened, e1, fork]) == fold([fork, opened, e1])


def test_hostile_seen_lists_cannot_blank_a_register() -> None:
    a = Replica(A, "佐藤")
    opened = opened_case(a)
    case = opened.case_id
    # X claims to have seen Y, which is later than X: impossible, so ignored.
    x = Event(case, B, 1, opened.hlc + 1, FieldSet("x", CaseField.URGENCY, "low", ((C, 1),)))
    y = Event(case, C, 1, opened.hlc + 2, FieldSet("y", CaseField.URGENCY, "normal", ((B, 1),)))
    state = fold([opened, x, y])
    assert state.urgency is Urgency.NORMAL
    assert [c.value for c in state.conflicts[0].candidates] == ["normal", "high"]
    # A write listing itself supersedes nothing.
    z = Event(case, B, 1, opened.hlc + 1, FieldSet("z", CaseField.URGENCY, "low", ((B, 1),)))
    assert [c.value for c in fold([opened, z]).conflicts[0].candidates] == ["low", "high"]


def test_fold_refuses_nothing_and_mixed_cases() -> None:
    a, b = Replica(A, "佐藤"), Replica(B, "田中")
    with pytest.raises(ValueError, match="at least one event"):
        fold([])
    with pytest.raises(ValueError, match="2 cases"):
        fold([opened_case(a), opened_case(b)])


def test_heads_names_registers_only() -> None:
    a = Replica(A, "佐藤")
    opened_case(a)
    with pytest.raises(ValueError, match="not a case register"):
        a.state().heads("urgencyy")
    assert a.state().heads(referral_register("0190f1c2-7a3b-7c4d-8e5f-0123456789ab")) == ()


# -- the writer -------------------------------------------------------------------------


def test_writer_refuses_bad_input_and_changes_nothing() -> None:
    a = Replica(A, "佐藤")
    opened_case(a)
    state, w = a.state(), a.writer
    last = w.clock.last
    refusals = [
        (lambda: w.set_status(state, "new", wall_ms=NOW), "status is already new"),
        (lambda: w.set_status(state, "done", wall_ms=NOW), "'done' is not one of new, in_"),
        (lambda: w.set_field(state, "owner", "x", wall_ms=NOW), "'owner' is not one of"),
        (lambda: w.set_field(state, "urgency", "high", wall_ms=NOW), "urgency is already high"),
        (lambda: w.set_field(state, "department", None, wall_ms=NOW), "already unassigned"),
        (lambda: w.set_field(state, "category", "food", wall_ms=NOW), "cannot be 'food'"),
        (lambda: w.refer(state, "", "x", wall_ms=NOW), "department must not be empty"),
        (lambda: w.set_referral_state(state, "x", "done", wall_ms=NOW), "no referral 'x'"),
        (lambda: w.add_note(state, b"", wall_ms=NOW), "sealed must be 1 to"),
        (lambda: w.resolve_conflict(state, "status", "new", wall_ms=NOW), "no conflict"),
    ]
    for call, message in refusals:
        with pytest.raises(UsageError, match=message):
            call()
    assert w.clock.last == last


def test_writer_status_goes_through_check_transition() -> None:
    a = Replica(A, "佐藤")
    opened_case(a)
    a.write(a.writer.set_field(a.state(), "status", "resolved", wall_ms=NOW + 1))
    with pytest.raises(UsageError) as info:
        a.writer.set_field(a.state(), "status", "referred", wall_ms=NOW + 2)
    assert str(info.value) == "cannot go from resolved to referred; allowed: closed, in_progress"
    a.write(a.writer.set_status(a.state(), Status.IN_PROGRESS, wall_ms=NOW + 2))  # reopen
    assert a.state().status is Status.IN_PROGRESS


def test_writer_fills_seen_and_sorts_after_the_state() -> None:
    a = Replica(A, "佐藤")
    opened = opened_case(a)
    # B's wall clock is an hour behind and its clock never observed A's event.
    writer = CaseWriter("田中", Clock())
    draft = writer.set_field(fold([opened]), "department", " 福祉課 ", wall_ms=NOW - 3_600_000)
    assert draft.hlc > opened.hlc
    assert draft.payload == FieldSet("田中", CaseField.DEPARTMENT, "福祉課", (opened.ref,))
    assert draft.kind is EventKind.FIELD_SET
    assert msgpack.unpackb(draft.body)["value"] == "福祉課"
    unassign = writer.set_field(fold([opened, draft.event(B, 1)]), "department", None, wall_ms=NOW)
    assert unassign.payload.value == ""  # type: ignore[union-attr]
    assert fold([opened, draft.event(B, 1), unassign.event(B, 2)]).department is None


def test_open_case_draft() -> None:
    w = CaseWriter(" 佐藤 ", Clock(), random.Random(1))
    assert w.op == "佐藤"
    draft = w.open_case(
        wall_ms=NOW,
        site="第一避難所",
        category=Category.SUPPLIES,
        urgency="normal",
        consent=["b課", " a課", "b課"],
        department="",
    )
    assert hlc_wall_ms(draft.hlc) == id_wall_ms(draft.case_id) == NOW
    assert draft.payload == CaseOpened(
        "佐藤", "第一避難所", Category.SUPPLIES, Urgency.NORMAL, ("a課", "b課"), None, None
    )
    with pytest.raises(UsageError, match="operator name must not be empty"):
        CaseWriter("  ", Clock())


def test_event_from_stored() -> None:
    a = Replica(A, "佐藤")
    opened = opened_case(a)
    stored = StoredEvent(
        A, 1, opened.hlc, opened.case_id, 1, opened.payload.encode(), ZERO_HASH, bytes(32)
    )
    assert Event.from_stored(stored) == opened
    for change, message in [
        ({"case_id": None}, "no valid case id"),
        ({"case_id": "case-1"}, "no valid case id"),
        ({"kind": 42}, "unknown case event kind 42"),
        ({"body": b"\x80"}, "CASE_OPENED body lacks"),
    ]:
        fields = {**{f: getattr(stored, f) for f in stored.__slots__}, **change}
        with pytest.raises(SyncError, match=message):
            Event.from_stored(StoredEvent(**fields))  # type: ignore[arg-type]


def test_personal_set_and_referral_state_drafts_list_heads() -> None:
    a = Replica(A, "佐藤")
    opened = opened_case(a, sealed=b"v1")
    draft = a.writer.set_personal(a.state(), b"v2", wall_ms=NOW + 1)
    assert draft.payload == PersonalSet("佐藤", b"v2", (opened.ref,))
    added = a.write(a.writer.refer(a.state(), "税務課", "相談", wall_ms=NOW + 2))
    rid = a.state().referrals[0].referral_id
    with pytest.raises(UsageError, match="already requested"):
        a.writer.set_referral_state(a.state(), rid, "requested", wall_ms=NOW + 3)
    draft = a.writer.set_referral_state(a.state(), rid, "accepted", wall_ms=NOW + 3)
    assert draft.payload == ReferralStateSet("佐藤", rid, ReferralState.ACCEPTED, (added.ref,))
