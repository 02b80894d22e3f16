"""``meshdesk bench discovery`` on a real lab: it runs, reports every figure, cleans up.

The bench builds its own lab (``field-kit/lab``), so these tests need only root. They
check that every figure is there and made of the requested number of runs; they
never assert how fast anything is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from meshdesk.bench import add_bench_parser
from meshdesk.errors import MeshdeskError, UsageError

pytestmark = pytest.mark.lab

LAB = Path(__file__).resolve().parents[2] / "field-kit" / "lab"
RUNS, PEERS = 3, 2

REQUIRED_KEYS = (
    "runs",
    "peers",
    "linked_p50_s",
    "linked_p95_s",
    "process_linked_p50_s",
    "process_linked_p95_s",
    "zeroconf_baseline_p50_s",
    "zeroconf_baseline_p95_s",
    "zeroconf_process_baseline_p50_s",
    "zeroconf_register_to_seen_p50_s",
    "target_linked_p50_s",
    "meets_target",
    "first_links",
    "samples_s",
)
SAMPLES = (
    "linked",
    "process_linked",
    "zeroconf_baseline",
    "zeroconf_process_baseline",
    "zeroconf_register_to_seen",
    "python_start",
    "imports",
    "node_startup",
    "browse_linked",
)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshdesk")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", "discovery", *argv])


def our_labs() -> list[str]:
    """Labs on this machine whose owner is this test process (the bench's own)."""
    out = subprocess.run(
        ["bash", str(LAB), "ls", "--json"], capture_output=True, text=True, check=True
    ).stdout
    return [lab["prefix"] for lab in json.loads(out) if lab.get("owner") == os.getpid()]


def test_a_small_run_reports_every_figure_and_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    small = ["--runs", str(RUNS), "--min-runs", "1", "--peers", str(PEERS)]
    args = parse([*small, "--lab", str(LAB), "--json"])
    assert args.handler(args, {}) == 0
    result = json.loads(capsys.readouterr().out)

    assert [key for key in REQUIRED_KEYS if key not in result] == []
    assert (result["bench"], result["runs"], result["peers"]) == ("discovery", RUNS, PEERS)
    assert sorted(result["samples_s"]) == sorted(SAMPLES)
    for name, samples in result["samples_s"].items():
        assert len(samples) == RUNS, name
        assert all(s > 0 for s in samples), (name, samples)
    for key in REQUIRED_KEYS:
        if key.endswith(("_p50_s", "_p95_s")):
            assert result[key] > 0, key
    # Every run linked the joiner with every peer once (however it came about).
    assert sum(result["first_links"].values()) == RUNS * PEERS
    assert our_labs() == []


def test_the_table_names_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--runs", "1", "--min-runs", "1", "--peers", "1", "--lab", str(LAB)])
    assert args.handler(args, {}) == 0
    table = capsys.readouterr().out
    assert "meshdesk" in table
    assert "raw zeroconf" in table
    assert "start -> linked / resolved, p50 (ms)" in table
    assert our_labs() == []


def test_fewer_than_ten_runs_is_refused_without_the_override() -> None:
    args = parse(["--runs", "5", "--lab", str(LAB)])
    with pytest.raises(UsageError, match="--runs must be at least 10"):
        args.handler(args, {})


def test_a_missing_lab_script_is_one_clear_error(tmp_path: Path) -> None:
    args = parse(["--lab", str(tmp_path / "no-lab")])
    with pytest.raises(MeshdeskError, match=r"needs root and the network lab script"):
        args.handler(args, {})
    args = parse([])
    with pytest.raises(MeshdeskError, match=r"MESHDESK_LAB=.*no-lab"):
        args.handler(args, {"MESHDESK_LAB": str(tmp_path / "no-lab")})
