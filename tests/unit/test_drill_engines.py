"""Both engines carry out the world's plan: the same cases at the same nodes.

Sim mode runs for real. Lab mode runs its real engine (:class:`LabDrill`: the
plan in wall time, polling, conflicts, calls, the drain and the final check) on a
fake fleet whose nodes answer the control ops from one shared store, at a
``time_scale`` that plays a minute of scenario in about a second.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection, Mapping
from typing import Any

from meshdesk import control
from meshdesk.drill import parse_scenario
from meshdesk.drill.lab import LabDrill
from meshdesk.drill.model import Scenario, edge
from meshdesk.drill.sim import Simulation
from meshdesk.drill.world import OpenCase, Pair, World
from meshdesk.errors import UsageError

SEED = 3
#: A minute: consultations at a centre that loses power (deferred cases), then its link
#: to HQ (a conflict pair in lab mode); a laptop revoked mid-way; a call and a join.
TEXT = """
[drill]
name = "engines"
duration = "60s"
tick = "1s"
sample = "5s"
drain = "60s"
[[sites]]
name = "hq"
role = "hq"
departments = ["health"]
[[sites]]
name = "centre"
departments = ["welfare"]
[[sites]]
name = "mobile"
role = "desk"
[[sites.nodes]]
name = "laptop"
[topology]
networks = [["hq", "centre"]]
links = [["mobile", "hq"]]
[[timeline]]
at = "0s"
action = "consultations"
site = "centre"
per_minute = 30
until = "50s"
categories = { medical = 1 }
urgency = { high = 1 }
[[timeline]]
at = "0s"
action = "consultations"
site = "mobile"
per_minute = 20
categories = { supplies = 1 }
[[timeline]]
at = "5s"
action = "power_loss"
node = "centre"
for = "5s"
[[timeline]]
at = "40s"
action = "link_down"
between = ["centre", "hq"]
for = "10s"
[[timeline]]
at = "35s"
action = "revoke"
node = "laptop"
[[timeline]]
at = "52s"
action = "call"
id = "k"
from = "centre"
to = "hq"
duration = "5s"
[[timeline]]
at = "53s"
action = "call_join"
call = "k"
department = "health"
"""


def _scenario() -> Scenario:
    return parse_scenario(TEXT)


def _planned_cases(sc: Scenario, mode: str) -> list[tuple[str, str, str]]:
    world = World(sc, SEED, "sim" if mode == "sim" else "lab")
    plan = world.due(sc.duration) + world.heal(sc.duration + 1)
    return [(a.node, a.category, a.urgency) for a in plan if isinstance(a, OpenCase)]


def test_the_plan_has_deferred_cases_a_revocation_and_a_call() -> None:
    sc = _scenario()
    world = World(sc, SEED, "lab")
    plan = world.due(sc.duration)
    cases = [a for a in plan if isinstance(a, OpenCase)]
    assert any(c.deferred for c in cases)
    assert any(c.refused for c in cases)
    assert _planned_cases(sc, "sim") == _planned_cases(sc, "lab")


def test_sim_mode_writes_the_planned_cases() -> None:
    sc = _scenario()
    sim = Simulation(sc, SEED)
    rec = sim.run()
    written = []
    for case_id, record in rec.cases.items():
        state = sim.nodes[record.node].case_state(case_id)
        assert state is not None
        assert state.category is not None
        written.append((record.node, state.category.value, record.urgency))
    assert written == _planned_cases(sc, "sim")
    assert rec.lost_records == 0
    assert rec.converged


class _Store:
    """What every fake node holds: one store, replicated instantly."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.opened: list[tuple[str, str, str]] = []  # (node, category, urgency)
        self.ids = itertools.count(1)


class FakeNode:
    def __init__(self, name: str, store: _Store, fleet: FakeFleet) -> None:
        self.name = name
        self.alive = True
        self._store = store
        self._fleet = fleet

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        if not self.alive:
            raise control.NodeNotRunning(f"node {self.name} is not running")
        a: Mapping[str, Any] = args or {}
        match op:
            case "case_new":
                case_id = f"c{next(self._store.ids)}"
                self._store.cases[case_id] = {"urgency": a["urgency"], "sets": []}
                self._store.opened.append((self.name, a["category"], a["urgency"]))
                return {"id": case_id}
            case "case_list":  # one page holds them all here
                return {"cases": [{"id": c} for c in self._store.cases], "next": None}
            case "case_show":
                return self._show(a["id"])
            case "case_set":
                case = self._case(a["id"])
                if self._show(a["id"])["conflicts"]:
                    case["sets"] = []  # a set over every live candidate resolves
                else:
                    case["sets"].append((self.name, a["value"]))
                case["urgency"] = a["value"]
                return self._show(a["id"])
            case "digest":
                return {"heads": {}, "digest": f"{len(self._store.cases)} cases"}
            case "peers":
                return [{"name": peer, "state": "linked"} for peer in self._fleet.peers(self.name)]
            case "sync":
                return []
            case "call_start":
                self._fleet.calls.append([self.name, a["peer"]])
                return {"call_id": "k1"}
            case "call_invite":
                self._fleet.calls[-1].append(a["peer"])
                return {}
            case "calls":
                names = self._fleet.calls[-1][1:]
                people = [{"name": n, "state": "connected"} for n in names]
                return [{"call_id": "k1", "state": "active", "participants": people}]
            case "call_hangup":
                return {}
            case "reload_revocations":
                return {}
        raise AssertionError(f"unexpected op {op} {args}")

    def _case(self, case_id: str) -> dict[str, Any]:
        if case_id not in self._store.cases:
            raise UsageError(f"no case {case_id}")
        return self._store.cases[case_id]

    def _show(self, case_id: str) -> dict[str, Any]:
        case = self._case(case_id)
        conflicts = []
        if len({node for node, _ in case["sets"]}) > 1:
            values = [{"value": v} for _, v in reversed(case["sets"])]
            conflicts.append({"field": "urgency", "candidates": values})
        return {"id": case_id, "urgency": case["urgency"], "conflicts": conflicts}


class FakeFleet:
    """A fleet whose network is a set of pairs and whose nodes share one store."""

    prefix = "fake"

    def __init__(self, sc: Scenario) -> None:
        self.store = _Store()
        self._nodes = {n.name: FakeNode(n.name, self.store, self) for n in sc.nodes}
        self.wired: set[Pair] = set()
        self.log: list[tuple[str, ...]] = []
        self.calls: list[list[str]] = []
        self.closed = False

    @property
    def nodes(self) -> Mapping[str, FakeNode]:
        return self._nodes

    def peers(self, name: str) -> list[str]:
        return [
            other
            for other, node in self._nodes.items()
            if other != name and node.alive and edge(name, other) in self.wired
        ]

    async def start(self, pairs: Collection[Pair]) -> None:
        self.wired = set(pairs)

    async def aclose(self) -> None:
        self.closed = True

    async def wire(self, pairs: Collection[Pair]) -> None:
        self.wired = set(pairs)

    async def impair(self, nodes: Collection[str], loss: float, latency: float) -> bool:
        return True

    async def clear_impairments(self) -> None:
        self.log.append(("clear",))

    async def power(self, node: str, on: bool) -> None:
        self._nodes[node].alive = on
        self.log.append(("power", node, "on" if on else "off"))

    async def revoke(self, node: str, reason: str) -> None:
        self.log.append(("revoke", node))


async def test_lab_mode_writes_the_planned_cases() -> None:
    sc = _scenario()
    fleet = FakeFleet(sc)
    # 3 wall seconds of timeline: a poll (each wall second) falls between the centre's
    # power coming back (10 s) and its outage (40 s), so HQ and it hold cases then.
    fast = dataclasses.replace(sc, time_scale=0.05)
    rec = await LabDrill(fast, SEED, fleet).run()
    assert fleet.closed
    assert fleet.store.opened == _planned_cases(sc, "lab")
    assert [(c.node, c.urgency) for c in rec.cases.values()] == [
        (node, urgency) for node, _, urgency in fleet.store.opened
    ]
    assert fleet.log[:3] == [
        ("power", "centre", "off"),
        ("power", "centre", "on"),
        ("revoke", "laptop"),
    ]
    assert fleet.log[-1] == ("clear",)
    assert fleet.calls == [["centre", "hq", "hq"]]
    assert [(c.kind, c.placed) for c in rec.calls] == [("call", True), ("join", True)]
    # Centre's outage got its conflict pair, seen at HQ and resolved.
    [conflict] = rec.conflicts.values()
    assert conflict.site == "centre"
    assert conflict.resolved_s is not None
    assert rec.revoked == ["laptop"]
    assert rec.refused_writes > 0
    assert rec.lost_records == 0
