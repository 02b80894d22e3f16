"""Lab-mode conflicts against fake nodes that answer the ``case`` control ops.

The real thing (real nodes, a real cut) runs in tests/lab/test_drill_lab.py; here
the bookkeeping is checked step by step: which case is chosen, that the two writes
differ and are made on both sides, that HQ's ``show`` raising a conflict schedules
the resolution a minute later, and that the resolution writes the newest candidate.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import pytest

from meshdesk.drill._labconflicts import RESOLVE_AFTER_S, LabConflicts, reachable
from meshdesk.drill._labnodes import LabNode
from meshdesk.drill.labmetrics import NodeView, Snapshot
from meshdesk.drill.metrics import CaseRecord, Recorder
from meshdesk.drill.model import NodeSpec
from meshdesk.errors import UsageError

Step = Callable[[], Awaitable[None]]


class FakeNode:
    """One node's view of urgency per case: its own last write, or a conflict."""

    def __init__(self, name: str, urgency: dict[str, str], site: str = "") -> None:
        self.name = name
        self.spec = NodeSpec(name, site or name, "center")
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


class Engine:
    """The bits of the lab engine LabConflicts uses: a clock, HQ, a step queue."""

    def __init__(self, hq: FakeNode | None, *others: FakeNode) -> None:
        self.t = 0.0
        self.hq = hq
        self.nodes = {n.name: cast(LabNode, n) for n in (hq, *others) if n is not None}
        self.steps: list[tuple[float, Step]] = []

    def conflicts(self, rec: Recorder) -> LabConflicts:
        return LabConflicts(
            rec,
            random.Random(1),
            now=lambda: self.t,
            hq=lambda: cast(LabNode, self.hq),
            schedule=lambda t, step: self.steps.append((t, step)),
            nodes=self.nodes,
            writing={"a", "b"},
        )


def _recorder() -> Recorder:
    rec = Recorder(["hq", "a", "b"])
    rec.case_created(CaseRecord("a1", "a", "a", 1.0, "high"))
    rec.case_created(CaseRecord("b1", "b", "b", 2.0, "normal"))
    rec.case_created(CaseRecord("a2", "a", "a", 3.0, "low", refused=True))
    return rec


def test_pick_prefers_the_sites_own_cases_and_skips_refused_and_used_ones() -> None:
    rec = _recorder()
    conflicts = Engine(None).conflicts(rec)
    both = frozenset({"a1", "b1", "a2"})
    assert conflicts.pick("a", both, both) == "a1"
    assert conflicts.pick("a", frozenset({"b1", "a2"}), both) == "b1"  # any shared case
    assert conflicts.pick("a", frozenset({"a1"}), frozenset({"b1"})) is None
    assert conflicts.pick("a", frozenset({"a2"}), frozenset({"a2"})) is None  # refused


async def test_two_writes_conflict_at_hq_and_are_resolved_a_minute_later() -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": "high"})
    hq = FakeNode("hq", {"a1": "high"})
    engine = Engine(hq)
    conflicts = engine.conflicts(rec)
    await conflicts.write(10.0, "a1", cast(LabNode, origin), cast(LabNode, hq))
    [(_, a)] = origin.writes
    [(_, b)] = hq.writes
    assert a != b
    assert "high" not in (a, b)
    assert conflicts.sites() == {"a"}
    assert conflicts.busy
    # Still cut off: HQ shows no conflict, nothing is raised.
    await conflicts.check(11.0)
    assert rec.conflicts == {}
    assert engine.steps == []
    # The site is back: HQ holds both writes and shows the conflict.
    hq.conflicts["a1"] = [a, b]
    await conflicts.check(30.0)
    await conflicts.check(31.0)  # raised once
    assert [(c.site, c.raised_s, c.resolved_s) for c in rec.conflicts.values()] == [
        ("a", 30.0, None)
    ]
    [(when, step)] = engine.steps
    assert when == 30.0 + RESOLVE_AFTER_S
    engine.t = when
    await step()
    assert hq.writes[-1] == ("a1", a)  # the newest candidate
    assert rec.conflicts[("a1", "urgency")].resolved_s == when
    assert not conflicts.busy
    assert conflicts.sites() == {"a"}  # once per site and drill


async def test_a_failed_write_is_noted_and_opens_no_pair() -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": "high"})
    hq = FakeNode("hq", {})  # HQ does not hold the case
    conflicts = Engine(hq).conflicts(rec)
    await conflicts.write(10.0, "a1", cast(LabNode, origin), cast(LabNode, hq))
    assert not conflicts.busy
    assert any("no case a1" in note for note in rec.notes)


async def test_resolution_waits_while_no_hq_node_runs() -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": "high"})
    hq = FakeNode("hq", {"a1": "high"})
    engine = Engine(hq)
    conflicts = engine.conflicts(rec)
    await conflicts.write(10.0, "a1", cast(LabNode, origin), cast(LabNode, hq))
    hq.conflicts["a1"] = ["low", "normal"]
    await conflicts.check(20.0)
    [(when, step)] = engine.steps
    engine.t, engine.hq = when, None
    await step()
    assert rec.conflicts[("a1", "urgency")].resolved_s is None
    [_, (later, retry)] = engine.steps
    assert later == when + RESOLVE_AFTER_S
    engine.t, engine.hq = later, hq
    await retry()
    assert rec.conflicts[("a1", "urgency")].resolved_s == later


@pytest.mark.parametrize("current", ["immediate", "high", "normal", "low"])
async def test_the_two_values_differ_from_each_other_and_from_the_current_one(
    current: str,
) -> None:
    rec = _recorder()
    origin = FakeNode("a", {"a1": current})
    hq = FakeNode("hq", {"a1": current})
    await Engine(hq).conflicts(rec).write(0.0, "a1", cast(LabNode, origin), cast(LabNode, hq))
    values = {origin.writes[0][1], hq.writes[0][1]}
    assert len(values) == 2
    assert current not in values


def test_reachable_follows_relays() -> None:
    pairs = [("hq", "a"), ("a", "c"), ("b", "d")]
    assert reachable(pairs, "hq") == {"hq", "a", "c"}
    assert reachable([], "hq") == {"hq"}


def _snap(**held: set[str]) -> Snapshot:
    return Snapshot(10.0, {n: NodeView(frozenset(c), {}, "d") for n, c in held.items()})


async def test_only_sites_cut_off_from_hq_get_a_pair_and_only_once() -> None:
    rec = _recorder()
    hq = FakeNode("hq", {"a1": "high", "b1": "normal"}, site="hq")
    a = FakeNode("a", {"a1": "high"})
    b = FakeNode("b", {"b1": "normal"})
    engine = Engine(hq, a, b)
    conflicts = engine.conflicts(rec)
    snap = _snap(hq={"a1", "b1"}, a={"a1"}, b={"b1"})
    # b reaches HQ through a; a is linked directly: nobody is cut off.
    await conflicts.cut_off(10.0, [("hq", "a"), ("a", "b")], snap, revoked=())
    assert conflicts.pairs == {}
    # a is cut off, b is still linked to HQ: only a writes (its own case).
    await conflicts.cut_off(12.0, [("hq", "b")], snap, revoked=())
    assert list(conflicts.pairs) == ["a1"]
    assert [w[0] for w in a.writes] == ["a1"]
    assert b.writes == []
    # Cut again later: a has had its pair; b is revoked, so it writes none.
    await conflicts.cut_off(20.0, [], snap, revoked={"b"})
    assert list(conflicts.pairs) == ["a1"]
    # A node that is down writes nothing either.
    b.alive = False
    await conflicts.cut_off(30.0, [], snap, revoked=())
    assert list(conflicts.pairs) == ["a1"]
