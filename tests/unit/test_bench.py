"""``meshdesk bench``: the parser, the store bench on a tiny run, the shared statistics.

These tests check that a bench runs, reports every figure and compares like with
like; they never assert how fast anything is.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest

from meshdesk.bench import add_bench_parser
from meshdesk.bench._stats import (
    Row,
    Summary,
    format_table,
    rate,
    ratio,
    require_at_least,
)
from meshdesk.bench.store import (
    StoreBenchConfig,
    event_hash,
    generate_events,
    handle,
)
from meshdesk.errors import UsageError
from meshdesk.stats import percentile
from meshdesk.store import ZERO_HASH

TINY = ["--events", "500", "--batch", "100", "--repeat", "1", "--commits", "20"]

REQUIRED_KEYS = (
    "events",
    "batch",
    "append_events_per_s",
    "raw_append_events_per_s",
    "append_ratio",
    "read_events_per_s",
    "raw_read_events_per_s",
    "open_ms",
    "open_quick_check_ms",
    "commit_ms_p50",
    "commit_ms_p99",
    "raw_full_commit_ms_p50",
    "runs",
)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` with a top-level parser that has only the bench command."""
    parser = argparse.ArgumentParser(prog="meshdesk")
    commands = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(commands)
    return parser.parse_args(argv)


def run(argv: Sequence[str]) -> int:
    args = parse(argv)
    code: int = args.handler(args, {})
    return code


def count_events(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


# -- bench store -------------------------------------------------------------------------


def test_tiny_store_run_reports_every_figure_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "run"
    assert run(["bench", "store", *TINY, "--dir", str(folder), "--json"]) == 0
    out, err = capsys.readouterr()

    result: dict[str, Any] = json.loads(out)  # stdout holds the result and nothing else
    for key in REQUIRED_KEYS:
        assert key in result, key
    assert result["events"] == 500
    assert result["batch"] == 100
    assert result["runs"] == 1
    for key, value in result.items():
        if key.endswith(("_per_s", "_per_s_best", "_ms", "_ms_best", "_ratio")):
            assert isinstance(value, float), key
            assert math.isfinite(value), key
            assert value > 0, key
    assert all(len(samples) == 1 for samples in result["samples_s"].values())
    assert result["rows"] == {"meshdesk": 500, "raw": 500, "raw_guarded": 500}
    assert 250 < result["body_bytes_mean"] < 500

    # Both sides really inserted the same events: count them in the databases.
    assert count_events(folder / "meshdesk.db") == 500
    assert count_events(folder / "raw.db") == 500
    assert count_events(folder / "raw-guarded.db") == 500
    # Single-case commits: 20 cases of 2 events each, on both sides; durable (FULL).
    assert result["commits"] == 20
    assert result["commit_ms_p99"] >= result["commit_ms_p50"] > 0
    assert count_events(folder / "meshdesk-commits.db") == 40
    assert count_events(folder / "raw-full-commits.db") == 40
    with contextlib.closing(sqlite3.connect(folder / "meshdesk-commits.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    progress = err.splitlines()
    assert progress
    assert all(line.startswith("bench store: ") for line in progress)
    assert any("append 1/1" in line for line in progress)


def test_store_run_prints_a_table_and_leaves_no_temp_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run(["bench", "store", *TINY, "--authors", "2"]) == 0
    out = capsys.readouterr().out
    assert "meshdesk bench store: 500 events, 2 authors" in out
    for label in ("append (events/s)", "read (events/s)", "open (ms)", "open + quick_check"):
        assert label in out
    assert "raw SQLite" in out
    assert "ratio" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--events", "0"], "--events must be at least 1"),
        (["--events", "-5"], "--events must be at least 1"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--authors", "0"], "--authors must be at least 1"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--events", "3", "--authors", "4"], "--authors (4) cannot exceed --events (3)"),
    ],
)
def test_bad_store_arguments_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        run(["bench", "store", *argv])
    assert message in str(caught.value)


def test_store_dir_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("not the bench's")
    with pytest.raises(UsageError, match="is not empty"):
        run(["bench", "store", *TINY, "--dir", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]

    with pytest.raises(UsageError, match="is not a directory"):
        run(["bench", "store", *TINY, "--dir", str(tmp_path / "keep.txt")])


def test_non_integer_argument_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(["bench", "store", "--events", "many"])
    assert caught.value.code == 2
    assert "--events" in capsys.readouterr().err


def test_bench_needs_a_sub_command_and_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(["bench"])
    assert caught.value.code == 2
    assert "BENCH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        parse(["bench", "--help"])
    assert caught.value.code == 0
    assert "store" in capsys.readouterr().out


def test_store_defaults() -> None:
    args = parse(["bench", "store"])
    assert args.handler is handle
    assert (args.events, args.batch, args.authors, args.repeat) == (100_000, 1_000, 4, 3)
    assert (args.dir, args.json) == (None, False)
    assert StoreBenchConfig() == StoreBenchConfig(events=100_000, batch=1_000, authors=4)


def test_generated_events_form_valid_chains() -> None:
    events = generate_events(400, 3)
    assert events == generate_events(400, 3)  # deterministic
    assert len({e.author for e in events}) == 3
    heads: dict[str, tuple[int, bytes]] = {}
    for event in events:
        seq, prev = heads.get(event.author, (0, ZERO_HASH))
        assert event.seq == seq + 1
        assert event.prev_hash == prev
        fields = [event.author, event.seq, event.hlc, event.case_id, event.kind, event.body, prev]
        expected = hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest()
        assert event.hash == expected
        assert event.hash == event_hash(
            event.author, event.seq, event.hlc, event.case_id, event.kind, event.body, prev
        )
        heads[event.author] = (event.seq, event.hash)
    hlcs = [e.hlc for e in events]
    assert hlcs == sorted(hlcs)
    assert len(set(hlcs)) == len(hlcs)


def test_generated_bodies_are_realistic_msgpack() -> None:
    events = generate_events(1000, 4)
    sizes = [len(e.body) for e in events]
    assert 330 <= sum(sizes) / len(sizes) <= 390
    for event in events[:50]:
        body = msgpack.unpackb(event.body, raw=False)
        assert body["case"] == event.case_id
        assert isinstance(body["text"], str)
    assert any(e.case_id is None for e in events)  # node facts
    cases = {e.case_id for e in events if e.case_id is not None}
    assert 10 < len(cases) < len(events) / 2
    by_case: dict[str, set[str]] = {}
    for event in events:
        if event.case_id is not None:
            by_case.setdefault(event.case_id, set()).add(event.author)
    assert any(len(authors) > 1 for authors in by_case.values())  # shared cases


# -- shared statistics -------------------------------------------------------------------


def test_summary_p95_is_the_shared_percentile() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert Summary.of(samples).p95 == percentile(samples, 95) == pytest.approx(3.85)


def test_summary_keeps_samples_in_order() -> None:
    summary = Summary.of([0.3, 0.1, 0.2])
    assert (summary.count, summary.min, summary.median, summary.max) == (3, 0.1, 0.2, 0.3)
    assert summary.samples == (0.3, 0.1, 0.2)
    with pytest.raises(ValueError, match="no samples"):
        Summary.of([])


def test_rate_and_ratio_stay_finite() -> None:
    assert rate(1000, 0.5) == 2000
    assert ratio(3.0, 2.0) == 1.5
    assert math.isfinite(rate(10, 0.0))
    assert math.isfinite(ratio(1.0, 0.0))


def test_require_at_least() -> None:
    require_at_least("--n", 1)
    require_at_least("--n", 0, minimum=0)
    with pytest.raises(UsageError, match="--n must be at least 2, got 1"):
        require_at_least("--n", 1, minimum=2)


def test_format_table_aligns_columns_and_prints_ratios() -> None:
    text = format_table(
        "title",
        [Row("append (events/s)", 50_000, 100_000), Row("open (ms)", 3.0, 1.5, digits=2)],
        headers=("ours", "base"),
        notes=["a note"],
    )
    lines = text.splitlines()
    assert lines[0] == "title"
    assert lines[-1] == "a note"
    table = lines[2:5]
    assert "ours" in table[0]
    assert "base" in table[0]
    assert table[1].endswith("0.50x")
    assert "50,000" in table[1]
    assert "100,000" in table[1]
    assert table[2].endswith("2.00x")
    assert "3.00" in table[2]
    assert len({len(line) for line in table[1:]}) == 1  # figures line up
