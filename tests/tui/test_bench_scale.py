"""``meshdesk bench scale`` on a tiny HQ: a real node process, the console attached,
a desk joining. Checks that the bench runs end to end and reports every figure the
issue asks for; never how fast."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from meshdesk.bench import add_bench_parser
from meshdesk.bench.scale import TARGETS
from meshdesk.errors import UsageError

FIGURES = (
    "cases",
    "node_ready_s",
    "first_page_ms_p50",
    "raw_first_page_ms_p50",
    "filtered_page_ms_p50",
    "search_ms_p50",
    "case_new_ms_p50",
    "node_rss_mib",
    "console_keystroke_ms_p95",
    "join_events_per_s",
    "hq_page_during_join_ms_p50",
)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshdesk")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args, {})
    return code


@pytest.mark.timeout(240)
def test_tiny_scale_run_reports_every_figure_and_keeps_its_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "hq"
    argv = ["bench", "scale", "--cases", "300", "--rounds", "5", "--store", str(store)]
    assert run([*argv, "--join", "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    for key in FIGURES:
        assert isinstance(result[key], int | float), key
        assert math.isfinite(result[key]), key
        assert result[key] > 0, key
    assert result["join_events_stored"] == result["join_events"]
    assert set(result["targets_met"]) == set(TARGETS)
    # the kept store is reused (not filled again) by the next run
    assert run(argv) == 0
    assert "reusing the HQ of 300 cases" in capsys.readouterr().err
    with pytest.raises(UsageError, match="holds 300 cases"):
        run(["bench", "scale", "--cases", "400", "--store", str(store)])
