"""``meshdesk bench hub`` runs end to end at a small size and reports what it
measured (never asserting a time)."""

from __future__ import annotations

import pytest

from meshdesk.bench import hub as bench_hub
from meshdesk.bench.hub import HubBenchConfig, run_hub_bench
from meshdesk.errors import MeshdeskError
from meshdesk.hub.wanlink import WanLink


@pytest.mark.usefixtures("hub_tools")
def test_bench_hub_small() -> None:
    lines: list[str] = []
    config = HubBenchConfig(cases=40, cut_cases=30, cut_seconds=10, stall=60)
    result = run_hub_bench(config, lines.append)
    report = result.to_json()
    assert report["complete"] is True
    assert report["feed_records"] == 80
    assert report["cut_records"] == 60
    assert report["hub_events_per_s"] > 0
    assert report["raw_copy_rows_per_s"] > 0
    assert "link to the hub cut" in report["cut_simulated_by"]
    assert report["cut_seconds"] >= 3
    assert report["crossed_during_cut"] == 0  # the relays held the cut
    assert "bench hub: city HQ to PostgreSQL vs raw COPY" in result.format_table()
    assert any("cut ends" in line for line in lines)


@pytest.mark.usefixtures("hub_tools")
def test_bench_hub_says_so_when_the_feed_never_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    class CutFromTheStart(WanLink):
        async def start(self) -> None:
            await super().start()
            self.cut()

    monkeypatch.setattr(bench_hub, "WanLink", CutFromTheStart)
    with pytest.raises(MeshdeskError, match="the feed stalled: 0 of 20 records"):
        run_hub_bench(HubBenchConfig(cases=10, cut_cases=10, cut_seconds=0, stall=3),
                      lambda line: None)  # fmt: skip
