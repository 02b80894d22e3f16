"""The one percentile rule behind every p50/p95 that benches and drills report."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.drill.metrics import CaseRecord, Recorder, summarise
from meshdesk.stats import percentile


def test_percentile_interpolates_like_numpy() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 50) == 2.5
    assert percentile(samples, 100) == 4.0
    assert percentile(samples, 95) == pytest.approx(3.85)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0-100"):
        percentile(samples, 101)
    with pytest.raises(ValueError, match="0-100"):
        percentile(samples, -1)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_the_50th_percentile_is_the_median(samples: list[float]) -> None:
    assert percentile(samples, 50) == pytest.approx(statistics.median(samples), abs=1e-6)


def test_a_drill_reports_reach_times_by_the_shared_rule() -> None:
    rec = Recorder(sites=["a"])
    for i, reached in enumerate([4.0, 1.0, 3.0, 2.0, None]):
        rec.case_created(CaseRecord(f"c{i}", "a", "a", created_s=0.0, urgency="normal"))
        if reached is not None:
            rec.reached_hq(f"c{i}", reached)
    report = summarise(rec, scenario="s", mode="sim", seed=1, nodes=1)
    assert report["reach_hq_p50_s"] == 2.5  # the median, not the lower middle sample
    assert report["reach_hq_p95_s"] == pytest.approx(3.85)
    assert report["not_reached"] == 1


def test_a_drill_with_no_case_at_hq_reports_no_reach_time() -> None:
    rec = Recorder(sites=["a"])
    rec.case_created(CaseRecord("c0", "a", "a", created_s=0.0, urgency="normal"))
    report = summarise(rec, scenario="s", mode="sim", seed=1, nodes=1)
    assert report["reach_hq_p50_s"] is None
    assert report["reach_hq_p95_s"] is None
