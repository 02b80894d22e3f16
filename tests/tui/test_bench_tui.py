"""``meshdesk bench tui`` runs and reports sane figures (never asserts a time limit)."""

from __future__ import annotations

from meshdesk.bench.tui import TuiBenchConfig, make_views, run_tui_bench


def test_bench_tui_reports_both_sides_per_keystroke() -> None:
    result = run_tui_bench(TuiBenchConfig(cases=300, queries=("山田",)))
    assert result["keystrokes"] == 4  # two keys typed, two erased
    for side in ("filter_ms", "baseline_filter_ms"):
        assert 0 < result[f"{side}_p50"] <= result[f"{side}_p95"] <= result[f"{side}_max"]


def test_bench_views_are_valid_case_views() -> None:
    views = make_views(50)
    assert len({v["id"] for v in views}) == 50
    assert {v["urgency"] for v in views} == {"immediate", "high", "normal", "low"}
