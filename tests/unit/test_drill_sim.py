"""Drills in sim mode: reproducible, reported, and able to fail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from meshdesk.cli import main
from meshdesk.drill import load_scenario
from meshdesk.drill._nodes import SimNode
from meshdesk.drill.run import run_drill
from meshdesk.drill.sim import simulate
from meshdesk.errors import DrillFailed
from meshdesk.store.records import Checkpoint, StoredEvent
from meshdesk.sync.messages import LocalRun

SCENARIOS = Path(__file__).resolve().parents[2] / "field-kit" / "scenarios"
REQUIRED = ("lost_records", "converged", "cases_created", "reach_hq_p95_s")


def _without_run(report: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in report.items() if k != "run"}


def test_smoke_report_files_and_keys(tmp_path: Path) -> None:
    report = run_drill(SCENARIOS / "smoke.toml", tmp_path)
    for name in ("report.md", "report.html", "report.json", "backlog.png", "links.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "backlog.png").read_bytes().startswith(b"\x89PNG")
    written = json.loads((tmp_path / "report.json").read_text())
    for key in REQUIRED:
        assert key in written
    assert written["lost_records"] == 0
    assert written["converged"] is True
    assert written["cases_created"] > 0
    assert len(set(written["digests"].values())) == 1
    assert len(written["digests"]) == 3
    sites = written["sites"]
    assert set(sites) == {"hq", "centre-a", "centre-b"}
    # centre-b was cut for 15 s: it was unlinked at some sample and built a backlog.
    assert not all(up for _, up in sites["centre-b"]["linked_to_hq"])
    assert report["calls_placed"] == 1
    assert (
        "report.md" in (tmp_path / "report.html").read_text()
        or "<img" in (tmp_path / "report.html").read_text()
    )


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    first = run_drill(SCENARIOS / "smoke.toml", tmp_path / "a", seed=11)
    second = run_drill(SCENARIOS / "smoke.toml", tmp_path / "b", seed=11)
    assert _without_run(first) == _without_run(second)
    third = run_drill(SCENARIOS / "smoke.toml", tmp_path / "c", seed=12)
    assert _without_run(third) != _without_run(first)


class LossyNode(SimNode):
    """Broken on purpose: HQ says it stored some peers' runs but keeps nothing of them.

    The runs dropped are those that start at an even seq: whatever the seed, every
    author that writes twice loses a run at HQ (and what follows it no longer joins).
    """

    def store_run(self, events: Sequence[StoredEvent], checkpoint: Checkpoint) -> LocalRun | None:
        if self.spec.role == "hq" and checkpoint.author != self.author and events[0].seq % 2 == 0:
            return None
        return super().store_run(events, checkpoint)


def test_lossy_store_fails_the_drill(tmp_path: Path) -> None:
    with pytest.raises(DrillFailed, match="records lost") as info:
        run_drill(SCENARIOS / "smoke.toml", tmp_path, factory=LossyNode)
    assert info.value.exit_code != 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["lost_records"] > 0
    assert report["converged"] is False
    assert report["ok"] is False
    assert "FAIL" in (tmp_path / "report.md").read_text()


def test_cli_drill_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "smoke", "--report", str(tmp_path / "ok"), "--quiet"]) == 0
    assert "PASS" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (SCENARIOS / "smoke.toml").read_text().replace('node = "centre-a"', 'node = "x"')
    )
    assert main(["drill", str(bad), "--report", str(tmp_path / "bad")]) == 12
    err = capsys.readouterr().err
    assert "bad.toml:" in err
    assert "unknown node 'x'" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", ["yokote-12", "flood-courier", "stolen-laptop"])
def test_shipped_scenarios_pass_in_sim(name: str, tmp_path: Path) -> None:
    report = run_drill(SCENARIOS / f"{name}.toml", tmp_path)
    assert report["lost_records"] == 0
    assert report["converged"] is True
    assert report["not_reached"] == 0


def test_prefecture_300_loses_nothing_and_converges() -> None:
    """The 300-node scenario end to end (its wall time is in docs/BENCHMARKS.md)."""
    sc = load_scenario(SCENARIOS / "prefecture-300.toml")
    rec = simulate(sc)
    assert len(rec.digests) == 300
    assert rec.converged
    assert rec.lost_records == 0
    assert sum(rec.missing.values()) == 0
    assert len(rec.cases) > 200
    assert all(c.reached_s is not None for c in rec.cases.values())


def test_yokote_isolated_branch_waits_its_ten_minutes(tmp_path: Path) -> None:
    report = run_drill(SCENARIOS / "yokote-12.toml", tmp_path)
    site = report["sites"]["omonogawa"]  # type: ignore[index]
    unlinked = [t for t, up in site["linked_to_hq"] if not up]
    assert unlinked
    assert max(unlinked) - min(unlinked) >= 9 * 60
    # Cases written in the outage reached HQ only after it: the max is minutes.
    gym = report["sites"]["centre-omonogawa-gym"]  # type: ignore[index]
    assert max(site["reach_hq_max_s"], gym["reach_hq_max_s"]) >= 300


def test_stolen_laptop_writes_are_refused_everywhere(tmp_path: Path) -> None:
    report = run_drill(SCENARIOS / "stolen-laptop.toml", tmp_path)
    assert report["revoked"] == ["mobile-laptop-1"]
    assert report["refused_writes"] > 0
    assert report["refused_writes_accepted"] == 0
    assert "mobile-laptop-1" not in report["digests"]  # type: ignore[operator]


class _Forgetful(set[str]):
    def add(self, item: str) -> None:
        return None

    def __ior__(self, other: object) -> _Forgetful:  # type: ignore[override,misc]
        return self


class DeafNode(SimNode):
    """Broken on purpose: never takes in a revocation list."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.revoked = _Forgetful()


def test_ignoring_revocation_is_caught() -> None:
    rec = simulate(load_scenario(SCENARIOS / "stolen-laptop.toml"), factory=DeafNode)
    assert rec.refused_writes > 0
    assert rec.refused_writes_accepted > 0


def test_a_report_sets_sync_cost_beside_the_scenarios_it_compares(tmp_path: Path) -> None:
    """``compare`` (as prefecture-1000 names prefecture-100 and -300): the named
    scenarios of the same folder are played too, and bytes per node are tabled by
    node count."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    smoke = (SCENARIOS / "smoke.toml").read_text()
    (folder / "small.toml").write_text(smoke.replace('name = "smoke"', 'name = "small"', 1))
    (folder / "bigger.toml").write_text(
        (SCENARIOS / "yokote-12.toml")
        .read_text()
        .replace("[drill]\n", '[drill]\ncompare = ["small"]\n', 1)
    )
    report = run_drill(folder / "bigger.toml", tmp_path / "report")
    assert report["ok"] is True
    rows = report["sync_cost_by_size"]
    assert isinstance(rows, list)
    assert [r["nodes"] for r in rows] == [3, 12]
    for row in rows:
        assert row["bytes_sent_per_node_mean"] > 0
        assert row["events_received_per_node_mean"] > 0
    assert "Sync cost by mesh size" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        (
            "ja",
            ("訓練報告: smoke", "本部到達時間 95%(秒)", "失効端末の書き込みで受け入れられたもの"),
        ),
        ("en", ("Drill report: smoke", "Time to reach HQ, 95th percentile (s)", "Records lost")),
    ],
)
def test_the_report_reads_in_the_organisers_language(
    tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    run_drill(SCENARIOS / "smoke.toml", tmp_path, lang=lang)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for word in words:
        assert word in md
        assert word in page
    assert f"<html lang='{lang}'>" in page
    for key in ("reach_hq_p95_s", "refused_writes_accepted", "lost_records"):
        assert key not in md  # human labels, not JSON keys
        assert key not in page
    assert "reach_hq_p95_s" in json.loads((tmp_path / "report.json").read_text())  # keys kept


def test_valley_stick_carries_an_announcement_and_its_reading_by_usb_stick(
    tmp_path: Path,
) -> None:
    report = run_drill(SCENARIOS / "valley-stick.toml", tmp_path, lang="en")
    assert report["lost_records"] == 0
    assert report["converged"] is True
    (announcement,) = report["announcements"]  # type: ignore[misc]
    valley = announcement["sites"]["centre-valley"]
    school = announcement["sites"]["school-mountain"]
    # Over the mesh within the step; on the mountain only when the stick arrives (after
    # 10 min on the road, 20 min walking) and its reading only with the stick back.
    assert valley["delivered_after_s"] <= 1
    assert school["delivered_after_s"] == 600 - 300 + 1200
    assert school["read_after_s"] == school["delivered_after_s"] + 120
    assert school["read_known_at_hq_after_s"] == 3600 - 300
    trips = report["bundle_trips"]
    assert [(t["from"], t["to"]) for t in trips] == [  # type: ignore[union-attr]
        ("hq", "school-mountain"),
        ("school-mountain", "hq"),
        ("school-mountain", "hq"),
        ("hq", "school-mountain"),
    ]
    assert all(t["new_events"] > 0 for t in trips)  # type: ignore[union-attr]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Announcements" in md
    assert "## USB bundle trips" in md


def test_charts_draw_japanese_site_names_and_labels(tmp_path: Path) -> None:
    from matplotlib import font_manager  # the charts import matplotlib only to draw
    from tiers import require

    from meshdesk.drill.charts import CHARTS, draw_charts

    files = [f for f in font_manager.findSystemFonts() if "NotoSansCJK" in Path(f).name]
    require([] if files else ["no Noto Sans CJK (Debian fonts-noto-cjk)"], tier="fonts")
    report = {
        "sites": {
            "第一小学校": {"backlog": [[0, 3], [600, 0]], "linked_to_hq": [[0, 0], [300, 1]]},
            "Hall 2": {"backlog": [[0, 1], [600, 0]], "linked_to_hq": [[0, 1], [600, 1]]},
        },
        "reach_hq_p95_s": 4.0,
    }
    # A missing glyph is a warning, and warnings fail tests here: every name and label
    # must find its glyphs.
    drawn = draw_charts(report, [1.0, 2.0, 4.0], tmp_path, lambda text, **v: "拠点ごとの未送信")
    assert drawn == list(CHARTS)
    assert all((tmp_path / name).stat().st_size > 1000 for name in drawn)
