"""``meshdesk bench tui``: filter keystroke to repainted case table, beside a plain DataTable.

With N cases (default 10,000) in a fake node, the console runs headless under
Textual's ``run_test()`` at 120×40 with the case queue showing. Pilot types queries
into the search box one key at a time (then erases them, which widens the result
again) and each keystroke is timed from the key press until the first screen update
composed after the table received its new rows (``App._display`` is called with the
rendered update; in headless mode it is then not written anywhere).

The baseline, in the same run, is the same rows in a plain Textual ``DataTable``
whose filter clears the table and re-adds the matching rows, filtering the same
prepared lower-case strings. The console itself is imported lazily: the core never
imports ``meshdesk.tui``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshdesk.bench._stats import require_at_least
from meshdesk.stats import percentile

__all__ = [
    "DEFAULT_CASES",
    "QUERIES",
    "SIZE",
    "TuiBenchConfig",
    "add_parser",
    "handle",
    "make_views",
    "run_tui_bench",
    "stamp_rows",
    "time_keystrokes",
    "typed_keys",
]

#: What is typed, one key at a time; each is then erased key by key.
QUERIES = ("山田", "shelter", "medic", "0a1")
SIZE = (120, 40)
DEFAULT_CASES = 10_000

_SURNAMES = ("山田", "佐藤", "鈴木", "高橋", "田中", "Smith", "Garcia", "Nguyen", "Kim", "Silva")
_GIVEN = ("花子", "太郎", "一郎", "美咲", "John", "Maria", "Linh", "Ana")
_SITES = ("第一小学校避難所", "Civic Gym shelter", "市役所 City Hall", "南区公民館", "Harbor hall")
_CATEGORIES = ("medical", "welfare_eldercare", "housing", "supplies", "safety_missing", "other")
_URGENCIES = ("immediate", "high", "normal", "low")
_STATUSES = ("new", "in_progress", "referred", "resolved")


@dataclass(frozen=True, slots=True)
class TuiBenchConfig:
    cases: int = DEFAULT_CASES
    queries: tuple[str, ...] = QUERIES


def make_views(count: int) -> list[dict[str, Any]]:
    """``count`` case views as ``case list`` returns them (deterministic)."""
    views: list[dict[str, Any]] = []
    for i in range(count):
        name = f"{_SURNAMES[i % len(_SURNAMES)]} {_GIVEN[(i // 7) % len(_GIVEN)]}"
        views.append(
            {
                "id": f"01990000-0000-7000-8000-{i:012x}",
                "category": _CATEGORIES[i % len(_CATEGORIES)],
                "urgency": _URGENCIES[(i // 3) % len(_URGENCIES)],
                "status": _STATUSES[(i // 5) % len(_STATUSES)],
                "department": None,
                "site": _SITES[(i // 11) % len(_SITES)],
                "created_at": f"2025-09-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                "name": name,
                "conflicts": [],
            }
        )
    return views


def _blob(view: Mapping[str, Any]) -> str:
    """What the baseline's filter searches: the case's texts and labels, lower-cased."""
    from meshdesk.tui.index import label

    parts = [str(view.get(k) or "") for k in ("id", "name", "site", "department")]
    for kind in ("category", "urgency", "status"):
        value = view.get(kind)
        parts += [str(value or ""), label(kind, value, "ja"), label(kind, value, "en")]
    return "\n".join(parts).lower()


def typed_keys(queries: Sequence[str]) -> list[str]:
    """Each query typed key by key, then erased key by key."""
    keys: list[str] = []
    for query in queries:
        keys += list(query) + ["backspace"] * len(query)
    return keys


def stamp_rows(table: Any) -> list[float]:
    """Wrap ``table.set_rows`` (a ``CaseTable``): the returned list gets the time
    (``perf_counter``) of every call, after the rows are set."""
    stamp: list[float] = []
    set_rows = table.set_rows

    def timed(rows: Sequence[Any], **kwargs: Any) -> None:
        set_rows(rows, **kwargs)
        stamp.append(time.perf_counter())

    table.set_rows = timed
    return stamp


async def time_keystrokes(
    app: Any, pilot: Any, keys: list[str], filtered: Callable[[], float | None]
) -> list[float]:
    """Per key: press → first display after the table got its rows, in ms."""
    shown: list[float] = []
    display = app._display

    def spy(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        if renderable is not None:
            shown.append(time.perf_counter())

    app._display = spy
    samples = []
    for key in keys:
        start = time.perf_counter()
        await pilot.press(key)
        for _ in range(2000):
            done = filtered()
            after = [t for t in shown if done is not None and t >= done]
            if after:
                samples.append((after[0] - start) * 1000)
                break
            await asyncio.sleep(0.001)
        else:
            raise RuntimeError(f"no repaint after key {key!r}")
        shown.clear()
    return samples


async def _ours(config: TuiBenchConfig, views: list[dict[str, Any]]) -> list[float]:
    from meshdesk.tui import MeshdeskApp
    from meshdesk.tui.fake import FakeNode
    from meshdesk.tui.widgets import CaseTable

    fake = FakeNode()
    fake.cases = {
        v["id"]: {**v, "notes": [], "referrals": [], "calls": [], "history": []} for v in views
    }
    app = MeshdeskApp(fake, lang="ja", operator="bench", poll_interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        for _ in range(1000):
            await pilot.pause(0.01)
            if len(app.desk.window) and app.desk.counts.get("total") == len(views):
                break
        stamp = stamp_rows(app.screen.query_one(CaseTable))
        await pilot.press("slash")
        await pilot.pause(0.1)

        def filtered() -> float | None:
            return stamp[-1] if stamp else None

        samples = []
        for key in typed_keys(config.queries):
            stamp.clear()
            samples += await time_keystrokes(app, pilot, [key], filtered)
        return samples


async def _baseline(config: TuiBenchConfig, views: list[dict[str, Any]]) -> list[float]:
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable, Input

    from meshdesk.tui.index import CaseRow, label

    rows = [CaseRow.of(v) for v in views]
    blobs = [_blob(v) for v in views]
    cells = [
        (
            label("urgency", r.urgency, "ja"),
            label("status", r.status, "ja"),
            label("category", r.category, "ja"),
            r.name,
            r.site,
            r.created,
            r.id[24:],
        )
        for r in rows
    ]
    stamp: list[float] = []

    class Baseline(App[None]):
        def compose(self) -> ComposeResult:
            yield Input(id="q")
            yield DataTable(id="t")

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("緊急度", "状況", "相談分類", "氏名", "拠点", "受付日時", "相談")
            table.add_rows(cells)
            self.query_one(Input).focus()

        def on_input_changed(self, event: Input.Changed) -> None:
            words = event.value.lower().split()
            table = self.query_one(DataTable)
            table.clear()
            table.add_rows(
                c for b, c in zip(blobs, cells, strict=True) if all(w in b for w in words)
            )
            stamp.append(time.perf_counter())

    app = Baseline()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        samples = []
        for key in typed_keys(config.queries):
            stamp.clear()
            samples += await time_keystrokes(
                app, pilot, [key], lambda: stamp[-1] if stamp else None
            )
        return samples


def run_tui_bench(config: TuiBenchConfig) -> dict[str, Any]:
    require_at_least("--cases", config.cases)
    views = make_views(config.cases)
    print(f"bench tui: {config.cases} cases, console …", file=sys.stderr)
    ours = asyncio.run(_ours(config, views))
    print("bench tui: plain DataTable baseline …", file=sys.stderr)
    base = asyncio.run(_baseline(config, views))
    import textual

    p95, base_p95 = percentile(ours, 95), percentile(base, 95)
    return {
        "bench": "tui",
        "cases": config.cases,
        "keystrokes": len(ours),
        "queries": list(config.queries),
        "terminal": f"{SIZE[0]}x{SIZE[1]}",
        "filter_ms_p50": round(percentile(ours, 50), 2),
        "filter_ms_p95": round(p95, 2),
        "filter_ms_max": round(max(ours), 2),
        "baseline_filter_ms_p50": round(percentile(base, 50), 2),
        "baseline_filter_ms_p95": round(base_p95, 2),
        "baseline_filter_ms_max": round(max(base), 2),
        "speedup_p95": round(base_p95 / p95, 1) if p95 else None,
        "target_filter_ms_p95": 100,
        "textual": textual.__version__,
        "python": platform.python_version(),
    }


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tui`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "tui",
        help="case queue filter keystroke → repaint vs a plain DataTable",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--cases",
        type=int,
        default=DEFAULT_CASES,
        metavar="N",
        help=f"cases in the queue (default: {DEFAULT_CASES})",
    )
    parser.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="TEXT",
        help="a query to type and erase (repeatable; default: a built-in set)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    result = run_tui_bench(TuiBenchConfig(cases=args.cases, queries=tuple(args.query) or QUERIES))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"meshdesk bench tui: {result['cases']} cases, {result['keystrokes']} keystrokes")
    print(f"{'':34}{'console':>10}{'DataTable':>12}")
    for name in ("p50", "p95", "max"):
        ours, base = result[f"filter_ms_{name}"], result[f"baseline_filter_ms_{name}"]
        print(f"{'keystroke → repaint, ' + name + ' (ms)':34}{ours:>10.1f}{base:>12.1f}")
    return 0
