"""Run a drill end to end: load the scenario, play it, write the report, judge it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from meshdesk.drill._nodes import SimNode
from meshdesk.drill.lab import play_lab
from meshdesk.drill.metrics import Recorder, reach_times, summarise, sync_cost
from meshdesk.drill.model import Scenario
from meshdesk.drill.report import write_report
from meshdesk.drill.scenario import load_scenario
from meshdesk.drill.sim import NodeFactory, Progress, simulate
from meshdesk.errors import DrillError, DrillFailed

__all__ = ["MODES", "run_drill", "write_results"]

#: sim: every node in one process on a virtual clock; lab: real nodes in namespaces.
MODES = ("sim", "lab")


def write_results(
    rec: Recorder,
    scenario: Scenario,
    *,
    mode: str,
    seed: int,
    out: Path,
    wall_s: float,
    compared: Sequence[Mapping[str, object]] = (),
    lang: str = "en",
) -> dict[str, object]:
    """Summarise ``rec``, write the report into ``out``; raise if the drill failed.

    ``compared`` are the sync costs of the scenario's ``compare`` runs: the report
    sets them beside this run's, by node count.

    Raises:
        DrillFailed: records were lost or the stores did not converge (the report
            is written first and says which).
    """
    report = summarise(rec, scenario=scenario.name, mode=mode, seed=seed, nodes=len(scenario.nodes))
    report["run"] = {"wall_s": round(wall_s, 2), "time_scale": scenario.time_scale}
    own = sync_cost(rec, len(scenario.nodes))
    if compared and own is not None:
        rows = [*compared, own]
        report["sync_cost_by_size"] = sorted(rows, key=lambda r: int(str(r["nodes"])))
    write_report(report, reach_times(rec), out, lang=lang)
    if not report["ok"]:
        state = "converged" if report["converged"] else "did not converge"
        raise DrillFailed(
            f"drill {scenario.name} failed: {report['lost_records']} records lost, stores "
            f"{state}; see {out / 'report.md'}"
        )
    return report


def run_drill(
    scenario_path: Path,
    out: Path,
    *,
    mode: str = "sim",
    seed: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    factory: NodeFactory | None = None,
    lang: str = "en",
) -> dict[str, object]:
    """Play the scenario at ``scenario_path`` and write its report into ``out``
    (``report.md``/``report.html`` in ``lang``, ``ja`` or ``en``).

    Returns:
        The report (as written to ``report.json``).

    Raises:
        ScenarioError: the scenario is malformed (lines named).
        DrillError: an unknown mode, the simulation livelocked, or lab mode cannot
            run here (not root, no lab tools) or its lab failed.
        DrillFailed: the drill ran but lost records or did not converge.
    """
    scenario = load_scenario(scenario_path)
    seed = scenario.seed if seed is None else seed
    start = time.perf_counter()
    if mode not in MODES:
        raise DrillError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    compared: list[dict[str, object]] = []
    if mode == "lab":
        rec = play_lab(scenario, seed=seed, log_dir=out / "lab-logs", progress=progress)
    else:
        rec = simulate(scenario, seed=seed, progress=progress, factory=factory or SimNode)
        for name in scenario.compare:
            other = load_scenario(scenario_path.parent / f"{name}.toml")
            cost = sync_cost(simulate(other, factory=factory or SimNode), len(other.nodes))
            if cost is not None:
                compared.append(cost)
    return write_results(
        rec,
        scenario,
        mode=mode,
        seed=seed,
        out=out,
        wall_s=time.perf_counter() - start,
        compared=compared,
        lang=lang,
    )
