"""Drill scenarios: shipped files parse; malformed ones are refused naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshdesk.drill import ScenarioError, load_scenario, parse_scenario
from meshdesk.drill.model import LinkChange, Power, parse_duration
from meshdesk.drill.prefecture import prefecture

SCENARIOS = Path(__file__).resolve().parents[2] / "field-kit" / "scenarios"
SHIPPED = (
    "smoke",
    "yokote-12",
    "flood-courier",
    "stolen-laptop",
    "prefecture-100",
    "prefecture-300",
    "prefecture-1000",
)

GOOD = """\
[drill]
name = "t"
duration = "5m"

[[sites]]
name = "hq"
role = "hq"

[[sites]]
name = "a"
[[sites.nodes]]
name = "a-1"
[[sites.nodes]]
name = "a-2"
role = "desk"

[topology]
networks = [["hq", "a"]]

[[timeline]]
at = "1m"
action = "link_down"
site = "a"
for = "2m"

[[timeline]]
at = "2m"
action = "power_loss"
node = "a-2"
"""


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_parse(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    assert scenario.name == name
    assert scenario.hq_nodes


def test_shipped_sizes() -> None:
    sizes = {name: len(load_scenario(SCENARIOS / f"{name}.toml").nodes) for name in SHIPPED}
    assert sizes["yokote-12"] == 12
    assert sizes["prefecture-300"] == 300
    assert sizes["prefecture-1000"] == 1000
    assert sizes["smoke"] == 3
    assert load_scenario(SCENARIOS / "prefecture-300.toml").sim_only
    big = load_scenario(SCENARIOS / "prefecture-1000.toml")
    assert big.sim_only
    assert big.compare == ("prefecture-100", "prefecture-300")


@pytest.mark.parametrize("nodes", [100, 300, 1000])
def test_prefectures_are_what_their_generator_writes(nodes: int) -> None:
    compare = (100, 300) if nodes == 1000 else ()
    text = prefecture(nodes, couriers=True, compare=compare)
    assert (SCENARIOS / f"prefecture-{nodes}.toml").read_text() == text


def test_compare_must_name_scenarios() -> None:
    bad = GOOD.replace('duration = "5m"', 'duration = "5m"\ncompare = ["../etc/x", 3]')
    with pytest.raises(ScenarioError, match="compare"):
        parse_scenario(bad)


def test_good_scenario_builds_nodes_edges_and_timeline() -> None:
    scenario = parse_scenario(GOOD)
    assert [n.name for n in scenario.nodes] == ["hq", "a-1", "a-2"]
    assert scenario.node_by_name["a-2"].role == "desk"
    assert ("a", "hq") in scenario.edges
    kinds = [(type(a).__name__, a.at) for a in scenario.timeline]
    assert kinds == [("LinkChange", 60.0), ("Power", 120.0), ("LinkChange", 180.0)]
    down, power, up = scenario.timeline
    assert isinstance(down, LinkChange)
    assert not down.up
    assert down.site == "a"
    assert isinstance(up, LinkChange)
    assert up.up
    assert isinstance(power, Power)
    assert not power.on


def _problems(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="x.toml")
    return info.value.problems


def test_syntax_error_names_the_line() -> None:
    text = GOOD.replace('node = "a-2"', 'node = = "a-2"')
    (problem,) = _problems(text)
    assert problem[0] == GOOD.splitlines().index('node = "a-2"') + 1


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('node = "a-2"', 'node = "a-9"', "unknown node 'a-9'"),
        ('role = "desk"', 'role = "boss"', "role 'boss'"),
        ('site = "a"\nfor', 'site = "zz"\nfor', "unknown site 'zz'"),
        ('at = "2m"', 'at = "soon"', "not a duration"),
        ('at = "2m"', 'at = "9m"', "after the end"),
        ('networks = [["hq", "a"]]', 'networks = [["hq", "b"]]', "unknown site 'b'"),
        ('action = "power_loss"', 'action = "explode"', "unknown action"),
        ('name = "a-1"', 'name = "a-1"\ncolour = "red"', "unknown key 'colour'"),
    ],
)
def test_semantic_errors_name_the_line(old: str, new: str, needle: str) -> None:
    text = GOOD.replace(old, new, 1)
    problems = _problems(text)
    matching = [(line, msg) for line, msg in problems if needle in msg]
    assert matching, problems
    line, _ = matching[0]
    assert line is not None
    changed = new.splitlines()[-1]
    assert text.splitlines()[line - 1].strip() in {changed.strip(), new.splitlines()[0].strip()}


def test_error_message_carries_file_and_line() -> None:
    text = GOOD.replace('node = "a-2"', 'node = "nobody"')
    with pytest.raises(ScenarioError, match=r"^x\.toml:\d+: unknown node 'nobody'"):
        parse_scenario(text, source="x.toml")


def test_several_problems_are_all_reported_in_line_order() -> None:
    text = GOOD.replace('role = "desk"', 'role = "boss"').replace('node = "a-2"', 'node = "b"')
    problems = _problems(text)
    assert len(problems) == 2
    assert [p[0] for p in problems] == sorted(p[0] or 0 for p in problems)


def test_no_hq_is_refused() -> None:
    assert any(
        "no node has role 'hq'" in m
        for _, m in _problems(GOOD.replace('"hq"\n\n[[', '"center"\n\n[[', 1))
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("500ms", 0.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten", "-5", True, -1, "5 minutes"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)
