"""``meshdesk bench scale``: an HQ holding N cases, answered through a running node.

An HQ home of a throw-away deployment is filled with N cases (2 events each: an
opening with a sealed personal block, then a sealed note or a status change;
categories, urgencies, 50 sites and departments drawn from a realistic mix) by
:func:`~meshdesk.bench._fill.fill_cases`, which also writes each case's search terms.
``--store DIR`` keeps that home in DIR and reuses it on the next run (filling a
million cases takes minutes). Then ``meshdesk run`` starts on it (loopback, mDNS
off) as its own process, and the bench measures, through its control socket as
the CLI and the console reach it:

- ``node_ready_s``: spawn until the control socket answers ``status``;
- ``first_page_ms_p50``: ``case_list`` of the first 50 cases (most urgent first);
- ``filtered_page_ms_p50``: the first 50 of one site with one status;
- ``deep_page_ms_p50``: 50 cases after a case half-way down the list (keyset);
- ``search_ms_p50``: the first 50 readable cases whose name holds a word;
- ``case_new_ms_p50``: ``case_new`` (sealed, signed, durable: synchronous=FULL);
- ``node_rss_mib``: the node's resident memory after all of it (peak as well);
- ``console_keystroke_ms_p95``: the console (headless, 120×40) on that node, a key
  typed into the queue's search box until the table is repainted;
- with ``--join``: a desk with an empty store (``meshdesk run`` in its own process)
  joins the HQ and catches up on every event, while the bench keeps asking the HQ
  for pages: ``join_events_per_s`` and ``hq_page_during_join_ms_p50``/``p95``.

Each beside a raw ``sqlite3`` query of the same page on the same file in the same
run (``raw_*``; the case index's own SQL, no node, no JSON, no decryption), and for
``case_new`` a raw two-row insert committed with ``synchronous=FULL`` in the same
folder. Progress goes to stderr; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.bench._fill import CaseMix, fill_cases
from meshdesk.bench._process import node_process, wait_ready
from meshdesk.bench._stats import require_at_least
from meshdesk.bench._sync_setup import make_pair, node_config
from meshdesk.cases.search import SearchKey
from meshdesk.errors import UsageError
from meshdesk.home import NodeHome
from meshdesk.stats import percentile

__all__ = ["TARGETS", "ScaleBenchConfig", "add_parser", "handle", "run_scale_bench"]

Progress = Callable[[str], None]

#: The issue's targets (≤ each, except none).
TARGETS: Mapping[str, float] = {
    "node_ready_s": 3.0,
    "first_page_ms_p50": 100,
    "filtered_page_ms_p50": 100,
    "search_ms_p50": 300,
    "case_new_ms_p50": 50,
    "node_rss_mib": 300,
    "console_keystroke_ms_p95": 100,
}
PAGE = 50
_SURNAMES = ("佐藤", "山田", "高橋", "中村", "斎藤", "木村", "林", "遠藤")
_FULL = ("山田 花子", "佐藤 健", "高橋 さくら", "中村 博")
#: Typed into the console's search box key by key, then erased.
CONSOLE_QUERIES = ("山田", "避難所1", "医療", "佐藤 花")
_READY_TIMEOUT = 600.0
_COLUMNS = "case_id, urgency, status, category, site, department, created_hlc, personal"
_PRISTINE = "store.pristine.db"
#: A join that stores nothing new for this long is given up.
_JOIN_STALL = 120.0
_ORDER = "ORDER BY urgency_rank, created_hlc, case_key"


@dataclass(frozen=True, slots=True)
class ScaleBenchConfig:
    """What one run does.

    Attributes:
        cases: Cases the HQ holds.
        rounds: Samples per figure.
        store: Folder to keep (and reuse) the filled deployment in; None: a temporary one.
        workers: Processes that seal while filling (0: as many as cores).
        join: Also measure a desk joining the HQ (cold sync of every event).
    """

    cases: int = 1_000_000
    rounds: int = 30
    store: Path | None = None
    workers: int = 0
    join: bool = False

    def __post_init__(self) -> None:
        require_at_least("--cases", self.cases, 100)
        require_at_least("--rounds", self.rounds, 5)


def _stderr(line: str) -> None:
    print(f"bench scale: {line}", file=sys.stderr, flush=True)


def _ms(samples: Sequence[float], q: float = 50) -> float:
    return round(percentile([s * 1000 for s in samples], q), 2)


# -- the filled HQ -------------------------------------------------------------------------


def _keep_pristine(desk: NodeHome) -> None:
    """A copy of the desk's store as provisioned: each join starts from it."""
    shutil.copy2(desk.store_path, desk.path / _PRISTINE)


def _restore_pristine(desk: NodeHome) -> None:
    for suffix in ("-wal", "-shm"):
        desk.store_path.with_name(desk.store_path.name + suffix).unlink(missing_ok=True)
    shutil.copy2(desk.path / _PRISTINE, desk.store_path)


def _kept(folder: Path, cases: int) -> NodeHome | None:
    """The HQ a previous run kept in ``folder`` (None: the folder is new or empty)."""
    marker = folder / "scale.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("cases") == cases:
            return NodeHome(Path(info["hq"]))
        raise UsageError(f"{folder} holds {info.get('cases')} cases, not {cases}")
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} is not empty and holds no bench scale store")
    folder.mkdir(parents=True, exist_ok=True)
    return None


async def _prepare(folder: Path, config: ScaleBenchConfig, progress: Progress) -> NodeHome:
    """The HQ home holding ``config.cases`` cases: reused from ``folder`` when it is."""
    kept = await asyncio.to_thread(_kept, folder, config.cases)
    if kept is not None:
        progress(f"reusing the HQ of {config.cases:,} cases in {folder}")
        return kept
    now = dt.datetime.now(dt.UTC)
    pair = await make_pair(folder, now)
    hq = pair.a
    hq.write_config(node_config(hq, []))
    workers = config.workers or os.cpu_count() or 1
    progress(f"filling the HQ with {config.cases:,} cases ({workers} sealing workers)")
    stats = await fill_cases(
        hq,
        events=2 * config.cases,
        batch_events=1000,
        now=now,
        progress=progress,
        mix=CaseMix(varied=True, terms=True),
        workers=workers,
    )
    progress(f"filled in {stats.seconds:.0f} s ({stats.cases / stats.seconds:,.0f} cases/s)")
    info = {"cases": config.cases, "hq": str(hq.path), "desk": str(pair.b.path),
            "fill_seconds": stats.seconds}  # fmt: skip
    await asyncio.to_thread(_keep_pristine, pair.b)
    await asyncio.to_thread((folder / "scale.json").write_text, json.dumps(info))
    return hq


# -- the node process ----------------------------------------------------------------------


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return round(fields.get("VmRSS", 0.0), 1), round(fields.get("VmHWM", 0.0), 1)


# -- measurements ----------------------------------------------------------------------------


async def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def _raw_timed(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> float:
    start = time.perf_counter()
    db.execute(sql, tuple(args)).fetchall()
    return time.perf_counter() - start


@dataclass
class _Figures:
    values: dict[str, Any]

    def add(self, name: str, ours: Sequence[float], raw: Sequence[float] | None = None) -> None:
        self.values[f"{name}_ms_p50"] = _ms(ours)
        self.values[f"{name}_ms_p95"] = _ms(ours, 95)
        if raw is not None:
            self.values[f"raw_{name}_ms_p50"] = _ms(raw)


async def _pages(
    home: NodeHome, db: sqlite3.Connection, rounds: int, figures: _Figures, progress: Progress
) -> None:
    sock = home.control_socket

    async def page(args: dict[str, Any]) -> Any:
        return await control.call(sock, "case_list", {"limit": PAGE, **args}, wait=60)

    progress("first pages")
    ours = [await _timed(lambda: page({})) for _ in range(rounds)]
    raw = [_raw_timed(db, f"SELECT {_COLUMNS} FROM case_index {_ORDER} LIMIT ?", [PAGE])
           for _ in range(rounds)]  # fmt: skip
    figures.add("first_page", ours, raw)

    progress("filtered pages (one site, one status)")
    sites = [r[0] for r in db.execute("SELECT DISTINCT site FROM case_index LIMIT 50")]
    ours, raw = [], []
    filtered = f"SELECT {_COLUMNS} FROM case_index WHERE site = ? AND status = ? {_ORDER} LIMIT ?"
    for i in range(rounds):
        site, status = sites[i % len(sites)], ("new", "in_progress")[i % 2]
        ours.append(await _timed(functools.partial(page, {"site": site, "status": status})))
        raw.append(_raw_timed(db, filtered, [site, status, PAGE]))
    figures.add("filtered_page", ours, raw)

    progress("deep pages (half-way down, keyset)")
    total = db.execute("SELECT count(*) FROM case_index").fetchone()[0]
    ours, raw = [], []
    for i in range(rounds):
        depth = (total // 2 + i * 997) % total
        key = db.execute(f"SELECT case_id, urgency_rank, created_hlc, case_key FROM case_index"
                         f" {_ORDER} LIMIT 1 OFFSET ?", [depth]).fetchone()  # fmt: skip
        ours.append(await _timed(functools.partial(page, {"after": key[0]})))
        raw.append(_raw_timed(db, f"SELECT {_COLUMNS} FROM case_index WHERE (urgency_rank,"
                                  f" created_hlc, case_key) > (?, ?, ?) {_ORDER} LIMIT ?",
                              [*key[1:], PAGE]))  # fmt: skip
    figures.add("deep_page", ours, raw)


async def _search(
    home: NodeHome, db: sqlite3.Connection, rounds: int, figures: _Figures, progress: Progress
) -> None:
    progress("name searches (readable cases)")
    kit = home.load_identity(now=dt.datetime.now(dt.UTC))
    assert kit.sealing_key is not None
    key = SearchKey.of(kit.sealing_key)
    words = [*_SURNAMES, *_FULL]
    ours: list[float] = []
    raw: list[float] = []
    found: list[int] = []
    for i in range(rounds):
        text = words[i % len(words)]
        start = time.perf_counter()
        result = await control.call(home.control_socket, "case_list",
                                    {"search": text, "limit": PAGE}, wait=60)  # fmt: skip
        ours.append(time.perf_counter() - start)
        found.append(len(result["cases"]))
        conds: list[str] = []
        args: list[int] = []
        for word in text.split():
            terms = key.query(word)
            conds.append("case_key IN (" + " INTERSECT ".join(
                "SELECT case_key FROM case_terms WHERE term = ?" for _ in terms) + ")")  # fmt: skip
            args += terms
        raw.append(_raw_timed(db, f"SELECT {_COLUMNS} FROM case_index WHERE"
                                  f" {' AND '.join(conds)} {_ORDER} LIMIT ?",
                              [*args, PAGE]))  # fmt: skip
    figures.add("search", ours, raw)
    figures.values["search_cases_per_page_min"] = min(found)


async def _case_new(home: NodeHome, folder: Path, rounds: int, figures: _Figures) -> None:
    args = {"operator": "bench", "category": "medical", "urgency": "high", "name": "試験 太郎",
            "phone": "090-0000-0000"}  # fmt: skip
    ours = [await _timed(lambda: control.call(home.control_socket, "case_new", args, wait=60))
            for _ in range(rounds)]  # fmt: skip
    raw_path = folder / "raw-commit.db"
    with contextlib.closing(sqlite3.connect(raw_path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (a BLOB, b BLOB)")
        raw = []
        for _ in range(rounds):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO t VALUES (?, ?)", [(os.urandom(700), b"x")] * 2)
            db.execute("COMMIT")
            raw.append(time.perf_counter() - start)
    figures.add("case_new", ours, raw)


async def _console(home: NodeHome, progress: Progress) -> list[float]:
    """Keystroke → repainted queue, the console attached to the running node."""
    from meshdesk.bench.tui import SIZE, time_keystrokes, typed_keys
    from meshdesk.tui import MeshdeskApp
    from meshdesk.tui.client import SocketNode
    from meshdesk.tui.widgets import CaseTable

    progress("console keystrokes")
    app = MeshdeskApp(SocketNode(home.control_socket, wait=60), lang="ja", operator="bench",
                      poll_interval=3600)  # fmt: skip
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        for _ in range(3000):
            await pilot.pause(0.01)
            if len(app.desk.window) and app.desk.window.matched is not None:
                break
        table = app.screen.query_one(CaseTable)
        stamp: list[float] = []
        set_rows = table.set_rows

        def timed(rows: Sequence[Any], **kwargs: Any) -> None:
            set_rows(rows, **kwargs)
            stamp.append(time.perf_counter())

        table.set_rows = timed  # type: ignore[method-assign]
        await pilot.press("slash")
        await pilot.pause(0.2)
        samples: list[float] = []
        for key in typed_keys(CONSOLE_QUERIES):
            stamp.clear()
            samples += await time_keystrokes(
                app, pilot, [key], lambda: stamp[-1] if stamp else None
            )
        return samples


async def _join(hq: NodeHome, desk: NodeHome, folder: Path, progress: Progress
                ) -> dict[str, Any]:  # fmt: skip
    """A desk with an empty store joins the running HQ; the HQ is asked for pages all
    along. Returns the join's figures."""
    status = await control.call(hq.control_socket, "status", wait=60)
    total = int(status["store"]["events"])
    await asyncio.to_thread(_restore_pristine, desk)
    desk.write_config(node_config(desk, [f"127.0.0.1:{status['listen_port']}"]))
    progress(f"a desk joins the HQ and catches up on {total:,} events")
    pages: list[float] = []
    start = time.perf_counter()
    with node_process(desk, folder / "desk.log") as proc:
        await wait_ready(desk, proc, start, _READY_TIMEOUT)
        held, moved, checked = 0, time.perf_counter(), 0.0
        while held < total and time.perf_counter() - moved < _JOIN_STALL:
            ask = functools.partial(control.call, hq.control_socket, "case_list", {"limit": PAGE})
            pages.append(await _timed(ask))
            if time.perf_counter() - checked >= 1.0:
                checked = time.perf_counter()
                now = int((await control.call(desk.control_socket, "status", wait=60))
                          ["store"]["events"])  # fmt: skip
                if now != held:
                    held, moved = now, checked
                    progress(f"  {held:,} of {total:,} events at the desk")
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - start
        peak = _rss_mib(proc.pid)[1]
    return {
        "join_events": total,
        "join_events_stored": held,
        "join_seconds": round(seconds, 1),
        "join_events_per_s": round(held / seconds),
        "hq_page_during_join_ms_p50": _ms(pages),
        "hq_page_during_join_ms_p95": _ms(pages, 95),
        "desk_rss_peak_mib": peak,
    }


async def _measure(home: NodeHome, folder: Path, config: ScaleBenchConfig,
                   progress: Progress) -> dict[str, Any]:  # fmt: skip
    figures = _Figures({"bench": "scale", "cases": config.cases, "rounds": config.rounds})
    log = folder / "node.log"
    progress(f"starting the node (log: {log})")
    start = time.perf_counter()
    with node_process(home, log) as proc:
        figures.values["node_ready_s"] = round(
            await wait_ready(home, proc, start, _READY_TIMEOUT), 3
        )
        progress(f"node ready in {figures.values['node_ready_s']:.2f} s")
        uri = f"file:{home.store_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            await _pages(home, db, config.rounds, figures, progress)
            await _search(home, db, config.rounds, figures, progress)
        progress("case new (durable commits)")
        await _case_new(home, folder, config.rounds, figures)
        keys = await _console(home, progress)
        figures.values["console_keystroke_ms_p50"] = round(percentile(keys, 50), 2)
        figures.values["console_keystroke_ms_p95"] = round(percentile(keys, 95), 2)
        figures.values["console_keystrokes"] = len(keys)
        rss, peak = _rss_mib(proc.pid)
        figures.values["node_rss_mib"] = rss
        figures.values["node_rss_peak_mib"] = peak
        if config.join:
            desk = NodeHome(home.path.parent / "b")
            figures.values.update(await _join(home, desk, folder, progress))
            figures.values["node_rss_after_join_mib"] = _rss_mib(proc.pid)[0]
    values = figures.values
    values["store_mib"] = round(home.store_path.stat().st_size / 2**20, 1)
    values["targets_met"] = {name: values[name] <= limit for name, limit in TARGETS.items()}
    values["sqlite_version"] = sqlite3.sqlite_version
    values["python"] = platform.python_version()
    return values


async def _run(config: ScaleBenchConfig, progress: Progress) -> dict[str, Any]:
    if config.store is not None:
        home = await _prepare(config.store, config, progress)
        return await _measure(home, config.store, config, progress)
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-scale-") as tmp:
        home = await _prepare(Path(tmp) / "store", config, progress)
        return await _measure(home, Path(tmp), config, progress)


def run_scale_bench(config: ScaleBenchConfig, progress: Progress = _stderr) -> dict[str, Any]:
    """Fill (or reuse) the HQ, run its node and measure; blocking (own event loop)."""
    return asyncio.run(_run(config, progress))


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scale`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "scale",
        help="an HQ of N cases through a running node: pages, search, case new, memory",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = ScaleBenchConfig()
    parser.add_argument("--cases", type=int, default=defaults.cases, metavar="N",
                        help=f"cases the HQ holds (default: {defaults.cases:,})")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=defaults.rounds, metavar="R",
                        help=f"samples per figure (default: {defaults.rounds})")  # fmt: skip
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="keep the filled HQ in DIR and reuse it next time")  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--join", action="store_true",
                        help="also time a desk joining the HQ (a cold sync)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config = ScaleBenchConfig(cases=args.cases, rounds=args.rounds, store=args.store,
                              workers=args.workers, join=args.join)  # fmt: skip
    result = run_scale_bench(config)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"meshdesk bench scale: {result['cases']:,} cases, {result['rounds']} rounds")
    for name in ("first_page", "filtered_page", "deep_page", "search", "case_new"):
        print(f"  {name + ' p50 (ms)':28}{result[name + '_ms_p50']:>10.1f}"
              f"   raw SQLite {result['raw_' + name + '_ms_p50']:>8.2f}")  # fmt: skip
    for name in ("node_ready_s", "node_rss_mib", "console_keystroke_ms_p95"):
        print(f"  {name:28}{result[name]:>10.1f}")
    missed = [n for n, ok in result["targets_met"].items() if not ok]
    print("targets: " + ("all met" if not missed else "missed: " + ", ".join(missed)))
    return 0
