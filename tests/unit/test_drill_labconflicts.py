"""Lab-mode conflicts against fake nodes that answer the ``case`` control ops.

The real thing (real nodes, a real cut) runs in tests/lab/test_drill_lab.py; here
the bookkeeping is checked step by step: which case is chosen, that the two writes
differ and are made on both sides, that HQ's ``show`` raising a conflict schedules
the resolution a minute later, and that the resolution writes the newest candidate.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from meshdesk.drill._labconflicts import LabConflicts
from meshdesk.drill.labmetrics import NodeView, Snapshot
from meshdesk.drill.metrics import CaseRecord, Recorder
from meshdesk.errors import UsageError


class FakeNode:
    """One node's view of urgency per case: its own last write, or a conflict."""

    def __init__(self, name: str, urgency: dict[str, str]) -> None:
        self.name = name
        self.alive = True
        self.urgency = dict(urgency)
        self.writes: list[tuple[str, str]] = []
        self.conflicts: dict[str, list[str]] = {}  # case -> candidate values, newest first

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        assert args is not None
        case_id = args["id"]
        if case_id not in self.urgency:
            raise UsageError(f"no case {case_id}")
        if op == "case_set":
            value = args["value"]
            assert args["field"] == "urgency"
            self.writes.append((case_id, value))
            self.urgency[case_id] = value
            self.conflicts.pop(case_id, None)  # set writes over every live candidate
        else:
            assert op == "case_show"
        return self.view(case_id)

    def view(self, case_id: str) -> dict[str, object]:
        candidates = self.conflicts.get(case_id)
        conflicts = []
        if candidates:
            values = [{"value": v, "node": "x", "at": "t", "op": "o"} for v in candidates]
            conflicts.append({"field": "urgency", "candidates": values})
        return {"id": case_id, "urgency": self.urgency[case_id], "conflicts": conflicts}


def _conflicts(rec: Recorder) -> LabConflicts:
    return LabConflicts(rec, random.Random(1))


def _recorder() -> Recorder:
    rec = Recorder(["hq", "a", "b"])
    rec.case_created(CaseRecord("a1", "a", "a", 1.0, "high"))
    rec.case_created(CaseRecord("b1", "b", "b", 2.0, "normal"))
    rec.case_created(CaseRecord("a2", "a", "a", 3.0, "low", refused=True))
    return rec


def test_pick_prefers_the_sites_own_cases_and_skips_refused_and_used_ones() -> None:
    conflicts = _conflicts(_recorder())
    both = frozenset({"a1", "b1", "a2"})
    assert conflicts.pick("a", both, both) == "a1"
    assert conflicts.pick("a", frozenset({"b1", "a2"}), both) == "b1"  # any shared case
    assert conflicts.pick("a", frozenset({"a1"}), frozenset({"b1"})) is None
    assert conflicts.pick("a", frozenset({"a2"}), frozenset({"a2"})) is None  # refused


async def test_two_writes_conflict_at_hq_and_are_resolved() -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": "high"})
    hq = FakeNode("hq", {"a1": "high"})
    conflicts = _conflicts(rec)
    await conflicts.write(10.0, "a1", origin, hq)
    [(_, a)] = origin.writes
    [(_, b)] = hq.writes
    assert a != b
    assert "high" not in (a, b)
    assert conflicts.sites() == {"a"}
    assert conflicts.busy
    # Still cut off: HQ shows no conflict, nothing is raised.
    assert await conflicts.check(11.0, hq) == []
    assert rec.conflicts == {}
    # The site is back: HQ holds both writes and shows the conflict.
    hq.conflicts["a1"] = [a, b]
    assert await conflicts.check(30.0, hq) == ["a1"]
    assert await conflicts.check(31.0, hq) == []  # raised once
    assert [(c.site, c.raised_s, c.resolved_s) for c in rec.conflicts.values()] == [
        ("a", 30.0, None)
    ]
    assert await conflicts.resolve(90.0, "a1", hq)
    assert hq.writes[-1] == ("a1", a)  # the newest candidate
    assert rec.conflicts[("a1", "urgency")].resolved_s == 90.0
    assert not conflicts.busy
    assert conflicts.sites() == {"a"}  # once per site and drill


async def test_a_failed_write_is_noted_and_opens_no_pair() -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": "high"})
    hq = FakeNode("hq", {})  # HQ does not hold the case
    conflicts = _conflicts(rec)
    await conflicts.write(10.0, "a1", origin, hq)
    assert not conflicts.busy
    assert any("no case a1" in note for note in rec.notes)


async def test_resolution_fails_while_no_hq_node_runs_or_hq_fails() -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": "high"})
    hq = FakeNode("hq", {"a1": "high"})
    conflicts = _conflicts(rec)
    await conflicts.write(10.0, "a1", origin, hq)
    hq.conflicts["a1"] = ["low", "normal"]
    assert await conflicts.check(20.0, hq) == ["a1"]
    assert await conflicts.check(21.0, None) == []
    assert not await conflicts.resolve(80.0, "a1", None)
    assert not await conflicts.resolve(80.0, "a1", FakeNode("hq", {}))  # HQ answers an error
    assert any("could not resolve" in note for note in rec.notes)
    assert rec.conflicts[("a1", "urgency")].resolved_s is None
    assert await conflicts.resolve(140.0, "a1", hq)
    assert rec.conflicts[("a1", "urgency")].resolved_s == 140.0


@pytest.mark.parametrize("current", ["immediate", "high", "normal", "low"])
async def test_the_two_values_differ_from_each_other_and_from_the_current_one(
    current: str,
) -> None:
    origin = FakeNode("a", {"a1": current})
    hq = FakeNode("hq", {"a1": current})
    await _conflicts(_recorder()).write(0.0, "a1", origin, hq)
    values = {origin.writes[0][1], hq.writes[0][1]}
    assert len(values) == 2
    assert current not in values


def _snap(**held: set[str]) -> Snapshot:
    return Snapshot(10.0, {n: NodeView(frozenset(c), {}, "d") for n, c in held.items()})


async def test_each_cut_off_site_gets_one_pair_from_a_node_that_holds_a_case() -> None:
    rec = _recorder()
    hq = FakeNode("hq", {"a1": "high", "b1": "normal"})
    a = FakeNode("a", {"a1": "high"})
    b = FakeNode("b", {"b1": "normal"})
    b2 = FakeNode("b2", {})
    conflicts = _conflicts(rec)
    snap = _snap(hq={"a1", "b1"}, a={"a1"}, b={"b1"})
    # HQ missing from the last poll: nothing can be chosen.
    await conflicts.cut_off(10.0, hq, {"a": [a]}, _snap(a={"a1"}))
    assert conflicts.pairs == {}
    # a is cut off: it writes its own case with HQ.
    await conflicts.cut_off(12.0, hq, {"a": [a]}, snap)
    assert list(conflicts.pairs) == ["a1"]
    assert [w[0] for w in a.writes] == ["a1"]
    # Cut again later: a has had its pair; b2 did not answer the poll, b writes.
    await conflicts.cut_off(20.0, hq, {"a": [a], "b": [b2, b]}, snap)
    assert list(conflicts.pairs) == ["a1", "b1"]
    assert len(a.writes) == 1
    assert b2.writes == []
    assert [w[0] for w in b.writes] == ["b1"]
