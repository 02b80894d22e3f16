"""Field-kit drills: scripted disaster scenarios, simulated or on the network lab.

- :mod:`~meshdesk.drill.scenario` reads a scenario (TOML) and names the line of
  every problem;
- :mod:`~meshdesk.drill.world` plans what happens when (topology, power, the
  consultation workload, deferred cases, revocations, calls) for both modes,
  purely, from the scenario and a seed;
- :mod:`~meshdesk.drill.sim` plays it with every node in one process: real case
  events and hash chains, replicated by the real sync core over in-memory links,
  on a virtual clock (reproducible from the seed);
- :mod:`~meshdesk.drill.lab` plays it with real ``meshdesk run`` processes in
  network namespaces (``field-kit/lab``);
- :mod:`~meshdesk.drill.report` writes ``report.md``, ``report.html`` (with PNG
  charts) and ``report.json``.
"""

from __future__ import annotations

from meshdesk.drill.model import Scenario, ScenarioError
from meshdesk.drill.scenario import load_scenario, parse_scenario

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario"]
