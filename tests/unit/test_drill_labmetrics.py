"""Lab-mode judging on fabricated polls: what real nodes report becomes the verdict.

The lab engine itself needs root and namespaces (tests/lab/test_drill_lab.py); here
the measuring and the final check are fed snapshots by hand, including the failure
cases a real run makes only by accident: a node stopped before the drain, a store
that diverged, a revoked node's write that slipped through.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from meshdesk.drill import _labops as ops
from meshdesk.drill import lab as lab_mode
from meshdesk.drill import parse_scenario
from meshdesk.drill.labmetrics import NodeView, Snapshot, final_check, observe, quiet
from meshdesk.drill.metrics import CaseRecord, Recorder, summarise
from meshdesk.drill.model import Scenario
from meshdesk.drill.run import run_drill
from meshdesk.errors import DrillError

SCENARIOS = Path(__file__).resolve().parents[2] / "field-kit" / "scenarios"
TEXT = """
[drill]
name = "three"
duration = "60s"
[[sites]]
name = "hq"
role = "hq"
[[sites]]
name = "a"
[[sites]]
name = "b"
[topology]
networks = [["hq", "a", "b"]]
"""


def _scenario() -> Scenario:
    return parse_scenario(TEXT)


def _view(cases: set[str], heads: dict[str, int], digest: str = "d", **kw: object) -> NodeView:
    return NodeView(frozenset(cases), heads, digest, **kw)  # type: ignore[arg-type]


def _recorder(sc: Scenario) -> Recorder:
    rec = Recorder(sc.sites)
    rec.case_created(CaseRecord("c1", "a", "a", 1.0, "high"))
    rec.case_created(CaseRecord("c2", "b", "b", 2.0, "normal"))
    return rec


def test_observe_records_reach_time_backlog_and_hq_links() -> None:
    sc = _scenario()
    rec = _recorder(sc)
    observe(
        rec,
        sc,
        Snapshot(
            3.0,
            {
                "hq": _view({"c1"}, {"A": 1}, linked=frozenset({"a"})),
                "a": _view({"c1"}, {"A": 1}, linked=frozenset({"hq"})),
                "b": _view({"c2"}, {"B": 2}),
            },
        ),
    )
    observe(rec, sc, Snapshot(5.0, {"hq": _view({"c1", "c2"}, {"A": 1, "B": 2})}))
    assert rec.cases["c1"].reached_s == 3.0
    assert rec.cases["c2"].reached_s == 5.0  # the first poll that saw it at HQ
    assert rec.backlog[0] == (3.0, {"hq": 0, "a": 0, "b": 2})
    assert rec.connected[0] == (3.0, {"hq": True, "a": True, "b": False})
    assert rec.connected[1][1]["a"] is False  # a did not answer: not linked


def test_final_check_passes_when_every_store_holds_everything() -> None:
    sc = _scenario()
    rec = _recorder(sc)
    both = {"c1", "c2"}
    snap = Snapshot(90.0, {n: _view(both, {"A": 1, "B": 1}, "x") for n in ("hq", "a", "b")})
    assert quiet(rec, sc, snap, ())
    final_check(rec, sc, snap, {})
    report = summarise(rec, scenario="three", mode="lab", seed=1, nodes=3)
    assert report["ok"] is True
    assert report["lost_records"] == 0
    assert report["expected_records"] == 2
    assert report["events_created"] == 2


def test_a_node_stopped_before_the_drain_fails_the_drill() -> None:
    sc = _scenario()
    rec = _recorder(sc)
    # b was stopped (absent from the poll) before its case c2 left it.
    snap = Snapshot(90.0, {"hq": _view({"c1"}, {"A": 1}, "x"), "a": _view({"c1"}, {"A": 1}, "x")})
    assert not quiet(rec, sc, snap, ())
    final_check(rec, sc, snap, {})
    report = summarise(rec, scenario="three", mode="lab", seed=1, nodes=3)
    assert report["lost_records"] == 1
    assert report["converged"] is False
    assert report["ok"] is False
    assert report["missing_by_node"] == {"a": 1, "b": 2, "hq": 1}


def test_diverged_stores_fail_even_when_nothing_is_lost() -> None:
    sc = _scenario()
    rec = _recorder(sc)
    both = {"c1", "c2"}
    snap = Snapshot(
        90.0,
        {"hq": _view(both, {}, "x"), "a": _view(both, {}, "x"), "b": _view(both, {}, "y")},
    )
    assert not quiet(rec, sc, snap, ())
    final_check(rec, sc, snap, {})
    assert rec.lost_records == 0
    assert rec.converged is False


def test_a_revoked_nodes_later_writes_must_reach_no_one() -> None:
    sc = _scenario()
    rec = _recorder(sc)
    rec.case_created(CaseRecord("t1", "b", "b", 30.0, "normal", refused=True))
    both = {"c1", "c2"}
    snap = Snapshot(
        90.0,
        {
            "hq": _view(both, {}, "x"),
            "a": _view(both | {"t1"}, {}, "x"),  # a accepted the thief's write
            "b": _view(both | {"t1"}, {}, "z"),  # the thief itself is not judged
        },
    )
    final_check(rec, sc, snap, {"b": 20.0})
    report = summarise(rec, scenario="three", mode="lab", seed=1, nodes=3)
    assert report["refused_writes"] == 1
    assert report["refused_writes_accepted"] == 1
    assert report["lost_records"] == 0
    assert set(report["digests"]) == {"hq", "a"}
    assert report["revoked"] == ["b"]


def test_lab_mode_without_root_is_a_clear_drill_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab_mode, "lab_problems", lambda: ["lab mode needs root (test)"])
    with pytest.raises(DrillError, match="needs root"):
        run_drill(SCENARIOS / "smoke.toml", tmp_path, mode="lab")
    assert not (tmp_path / "report.json").exists()


def test_sim_only_scenarios_refuse_lab_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab_mode, "lab_problems", list)
    with pytest.raises(DrillError, match="sim only"):
        run_drill(SCENARIOS / "prefecture-300.toml", tmp_path, mode="lab")


def _many(n: int) -> str:
    """A scenario of ``n`` nodes (HQ and n - 1 centres) on one network."""
    names = ["hq", *(f"s{i}" for i in range(1, n))]
    sites = "".join(f'[[sites]]\nname = "{name}"\n' for name in names[1:])
    network = ", ".join(f'"{name}"' for name in names)
    return (
        '[drill]\nname = "many"\nduration = "60s"\n[[sites]]\nname = "hq"\nrole = "hq"\n'
        f"{sites}[topology]\nnetworks = [[{network}]]\n"
    )


def test_lab_mode_refuses_more_nodes_than_one_machine_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lab_mode, "lab_problems", list)
    path = tmp_path / "many.toml"
    path.write_text(_many(lab_mode.LAB_NODE_MAX + 1))
    with pytest.raises(DrillError, match=f"at most {lab_mode.LAB_NODE_MAX} real nodes"):
        run_drill(path, tmp_path / "out", mode="lab")
    assert not (tmp_path / "out").exists()


def test_lab_mode_warns_above_the_measured_node_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lab_mode, "lab_problems", list)

    async def stop(self: lab_mode.LabDrill) -> Recorder:
        raise DrillError("stopped before the lab came up")

    monkeypatch.setattr(lab_mode.LabDrill, "run", stop)
    path = tmp_path / "many.toml"
    path.write_text(_many(lab_mode.LAB_NODE_WARN + 1))
    with pytest.raises(DrillError, match="stopped before"):
        run_drill(path, tmp_path / "out", mode="lab")
    assert f"more than the {lab_mode.LAB_NODE_WARN}" in caplog.text


class _Polled:
    """A node that answers the four poll ops; its links report ``counts`` as in/outbox."""

    name = "a"
    alive = True

    def __init__(self, *counts: object) -> None:
        self.counts = counts

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        answers: dict[str, Any] = {
            "case_list": {"cases": [{"id": "c1"}], "next": None, "prev": None},
            "digest": {"heads": {"x": 2}, "digest": "d"},
            "peers": [{"name": "hq", "state": "linked"}, {"name": "b", "state": "refused"}],
            "sync": [{"outbox": n, "inbox": 0} for n in self.counts],
        }
        return answers[op]


async def test_an_unknown_sync_count_is_pending_work_not_an_idle_link() -> None:
    view = await ops.poll(_Polled(0, 7))
    assert view == NodeView(
        frozenset({"c1"}), {"x": 2}, "d", frozenset({"hq"}), 7, {"hq": "linked", "b": "refused"}
    )
    assert (await ops.poll(_Polled(None))).backlog == 1
    assert (await ops.poll(_Polled())).backlog == 0
    with pytest.raises(DrillError, match="sync count"):
        await ops.poll(_Polled("many"))
