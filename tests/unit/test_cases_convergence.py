"""Property: the fold depends on the set of events only, never on order or duplicates.

Histories come from tests/histories.py: replicas editing a case with the real writer
while they exchange prefixes of their chains, every choice drawn by Hypothesis.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest
from histories import PROPERTY, Scenario, scenarios
from hypothesis import Phase, find, given, settings

from meshdesk.cases.events import CaseOpened, FieldSet
from meshdesk.cases.fold import Event, fold
from meshdesk.cases.model import CaseField
from meshdesk.cases.state import CaseState

fold_module = importlib.import_module("meshdesk.cases.fold")  # the package's `fold` is the function


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
