"""Property: the fold depends on the set of events only, never on order or duplicates.

Histories are generated the way a mesh makes them: three replicas edit a case with
the real :class:`CaseWriter` (so ``seen`` lists are what nodes would write) while
they exchange per-author prefixes of their chains, so each replica sees a different
subset at every step. Every choice (edits, values, which replica syncs with which,
orderings) is drawn by Hypothesis.
"""

from __future__ import annotations

import contextlib
import importlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from meshdesk.cases.events import CaseOpened, EventRef, FieldSet
from meshdesk.cases.fold import CaseWriter, Draft, Event, fold
from meshdesk.cases.hlc import Clock, make_hlc
from meshdesk.cases.model import CaseField, Category, Status, Urgency
from meshdesk.cases.state import CaseState
from meshdesk.errors import UsageError
from meshdesk.identity.nodeid import NodeId

fold_module = importlib.import_module("meshdesk.cases.fold")  # the package's `fold` is the function

AUTHORS = [NodeId.from_public_bytes(bytes([i]) * 32).text for i in (1, 2, 3)]
OPS = ["佐藤", "田中", "Nguyen"]
DEPARTMENTS = ["福祉課", "税務課", "長寿支援課"]
NOW = 1_700_000_000_000
#: Operator actions, scalar edits weighted up so that concurrent edits collide.
ACTIONS = [
    *("field", "field", "field", "status", "status", "note", "refer"),
    *("referral_state", "consent", "call", "personal", "grant"),
]
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Sim:
    """One replica: its writer, its chain, the events it holds."""

    def __init__(self, index: int, skew_ms: int) -> None:
        self.author = AUTHORS[index]
        self.writer = CaseWriter(OPS[index], Clock(), random.Random(index))
        self.skew_ms = skew_ms
        self.seq = 0
        self.events: dict[EventRef, Event] = {}

    def write(self, draft: Draft) -> None:
        self.seq += 1
        event = draft.event(self.author, self.seq)
        self.events[event.ref] = event

    def receive_prefixes(self, source: Sim, cuts: Sequence[int], wall_ms: int) -> None:
        """Take, per author, the first ``cuts[i]`` events ``source`` holds (a sync run)."""
        for author, cut in zip(AUTHORS, cuts, strict=True):
            chain = sorted((e for e in source.events.values() if e.author == author), key=_seq)
            for event in chain[:cut]:
                self.writer.clock.observe(event.hlc, wall_ms + self.skew_ms)
                self.events[event.ref] = event


def _seq(event: Event) -> int:
    return event.seq


def _edit(draw: Any, sim: Sim, state: CaseState, wall_ms: int) -> Draft:
    """One operator action, with arguments drawn from the current state."""
    w = sim.writer
    if state.conflicts and draw(st.booleans()):
        conflict = draw(st.sampled_from(state.conflicts))
        value = draw(st.sampled_from(conflict.candidates)).value
        return w.resolve_conflict(state, conflict.field, value, wall_ms=wall_ms)
    action = draw(st.sampled_from(ACTIONS))
    if action == "field":
        field = draw(st.sampled_from(["category", "urgency", "department"]))
        values: list[Any] = {
            "category": list(Category),
            "urgency": list(Urgency),
            "department": [*DEPARTMENTS, None],
        }[field]
        return w.set_field(state, field, draw(st.sampled_from(values)), wall_ms=wall_ms)
    if action == "status":
        return w.set_status(state, draw(st.sampled_from(list(Status))), wall_ms=wall_ms)
    if action == "refer":
        department = draw(st.sampled_from(DEPARTMENTS))
        return w.refer(state, department, "相談内容", wall_ms=wall_ms)
    if action == "referral_state" and state.referrals:
        referral = draw(st.sampled_from(state.referrals))
        new = draw(st.sampled_from(["requested", "accepted", "declined", "done"]))
        return w.set_referral_state(state, referral.referral_id, new, wall_ms=wall_ms)
    if action == "consent":
        return w.add_consent(state, draw(st.sampled_from(DEPARTMENTS)), wall_ms=wall_ms)
    if action == "call":
        participants = draw(st.lists(st.sampled_from(AUTHORS), min_size=1, unique=True))
        started = make_hlc(wall_ms - 1000)
        return w.log_call(
            state,
            participants=participants,
            started_hlc=started,
            ended_hlc=started + 5,
            duration_s=1,
            wall_ms=wall_ms,
        )
    if action == "personal":
        return w.set_personal(state, draw(st.binary(min_size=1, max_size=3)), wall_ms=wall_ms)
    if action == "grant":
        return w.grant_keys(state, b"grant", wall_ms=wall_ms)
    return w.add_note(state, draw(st.binary(min_size=1, max_size=3)), wall_ms=wall_ms)


@dataclass(frozen=True)
class Scenario:
    """Event sets (one per replica, and their union), each with a shuffled copy."""

    sets: tuple[tuple[Event, ...], ...]
    reordered: tuple[tuple[Event, ...], ...]


@st.composite
def scenarios(draw: Any, max_steps: int = 40) -> Scenario:
    sims = [Sim(i, draw(st.integers(-5_000, 5_000))) for i in range(len(AUTHORS))]
    wall = NOW
    sims[0].write(
        sims[0].writer.open_case(
            wall_ms=wall,
            site="横手南小学校",
            category=draw(st.sampled_from(list(Category))),
            urgency=draw(st.sampled_from(list(Urgency))),
        )
    )
    for sim in sims[1:]:
        if draw(st.integers(0, 3)):  # mostly, but not always, the opening spreads first
            sim.receive_prefixes(sims[0], [1, 0, 0], wall)
    for _ in range(draw(st.integers(3, max_steps))):
        wall += draw(st.integers(0, 40))
        sim = draw(st.sampled_from(sims))
        if draw(st.integers(0, 2)) == 0:
            source = draw(st.sampled_from(sims))
            cuts = [draw(st.sampled_from([0, 0, 1, 2, 3, 1000])) for _ in AUTHORS]
            sim.receive_prefixes(source, cuts, wall)
        elif sim.events:
            # A refused edit (a no-op, an invalid transition) changes nothing.
            with contextlib.suppress(UsageError):
                sim.write(_edit(draw, sim, fold(sim.events.values()), wall + sim.skew_ms))
    union: dict[EventRef, Event] = {}
    for sim in sims:
        union.update(sim.events)
    sets = [tuple(s.events.values()) for s in sims if s.events] + [tuple(union.values())]
    # The same history before its CASE_OPENED arrived: an incomplete case.
    unopened = tuple(e for e in union.values() if not isinstance(e.payload, CaseOpened))
    sets += [unopened] if unopened else []
    reordered = []
    for events in sets:
        shuffled = draw(st.permutations(events))
        duplicates = draw(st.lists(st.sampled_from(events), max_size=5))
        reordered.append((*shuffled, *duplicates))
    return Scenario(tuple(sets), tuple(reordered))


def fold_is_order_independent(scenario: Scenario) -> bool:
    """The property, against whatever ``fold`` the fold module holds right now."""
    current: Callable[[Iterable[Event]], CaseState] = fold_module.fold
    return all(
        current(events) == current(again)
        for events, again in zip(scenario.sets, scenario.reordered, strict=True)
    )


@PROPERTY
@given(scenarios())
def test_fold_is_invariant_under_permutation_and_duplication(scenario: Scenario) -> None:
    assert fold_is_order_independent(scenario)


def _value_of(event: Event, field: CaseField) -> object:
    p = event.payload
    if isinstance(p, FieldSet):
        return p.value or None
    assert isinstance(p, CaseOpened)
    return {"category": p.category, "urgency": p.urgency, "status": "new"}.get(field, p.department)


@PROPERTY
@given(scenarios())
def test_concurrent_values_are_never_silently_dropped(scenario: Scenario) -> None:
    for events in scenario.sets:
        state = fold(events)
        by_ref = {e.ref: e for e in events}
        for field in CaseField:
            heads = [by_ref[ref] for ref in state.heads(field)]
            if not heads:
                continue
            values = {_value_of(e, field) for e in heads}
            conflict = state.conflict(field)
            assert (conflict is not None) == (len(values) > 1)
            if conflict is not None:
                assert {c.value for c in conflict.candidates} == values
            newest = max(heads, key=lambda e: (e.hlc, e.author))
            assert getattr(state, field) == _value_of(newest, field)


def _last_in_input_order_wins(events: Iterable[Event]) -> CaseState:
    """A deliberately broken fold: the last FIELD_SET in input order wins."""
    events = list(events)
    state = fold(events)
    for e in events:
        if isinstance(e.payload, FieldSet) and e.payload.field is not CaseField.DEPARTMENT:
            state = replace(state, **{e.payload.field.value: e.payload.value})
    return state


# A counterexample of a broken fold can be a large scenario; its repr size is no concern.
@pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)
def test_the_property_catches_an_order_dependent_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold_module, "fold", _last_in_input_order_wins)
    counterexample = find(
        scenarios(),
        lambda s: not fold_is_order_independent(s),
        # No shrinking: any counterexample proves the point, and shrinking is slow.
        settings=settings(max_examples=1000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert not fold_is_order_independent(counterexample)
    monkeypatch.undo()
    assert fold_is_order_independent(counterexample)
