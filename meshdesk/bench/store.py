"""``meshdesk bench store``: the Store's appends, reads and opening, beside raw SQLite.

One run generates realistic case events (msgpack bodies of ~360 bytes, per-author
sha256 hash chains, several authors interleaved in clock order) and measures, each
``repeat`` times:

- **append**: :meth:`Store.append_events` in batches, into a fresh store; the baseline
  is ``sqlite3`` ``executemany``, one transaction per batch, into a table with the same
  columns, primary key and index (WAL, ``synchronous=NORMAL``) but without meshdesk's
  CHECKs and chain trigger. A third variant, raw ``executemany`` into meshdesk's own
  schema, splits meshdesk's overhead into what the schema's guards cost and what the
  Store's Python side (checks, chain planning, the aiosqlite thread) costs.
- **read**: :meth:`Store.events_after` page by page for every author, against the
  same paged ``SELECT`` through ``sqlite3`` on the same file.
- **open**: :meth:`Store.start` with and without ``PRAGMA quick_check``, against
  ``sqlite3.connect`` plus a first read (or ``PRAGMA quick_check``).
- **commit**: what an operator waits for when saving one case, durably: the case's
  two events (opening and note, bodies of the generated sizes) appended to a node's
  chain, its checkpoint signed, and :meth:`Store.append_run` committed — one at a
  time, ``commits`` of them, latency of each. The baseline is the same two rows
  inserted and committed by ``sqlite3`` with ``synchronous = FULL`` (the setting the
  Store uses, so that a commit survives a power cut).

Progress goes to stderr; stdout carries only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshdesk.bench._events import event_hash, generate_events
from meshdesk.bench._stats import (
    Row,
    Summary,
    add_run_arguments,
    format_table,
    rate,
    ratio,
    require_at_least,
)
from meshdesk.cases.chain import ChainWriter, new_chain_author
from meshdesk.cases.ids import new_id
from meshdesk.errors import UsageError
from meshdesk.identity.nodeid import NodeId
from meshdesk.stats import percentile
from meshdesk.store import Store, StoredEvent

__all__ = [
    "StoreBenchConfig",
    "StoreBenchResult",
    "add_parser",
    "append_raw",
    "event_hash",
    "generate_events",
    "handle",
    "run_store_bench",
]

Progress = Callable[[str], None]

#: File names of the three databases a run leaves in ``--dir``.
MESHDESK_DB = "meshdesk.db"
RAW_DB = "raw.db"
GUARDED_DB = "raw-guarded.db"
COMMIT_DB = "meshdesk-commits.db"
RAW_COMMIT_DB = "raw-full-commits.db"
#: The node whose chain the commit measurement writes (any valid node id).
_BENCH_NODE = NodeId.from_public_bytes(bytes(32)).text

_COLUMNS = "author, seq, hlc, case_id, kind, body, prev_hash, hash"
_INSERT = f"INSERT INTO events ({_COLUMNS}, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_PAGE = f"SELECT {_COLUMNS} FROM events WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?"

# The baseline: meshdesk's events table as a plain SQLite user would write it (same
# columns, primary key and partial index), without the CHECKs and triggers.
_RAW_SCHEMA = """
CREATE TABLE events (
    author      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    hlc         INTEGER NOT NULL,
    case_id     TEXT,
    kind        INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    prev_hash   BLOB    NOT NULL,
    hash        BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (author, seq)
);
CREATE INDEX events_by_case ON events (case_id) WHERE case_id IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class StoreBenchConfig:
    """What one ``bench store`` run does.

    Attributes:
        events: How many events to generate and append.
        batch: Events per ``append_events`` call (and per raw transaction); also
            the page size when reading back.
        authors: How many nodes wrote the events.
        repeat: How many times each measurement runs.
        dir: Where the databases go (kept afterwards); None for a temp folder.
        commits: Single-case commits timed one by one, per run.

    Raises:
        UsageError: a count below 1, or more authors than events.
    """

    events: int = 100_000
    batch: int = 1_000
    authors: int = 4
    repeat: int = 3
    dir: Path | None = None
    commits: int = 200

    def __post_init__(self) -> None:
        require_at_least("--events", self.events)
        require_at_least("--commits", self.commits)
        require_at_least("--batch", self.batch)
        require_at_least("--authors", self.authors)
        require_at_least("--repeat", self.repeat)
        if self.authors > self.events:
            raise UsageError(
                f"--authors ({self.authors}) cannot exceed --events ({self.events}):"
                " every author writes at least one event"
            )


@dataclass(frozen=True, slots=True)
class StoreBenchResult:
    """Durations of every run, in seconds, and what the runs left on disk.

    Attributes:
        config: The run's configuration.
        body_bytes_mean: Mean size of the generated msgpack bodies.
        db_bytes: Size of meshdesk's database after the last append.
        rows: Rows counted in each database after the last append run.
        append: ``Store.append_events`` over all batches.
        raw_append: ``executemany`` into the plain table.
        guarded_append: ``executemany`` into meshdesk's schema (CHECKs, triggers).
        read: ``Store.events_after``, every author, page by page.
        raw_read: the same paged ``SELECT`` through ``sqlite3``.
        open: ``Store.start`` without quick_check.
        raw_open: ``sqlite3.connect`` and a first read.
        open_quick_check: ``Store.start`` with quick_check.
        raw_quick_check: ``sqlite3.connect`` and ``PRAGMA quick_check``.
    """

    config: StoreBenchConfig
    body_bytes_mean: float
    db_bytes: int
    rows: Mapping[str, int]
    append: Summary
    raw_append: Summary
    guarded_append: Summary
    read: Summary
    raw_read: Summary
    open: Summary
    raw_open: Summary
    open_quick_check: Summary
    raw_quick_check: Summary
    #: Latency of each single-case commit (seconds), every run.
    commit: tuple[float, ...] = ()
    raw_full_commit: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object: medians first, ``_best`` for the best run."""
        n = self.config.events
        out: dict[str, Any] = {
            "bench": "store",
            "events": n,
            "batch": self.config.batch,
            "authors": self.config.authors,
            "runs": self.config.repeat,
            "body_bytes_mean": round(self.body_bytes_mean, 1),
            "db_bytes": self.db_bytes,
        }
        rates = {
            "append": self.append,
            "raw_append": self.raw_append,
            "guarded_append": self.guarded_append,
            "read": self.read,
            "raw_read": self.raw_read,
        }
        for name, summary in rates.items():
            out[f"{name}_events_per_s"] = round(rate(n, summary.median), 1)
            out[f"{name}_events_per_s_best"] = round(rate(n, summary.min), 1)
        out["append_ratio"] = round(ratio(self.raw_append.median, self.append.median), 4)
        out["guarded_append_ratio"] = round(
            ratio(self.raw_append.median, self.guarded_append.median), 4
        )
        out["read_ratio"] = round(ratio(self.raw_read.median, self.read.median), 4)
        times = {
            "open": self.open,
            "raw_open": self.raw_open,
            "open_quick_check": self.open_quick_check,
            "raw_quick_check": self.raw_quick_check,
        }
        for name, summary in times.items():
            out[f"{name}_ms"] = round(summary.median * 1000, 3)
            out[f"{name}_ms_best"] = round(summary.min * 1000, 3)
        for name, latencies in (("commit", self.commit), ("raw_full_commit", self.raw_full_commit)):
            for q in (50, 99):
                out[f"{name}_ms_p{q}"] = round(percentile(latencies, q) * 1000, 3)
        out["commits"] = len(self.commit)
        out["rows"] = dict(self.rows)
        out["samples_s"] = {
            name: [round(s, 6) for s in summary.samples]
            for name, summary in (rates | times).items()
        }
        out["sqlite_version"] = sqlite3.sqlite_version
        out["python"] = platform.python_version()
        return out

    def format_table(self) -> str:
        """The result as a table: meshdesk | raw SQLite | ratio."""
        c = self.config
        n = c.events

        def events_row(label: str, ours: Summary, base: Summary, best: bool = False) -> Row:
            if best:
                return Row(label, rate(n, ours.min), rate(n, base.min))
            return Row(label, rate(n, ours.median), rate(n, base.median))

        def ms_row(label: str, ours: Summary, base: Summary) -> Row:
            return Row(label, ours.median * 1000, base.median * 1000, digits=2)

        runs = "1 run" if c.repeat == 1 else f"median of {c.repeat} runs"
        title = (
            f"meshdesk bench store: {n:,} events, {c.authors} authors,"
            f" bodies ~{self.body_bytes_mean:.0f} B, batches of {c.batch:,}, {runs}"
        )
        rows = [
            events_row("append (events/s)", self.append, self.raw_append),
            events_row("append, best run (events/s)", self.append, self.raw_append, best=True),
            events_row("  schema guards only (events/s)", self.guarded_append, self.raw_append),
            events_row("read (events/s)", self.read, self.raw_read),
            events_row("read, best run (events/s)", self.read, self.raw_read, best=True),
            ms_row("open (ms)", self.open, self.raw_open),
            ms_row("open + quick_check (ms)", self.open_quick_check, self.raw_quick_check),
            Row(
                "one case saved, p50 (ms)",
                percentile(self.commit, 50) * 1000,
                percentile(self.raw_full_commit, 50) * 1000,
                digits=2,
            ),
            Row(
                "one case saved, p99 (ms)",
                percentile(self.commit, 99) * 1000,
                percentile(self.raw_full_commit, 99) * 1000,
                digits=2,
            ),
        ]
        notes = [
            "ratio = meshdesk / raw SQLite: for events/s higher is better, for ms lower.",
            "raw SQLite: sqlite3 executemany, one transaction per batch, WAL, synchronous=NORMAL,",
            "  same columns, primary key and index, no CHECKs or triggers.",
            "schema guards only: the same raw executemany into meshdesk's own schema.",
            f"read: events_after in pages of {c.batch:,} per author vs the same SELECT, same file.",
            "open: Store.start (checks, WAL, heads) vs sqlite3.connect + first read.",
            f"one case saved: {len(self.commit):,} commits of 2 events + signed checkpoint,"
            " one at a time (durable: synchronous=FULL)",
            "  vs the same 2 rows per transaction, raw sqlite3, WAL, synchronous=FULL.",
            f"database: {self.db_bytes / 2**20:,.1f} MiB, SQLite {sqlite3.sqlite_version}.",
        ]
        return format_table(title, rows, headers=("meshdesk", "raw SQLite"), notes=notes)


# -- measurements ------------------------------------------------------------------------


def _batches(events: Sequence[StoredEvent], size: int) -> list[Sequence[StoredEvent]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def _remove_db(path: Path) -> None:
    """Delete a database this run made, with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


async def _append_meshdesk(
    path: Path, batches: Sequence[Sequence[StoredEvent]], received_at: int
) -> tuple[float, int]:
    async with Store.open(path, create=True, quick_check=False) as store:
        inserted = 0
        start = time.perf_counter()
        for batch in batches:
            inserted += await store.append_events(batch, received_at)
        elapsed = time.perf_counter() - start
    return elapsed, inserted


def append_raw(
    path: Path, batches: Sequence[Sequence[StoredEvent]], now: int, *, guarded: bool
) -> float:
    """Seconds to insert ``batches`` with plain sqlite3, one transaction per batch.

    The floor a Store append is compared with: ``guarded`` uses meshdesk's own schema
    (triggers, indexes) as the Store creates it, otherwise a bare table of the same
    columns. ``now`` is the ``received_at`` written into every row.
    """
    if guarded:  # meshdesk's schema exactly as the Store creates it
        asyncio.run(_create_store(path))
    with _connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        if not guarded:
            db.executescript(_RAW_SCHEMA)
        start = time.perf_counter()
        for batch in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                _INSERT,
                (
                    (e.author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, e.hash, now)
                    for e in batch
                ),
            )
            db.execute("COMMIT")
        return time.perf_counter() - start


async def _commit_meshdesk(
    path: Path, bodies: Sequence[bytes], commits: int, received_at: int
) -> list[float]:
    """Latency of each of ``commits`` single-case commits (two events each)."""
    chain = ChainWriter(new_chain_author(_BENCH_NODE), Ed25519PrivateKey.generate(), None)
    latencies = []
    async with Store.open(path, create=True, quick_check=False) as store:
        for i in range(commits):
            case_id = new_id(received_at + i)
            start = time.perf_counter()
            for j in (0, 1):
                body = bodies[(2 * i + j) % len(bodies)]
                hlc = (received_at + i) << 16 | j
                chain.append(hlc=hlc, case_id=case_id, kind=1 + j, body=body)
            events, checkpoint = chain.commit()
            await store.append_run(events, checkpoint, received_at)
            latencies.append(time.perf_counter() - start)
    return latencies


def _commit_raw(path: Path, bodies: Sequence[bytes], commits: int, now: int) -> list[float]:
    """The floor: the same two rows per transaction, sqlite3, WAL, synchronous=FULL."""
    latencies = []
    with _connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.executescript(_RAW_SCHEMA)
        digest = bytes(32)
        for i in range(commits):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            for j in (0, 1):
                body = bodies[(2 * i + j) % len(bodies)]
                row = ("raw", 2 * i + j + 1, now + i, f"case-{i}", 1 + j, body, digest, digest, now)
                db.execute(_INSERT, row)
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
    return latencies


async def _create_store(path: Path) -> None:
    async with Store.open(path, create=True):
        pass


async def _read_meshdesk(path: Path, authors: Sequence[str], page: int) -> tuple[float, int]:
    async with Store.open(path, quick_check=False) as store:
        count = 0
        start = time.perf_counter()
        for author in authors:
            after = 0
            while True:
                events = await store.events_after(author, after, page)
                count += len(events)
                if len(events) < page:
                    break
                after = events[-1].seq
        elapsed = time.perf_counter() - start
    return elapsed, count


def _read_raw(path: Path, authors: Sequence[str], page: int) -> tuple[float, int]:
    with _connect(path) as db:
        count = 0
        start = time.perf_counter()
        for author in authors:
            after = 0
            while True:
                rows = db.execute(_SELECT_PAGE, (author, after, page)).fetchall()
                count += len(rows)
                if len(rows) < page:
                    break
                after = rows[-1][1]
        return time.perf_counter() - start, count


async def _open_meshdesk(path: Path, *, quick_check: bool) -> float:
    store = Store.open(path, quick_check=quick_check)
    start = time.perf_counter()
    await store.start()
    elapsed = time.perf_counter() - start
    await store.aclose()
    return elapsed


def _open_raw(path: Path, *, quick_check: bool) -> float:
    start = time.perf_counter()
    with _connect(path) as db:
        db.execute("PRAGMA quick_check" if quick_check else "PRAGMA user_version").fetchall()
        return time.perf_counter() - start


def _count_rows(path: Path) -> int:
    with _connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


def _check_count(what: str, got: int, expected: int) -> None:
    if got != expected:  # a bug in the bench or the store, not a user error
        raise RuntimeError(f"{what}: {got} events, expected {expected}")


def _prepare_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--dir {path} is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"--dir {path} is not empty; give a new or empty directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --dir {path}: {exc.strerror or exc}") from exc


def _stderr(line: str) -> None:
    print(f"bench store: {line}", file=sys.stderr, flush=True)


def run_store_bench(config: StoreBenchConfig, progress: Progress = _stderr) -> StoreBenchResult:
    """Generate events and measure meshdesk and raw SQLite on them, ``repeat`` times.

    Blocking (it runs its own event loops); call it from a thread in async code.

    Args:
        config: What to run.
        progress: Called with one line per phase and run.

    Raises:
        UsageError: ``config.dir`` is not a new or empty directory.
    """
    if config.dir is None:
        with tempfile.TemporaryDirectory(prefix="meshdesk-bench-") as tmp:
            return _run(config, Path(tmp), progress)
    _prepare_dir(config.dir)
    return _run(config, config.dir, progress)


def _run(config: StoreBenchConfig, folder: Path, progress: Progress) -> StoreBenchResult:
    n, repeat = config.events, config.repeat
    progress(f"generating {n:,} events of {config.authors} authors")
    start = time.perf_counter()
    events = generate_events(n, config.authors)
    authors = sorted({e.author for e in events})
    body_mean = sum(len(e.body) for e in events) / n
    progress(f"generated in {time.perf_counter() - start:.1f} s, bodies ~{body_mean:.0f} B")
    batches = _batches(events, config.batch)
    received_at = (events[-1].hlc >> 16) + 1_000
    ours_db, raw_db, guarded_db = folder / MESHDESK_DB, folder / RAW_DB, folder / GUARDED_DB

    samples: dict[str, list[float]] = {}

    def measure(name: str, seconds: float) -> float:
        samples.setdefault(name, []).append(seconds)
        return seconds

    for run in range(1, repeat + 1):
        for path in (ours_db, raw_db, guarded_db):
            _remove_db(path)
        # Alternate who goes first, so drift (caches, CPU clocks) does not favour one.
        order = ["ours", "raw", "guarded"] if run % 2 else ["raw", "guarded", "ours"]
        for who in order:
            if who == "ours":
                seconds, inserted = asyncio.run(_append_meshdesk(ours_db, batches, received_at))
                _check_count("Store.append_events inserted", inserted, n)
                measure("append", seconds)
            elif who == "raw":
                measure("raw_append", append_raw(raw_db, batches, received_at, guarded=False))
            else:
                measure(
                    "guarded_append", append_raw(guarded_db, batches, received_at, guarded=True)
                )
        progress(
            f"append {run}/{repeat}: meshdesk {samples['append'][-1]:.2f} s,"
            f" raw {samples['raw_append'][-1]:.2f} s,"
            f" raw into meshdesk schema {samples['guarded_append'][-1]:.2f} s"
        )
    rows = {"meshdesk": _count_rows(ours_db), "raw": _count_rows(raw_db)}
    rows["raw_guarded"] = _count_rows(guarded_db)
    for what, count in rows.items():
        _check_count(f"{what} database holds", count, n)
    db_bytes = ours_db.stat().st_size

    for run in range(1, repeat + 1):
        seconds, count = asyncio.run(_read_meshdesk(ours_db, authors, config.batch))
        _check_count("Store.events_after read", count, n)
        measure("read", seconds)
        seconds, count = _read_raw(ours_db, authors, config.batch)
        _check_count("raw SELECT read", count, n)
        measure("raw_read", seconds)
        progress(
            f"read {run}/{repeat}: meshdesk {samples['read'][-1]:.2f} s,"
            f" raw {samples['raw_read'][-1]:.2f} s"
        )

    for run in range(1, repeat + 1):
        measure("open", asyncio.run(_open_meshdesk(ours_db, quick_check=False)))
        measure("raw_open", _open_raw(ours_db, quick_check=False))
        measure("open_quick_check", asyncio.run(_open_meshdesk(ours_db, quick_check=True)))
        measure("raw_quick_check", _open_raw(ours_db, quick_check=True))
        progress(
            f"open {run}/{repeat}: meshdesk {samples['open'][-1] * 1000:.1f} ms"
            f" ({samples['open_quick_check'][-1] * 1000:.1f} ms with quick_check),"
            f" raw {samples['raw_open'][-1] * 1000:.1f} ms"
            f" ({samples['raw_quick_check'][-1] * 1000:.1f} ms with quick_check)"
        )

    commit_db, raw_commit_db = folder / COMMIT_DB, folder / RAW_COMMIT_DB
    bodies = [e.body for e in events[: 2 * config.commits]]
    commit: list[float] = []
    raw_commit: list[float] = []
    for run in range(1, repeat + 1):
        for path in (commit_db, raw_commit_db):
            _remove_db(path)
        ours = asyncio.run(_commit_meshdesk(commit_db, bodies, config.commits, received_at))
        raw = _commit_raw(raw_commit_db, bodies, config.commits, received_at)
        commit += ours
        raw_commit += raw
        progress(
            f"commit {run}/{repeat}: one case saved p50 meshdesk"
            f" {percentile(ours, 50) * 1000:.2f} ms, raw FULL {percentile(raw, 50) * 1000:.2f} ms"
        )

    s = {name: Summary.of(values) for name, values in samples.items()}
    return StoreBenchResult(
        config=config,
        body_bytes_mean=body_mean,
        db_bytes=db_bytes,
        rows=rows,
        append=s["append"],
        raw_append=s["raw_append"],
        guarded_append=s["guarded_append"],
        read=s["read"],
        raw_read=s["raw_read"],
        open=s["open"],
        raw_open=s["raw_open"],
        open_quick_check=s["open_quick_check"],
        raw_quick_check=s["raw_quick_check"],
        commit=tuple(commit),
        raw_full_commit=tuple(raw_commit),
    )


# -- command line ------------------------------------------------------------------------


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``store`` to the ``bench`` sub-commands."""
    parser = benches.add_parser(
        "store",
        help="Store appends, reads and opening vs raw SQLite",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = StoreBenchConfig()
    parser.add_argument(
        "--events",
        type=int,
        default=defaults.events,
        metavar="N",
        help=f"events to generate and append (default: {defaults.events})",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=defaults.batch,
        metavar="B",
        help=f"events per append and per read page (default: {defaults.batch})",
    )
    parser.add_argument(
        "--authors",
        type=int,
        default=defaults.authors,
        metavar="A",
        help=f"nodes that wrote the events (default: {defaults.authors})",
    )
    parser.add_argument(
        "--commits",
        type=int,
        default=defaults.commits,
        metavar="C",
        help=f"single-case durable commits timed one by one, per run (default: {defaults.commits})",
    )
    add_run_arguments(parser, repeat=defaults.repeat)
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="new or empty directory to write and keep the databases in"
        " (default: a temp folder, removed afterwards)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run ``bench store`` from parsed arguments; print the table or the JSON."""
    config = StoreBenchConfig(
        events=args.events,
        batch=args.batch,
        authors=args.authors,
        repeat=args.repeat,
        dir=Path(args.dir) if args.dir else None,
        commits=args.commits,
    )
    result = run_store_bench(config)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.format_table())
    return 0
