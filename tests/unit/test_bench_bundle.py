"""``meshdesk bench bundle`` on a tiny run: import beside a cold sync, every figure
reported; never how fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshdesk.bench.bundle import BundleBenchConfig
from meshdesk.cli import main
from meshdesk.errors import UsageError


def test_a_tiny_bundle_bench_reports_both_rates_and_equal_digests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # 5,000 events: more than one bundle frame holds (4,096 events, and under 1 MiB
    # with the sealed blobs that travel beside each body).
    assert main(["bench", "bundle", "--cases", "2500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events"] == 5000
    for key in ("import_events_per_s", "sync_events_per_s", "export_events_per_s",
                "bundle_bytes_per_event"):  # fmt: skip
        assert result[key] > 0, key
    assert result["sync_converged"] is True
    assert result["digests_equal"] is True
    assert isinstance(result["target_met"], bool)


def test_the_bundle_bench_refuses_nonsense() -> None:
    with pytest.raises(UsageError, match="--cases"):
        BundleBenchConfig(cases=0)
