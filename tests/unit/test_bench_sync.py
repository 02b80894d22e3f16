"""``meshdesk bench sync`` on a tiny run: two real nodes over TLS on loopback.

Checks that the bench runs end to end and reports every figure; never how fast.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from meshdesk.bench import add_bench_parser
from meshdesk.bench._sync_setup import WireMeter
from meshdesk.bench.sync import SyncBenchConfig
from meshdesk.errors import UsageError
from meshdesk.wire import SyncCredit, SyncHeads

POSITIVE = (
    "events",
    "events_per_checkpoint",
    "body_bytes",
    "event_bytes",
    "cold_seconds",
    "cold_events_per_s",
    "cold_apart_events_per_s",
    "cold_wire_bytes",
    "cold_wire_bytes_per_event",
    "cold_wire_ratio",
    "cold_sync_frames",
    "delta_store_events",
    "delta_round_trips",
    "delta_one_way_trips",
    "delta_frames",
    "delta_bytes",
    "floor_sqlite_events_per_s",
    "floor_verify_events_per_s",
)
TARGETS = (
    "cold_events_per_s",
    "cold_apart_events_per_s",
    "cold_wire_bytes_per_event",
    "delta_round_trips",
    "delta_bytes",
)


def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshdesk")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args, {})
    return code


@pytest.mark.timeout(120)
def test_tiny_sync_run_reports_every_figure_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "sync", "--cases", "200", "--delta-events", "300", "--stall", "15"]
    assert run([*argv, "--json"]) == 0
    out, err = capsys.readouterr()

    result: dict[str, Any] = json.loads(out)  # stdout holds the result and nothing else
    assert result["bench"] == "sync"
    assert result["cases"] == 200
    assert result["events"] == 400
    assert result["delta_store_events"] == 300
    for key in POSITIVE:
        value = result[key]
        assert isinstance(value, int | float), key
        assert math.isfinite(value), key
        assert value > 0, key
    assert result["cold_converged"] is True
    assert result["cold_events_stored"] == 400
    assert result["cold_apart_converged"] is True  # node a as a process of its own
    assert result["cold_apart_events_stored"] == 400
    assert result["delta_converged"] is True
    assert set(result["targets_met"]) == set(TARGETS)
    assert all(isinstance(v, bool) for v in result["targets_met"].values())

    progress = err.splitlines()
    assert any(line.startswith("bench sync: cold:") for line in progress)
    assert any(line.startswith("bench sync: cold, apart:") for line in progress)
    assert any(line.startswith("bench sync: delta:") for line in progress)


def test_counts_below_one_are_refused() -> None:
    with pytest.raises(UsageError, match="--cases"):
        SyncBenchConfig(cases=0)
    with pytest.raises(UsageError, match="--delta-events"):
        SyncBenchConfig(delta_events=0)


def test_meter_gives_each_sync_frame_its_causal_depth() -> None:
    meter = WireMeter()
    heads, credit = SyncHeads(1, 0, 1, ()), SyncCredit(1, 0, 10)
    meter.sent("b", "old", heads)  # on a link that dies before a reads it
    meter.sent("b", "tcp", heads)  # b opens: depth 1
    meter.sent("a", "tcp", heads)  # a opens before hearing b: depth 1 too
    meter.received("a", "b", "tcp", heads)
    meter.sent("a", "tcp", credit)  # after b's depth-1 frame: depth 2
    meter.received("b", "a", "tcp", heads)
    meter.received("b", "a", "tcp", credit)
    assert [r.depth for r in meter.records] == [1, 1, 1, 2]
    assert meter.received_depth("b") == 2
    assert meter.received_depth("a") == 1
