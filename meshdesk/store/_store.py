"""The :class:`Store`: one node's SQLite database behind an async API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import logging
import operator
import os
import sqlite3
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from meshdesk._lifecycle import AsyncResource
from meshdesk.errors import StoreError, StoreFull
from meshdesk.store._caseindex import Indexed, indexed_cases, upsert_summaries
from meshdesk.store._chain import INT64_MAX, Heads, check_event, check_int64, plan_append
from meshdesk.store._payloads import (
    PAYLOADS_VERSION,
    erase_rows,
    late_payloads,
    pack_payloads,
    unpack_payloads,
)
from meshdesk.store._reader import CaseReader
from meshdesk.store._schema import (
    MIGRATIONS,
    Migration,
    check_database,
    latest_version,
    migrate,
    not_meshdesk_error,
    prepare_file,
)
from meshdesk.store._sql import chunks, insert_rows
from meshdesk.store.records import (
    ZERO_HASH,
    CaseIndexer,
    CaseSummary,
    Checkpoint,
    IssuedNode,
    RevokedNode,
    StoreCounts,
    StoredEvent,
    stored_event,
)

__all__ = ["Store", "StoreState"]

#: ``(author, seq)`` of an event, as the chain orders it (a C-level sort key).
_CHAIN_ORDER = operator.attrgetter("author", "seq")

_T = TypeVar("_T")
log = logging.getLogger(__name__)

_EVENT_COLUMNS = "author, seq, hlc, case_id, kind, body, prev_hash, hash"
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}, received_at)"
#: Schema 4 keeps each event's detached sealed blobs in its row (``_payloads``).
_INSERT_WITH_PAYLOADS = f"INSERT INTO events ({_EVENT_COLUMNS}, received_at, payloads)"
_ISSUED_COLUMNS = "node_id, name, site, role, departments, serial, cert_pem, issued_at"

# Each author's head through the primary key: a skip-scan from author to author, so
# opening costs O(authors · log events) rather than a scan of every event.
_HEADS_QUERY = """
WITH RECURSIVE authors (author) AS (
    SELECT min(author) FROM events
    UNION ALL
    SELECT (SELECT min(author) FROM events WHERE author > authors.author)
    FROM authors WHERE authors.author IS NOT NULL
)
SELECT e.author, e.seq, e.hash FROM authors
JOIN events AS e ON e.author = authors.author
    AND e.seq = (SELECT max(seq) FROM events WHERE author = authors.author)
"""


#: Schema version that brought the case index.
_INDEX_VERSION = 3
#: Cases folded per transaction when the index catches up with queued cases.
_TODO_BATCH = 2_000


class StoreState(enum.Enum):
    """Lifecycle of a :class:`Store`: it only ever moves forward."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class Store(AsyncResource):
    """A node's local database: the event log, node facts, and HQ's kit registry.

    Use it as an async context manager; it is ready when ``async with`` enters::

        async with Store.open(path, create=True) as store:
            await store.append_events(events, received_at=now_ms)

    An owner that manages lifetimes itself may call ``await store.start()`` and,
    later, ``await store.aclose()`` (idempotent). A store that failed to start, or
    was closed, cannot be started again; any use of it raises :class:`StoreError`.

    The store is the only writer of its database: it keeps every author's chain head
    in memory so that appends need no scans. Operations are serialised on one SQLite
    connection, so a reader never sees half of a batch. The store never reads a
    clock: callers pass times in.

    Args:
        path: The database file. It is never moved, renamed or rebuilt.
        create: Create the file (mode 0o600) if it is missing; its directory must
            exist. Without it a missing file is an error.
        migrations: Forward migrations, ``(version, SQL or callable)``, versions
            1, 2, 3, ...; injectable for tests.
        busy_timeout: Seconds to wait for another process's lock before failing.
        quick_check: Run ``PRAGMA quick_check`` when opening, so damage is found at
            once rather than in the middle of a sync.
        check_in_background_above: A database file larger than this many bytes is
            checked in the background once the store is ready, on a connection of its
            own (the check reads every page: ≈ 2 ms per MiB, seconds for an HQ of a
            million cases); damage found is logged as an error and kept in
            :attr:`damage`. None: always check before ready.
        check_delay: Seconds the background check waits before it starts reading.
        indexer: Keeps the case index (``case_index``) in step: every transaction
            that stores events also stores the rows of the cases they touch. Without
            one, the touched cases are only queued (``case_index_todo``), and the
            next store opened with an indexer folds them before it is ready.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout: float = 5.0,
        quick_check: bool = True,
        indexer: CaseIndexer | None = None,
        check_in_background_above: int | None = None,
        check_delay: float = 0.0,
    ) -> None:
        self._path = Path(path)
        self._create = create
        self._migrations = tuple(migrations)
        self._known_version = latest_version(self._migrations)
        self._busy_timeout = busy_timeout
        self._quick_check = quick_check
        self._background_above = check_in_background_above
        self._checker: asyncio.Task[None] | None = None
        self._reader: CaseReader | None = None
        self._deferred = False
        self._check_delay = check_delay
        #: What a background ``quick_check`` found wrong (None: nothing, or not run).
        self.damage: str | None = None
        self._state = StoreState.NEW
        self._starting = False
        self._db: aiosqlite.Connection | None = None
        #: The same SQLite connection as ``_db``, for write jobs (:meth:`_in_thread`).
        self._raw: sqlite3.Connection | None = None
        self._jobs: concurrent.futures.ThreadPoolExecutor | None = None
        self._job: asyncio.Future[Any] | None = None
        self._lock = asyncio.Lock()
        self._heads: Heads = {}
        #: ``time.monotonic()`` of the last append that stored something (0: none
        #: yet): background work yields while replication is storing runs.
        self.appended_at = 0.0
        self._needs_recovery = False
        self._schema_version = 0
        self._indexer = indexer

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout: float = 5.0,
        quick_check: bool = True,
        indexer: CaseIndexer | None = None,
        check_in_background_above: int | None = None,
        check_delay: float = 0.0,
    ) -> Store:
        """Return a store for ``async with``; nothing is opened until it enters."""
        return cls(
            path,
            create=create,
            migrations=migrations,
            busy_timeout=busy_timeout,
            quick_check=quick_check,
            indexer=indexer,
            check_in_background_above=check_in_background_above,
            check_delay=check_delay,
        )

    # -- lifecycle ---------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def state(self) -> StoreState:
        """Where the store is in its lifecycle."""
        return self._state

    @property
    def index(self) -> CaseReader:
        """The case index, read on a connection of its own (see :mod:`._reader`)."""
        self._check_running()
        assert self._reader is not None
        return self._reader

    @property
    def keeps_case_index(self) -> bool:
        """Whether this store was given a case indexer (see the class docstring)."""
        return self._indexer is not None

    @property
    def _read_columns(self) -> str:
        """The event columns reads return: with the payloads from schema 4 on."""
        extra = ", payloads" if self._schema_version >= PAYLOADS_VERSION else ""
        return _EVENT_COLUMNS + extra

    @property
    def schema_version(self) -> int:
        """Schema version of the open database (0 before :meth:`start`)."""
        return self._schema_version

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Check, migrate and open the database; return when the store is ready.

        Raises:
            StoreError: the file is missing, not a meshdesk database, damaged, of a
                newer schema, locked, or cannot be written; or the store was started
                or closed before.
        """
        if self._state is not StoreState.NEW or self._starting:
            raise StoreError(f"store {self._path} cannot be started twice")
        self._starting = True
        try:
            db, version, heads = await self._open()
        except BaseException:
            self._state = StoreState.CLOSED
            raise
        finally:
            self._starting = False
        if self._closed_meanwhile():
            with contextlib.suppress(sqlite3.Error):
                await db.close()
            raise StoreError(f"store {self._path} was closed while it was opening")
        reader = CaseReader(self._path, self._error, self._busy_timeout)
        try:
            await reader.open()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await db.close()
            self._state = StoreState.CLOSED
            raise
        self._db, self._schema_version, self._heads = db, version, heads
        reader.payloads = version >= PAYLOADS_VERSION
        self._reader = reader
        self._state = StoreState.RUNNING
        if self._quick_check and self._deferred:
            self._checker = asyncio.create_task(self._check_later(), name="store quick_check")
        if self._indexer is not None and self._schema_version >= _INDEX_VERSION:
            try:
                await self.index_queued()
            except BaseException:
                await self.aclose()
                raise

    def _closed_meanwhile(self) -> bool:
        """Whether aclose() ran while start() was awaiting (a method, so mypy does
        not carry its narrowing of ``_state`` across the awaits)."""
        return self._state is StoreState.CLOSED

    async def aclose(self) -> None:
        """Close the database after the operation in flight; idempotent."""
        if self._state is StoreState.CLOSED:
            return
        self._state = StoreState.CLOSED
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()
        db, self._db = self._db, None
        if db is None:
            return
        try:
            async with self._lock:  # let the operation in flight finish
                await self._finish_job()
        finally:
            with contextlib.suppress(sqlite3.Error):
                await db.close()
            jobs, self._jobs = self._jobs, None
            if jobs is not None:
                jobs.shutdown(wait=False)
            self._raw = None

    def _defer_check(self) -> bool:
        """Whether the file is large enough to be checked in the background (blocking)."""
        limit = self._background_above
        try:
            return limit is not None and self._path.stat().st_size > limit
        except OSError:
            return False

    async def _check_later(self) -> None:
        """``PRAGMA quick_check`` on a read-only connection of its own (WAL lets it read
        while the store writes), once the node had a moment to come up; damage is logged
        as an error and kept in ``damage``."""
        await asyncio.sleep(self._check_delay)
        try:
            problem = await asyncio.to_thread(_quick_check, self._path)
        except sqlite3.Error as exc:
            problem = str(exc)
        if problem is not None:
            self.damage = str(not_meshdesk_error(self._path, f"damaged ({problem})"))
            log.error("%s; stop the node and restore the store from a peer or a backup",
                      self.damage)  # fmt: skip
        else:
            log.info("store %s checked: no damage found", self._path)

    async def _open(self) -> tuple[aiosqlite.Connection, int, Heads]:
        await asyncio.to_thread(
            prepare_file, self._path, create=self._create, known_version=self._known_version
        )
        self._deferred = await asyncio.to_thread(self._defer_check)
        quick_check = self._quick_check and not self._deferred
        try:
            # timeout= is SQLite's busy timeout; isolation_level=None leaves BEGIN and
            # COMMIT to us, so a batch is exactly one transaction. The connection is
            # ours too (check_same_thread=False): write jobs run on it in a thread of
            # their own while no aiosqlite operation is in flight (_in_thread).
            db = await aiosqlite.Connection(self._connect, iter_chunk_size=64)
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        try:
            # Everything up to the migrations only reads: a refused file stays as it was.
            version = await check_database(
                db, self._path, known_version=self._known_version, quick_check=quick_check
            )
            await self._configure(db)
            version = await migrate(db, self._path, self._migrations, version)
            heads = await _load_heads(db)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                await db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open", exc) from exc
            raise
        return db, version, heads

    def _connect(self) -> sqlite3.Connection:
        raw = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        self._raw = raw
        return raw

    async def _configure(self, db: aiosqlite.Connection) -> None:
        rows = await db.execute_fetchall("PRAGMA journal_mode = WAL")
        mode = str(next(iter(rows))[0]).lower()
        if mode != "wal":
            raise StoreError(f"database {self._path} cannot use write-ahead logging ({mode})")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        # What a delete or an erasure frees is overwritten with zeros, not left in
        # free pages for someone who copies the file (docs/ARCHITECTURE.md, Erasure).
        await db.execute("PRAGMA secure_delete = ON")

    # -- plumbing ----------------------------------------------------------------

    def _error(self, doing: str, exc: sqlite3.Error) -> StoreError:
        """Translate an SQLite error into one line naming the file."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            return not_meshdesk_error(self._path, str(exc))
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreError(f"database {self._path} is locked by another process ({exc})")
        if code == sqlite3.SQLITE_FULL:
            return StoreFull(
                f"the disk holding {self._path} is full: nothing was saved. Free some space "
                "(delete old exports or files on that disk) and try again"
            )
        return StoreError(f"cannot {doing} database {self._path}: {exc}")

    def _check_running(self) -> None:
        if self._state is StoreState.NEW:
            raise StoreError(f"store {self._path} is not open yet (use `async with`)")
        if self._state is StoreState.CLOSED:
            raise StoreError(f"store {self._path} is closed")

    @contextlib.asynccontextmanager
    async def _session(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        """Exclusive use of the connection for one operation; errors translated."""
        self._check_running()
        async with self._lock:
            self._check_running()
            db = self._db
            assert db is not None
            try:
                if self._needs_recovery:
                    await self._recover(db)
                yield db
            except sqlite3.Error as exc:
                raise self._error(doing, exc) from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, db: aiosqlite.Connection) -> AsyncIterator[None]:
        """One write transaction; call inside :meth:`_session`.

        In-memory state changed inside the block is trusted only once COMMIT is
        known to have succeeded; until then the next operation reloads it.
        """
        self._needs_recovery = True
        try:
            await db.execute("BEGIN IMMEDIATE")
            yield
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            raise
        self._needs_recovery = False

    async def _in_thread(self, job: Callable[..., _T], *args: Any) -> _T:
        """Run ``job(connection, *args)`` on the store's writer thread; call inside
        :meth:`_session`, which keeps every other use of the connection out.

        A write transaction runs as one job: its statements follow each other
        without a round trip through the event loop per statement, which a busy
        loop (a catch-up verifying runs) would delay each time. A caller cancelled
        meanwhile leaves the job to finish; the next operation waits for it.
        """
        raw = self._raw
        assert raw is not None
        if self._jobs is None:
            self._jobs = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="store-writer"
            )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._jobs, job, raw, *args)
        self._job = future
        result: _T = await asyncio.shield(future)
        return result

    async def _finish_job(self) -> None:
        """Wait for a job whose caller was cancelled (its outcome is the recovery's)."""
        job, self._job = self._job, None
        if job is not None and not job.done():
            await asyncio.wait([job])

    async def _recover(self, db: aiosqlite.Connection) -> None:
        """Repair state after an operation was cancelled halfway through."""
        await self._finish_job()
        await db.execute_fetchall("SELECT 1")  # waits for the cancelled work to finish
        if db.in_transaction:
            await db.execute("ROLLBACK")
        self._heads = await _load_heads(db)
        self._needs_recovery = False

    # -- events ------------------------------------------------------------------

    async def append_events(self, events: Sequence[StoredEvent], received_at: int) -> int:
        """Store a batch of events in one transaction, all or nothing.

        Order inside the batch does not matter. Each author's events must continue
        its chain: ``seq`` one past the stored head (or an earlier event of the
        batch) and ``prev_hash`` equal to that event's hash. An event already stored
        with the same hash is skipped.

        Args:
            events: The batch.
            received_at: Arrival time in milliseconds, stored with each new event.

        Returns:
            How many events were inserted (duplicates are not counted).

        Raises:
            StoreError: a malformed event, a gap, a broken chain, or a fork (same
                author and seq, different hash); nothing of the batch is stored.
        """
        return len(await self._append(events, received_at, ()))

    async def append_run(
        self,
        events: Sequence[StoredEvent],
        checkpoint: Checkpoint,
        received_at: int,
        *,
        rank: int | None = None,
    ) -> int:
        """Store a verified run of one author's events with the checkpoint that ends it.

        Events and checkpoint go in one transaction: a run is never half stored.
        The caller has verified the run (``meshdesk.cases.chain.verify_run``); the
        database checks again that the checkpoint matches the stored chain.

        Raises:
            StoreError: as :meth:`append_events`, or a checkpoint that does not
                match the chain; nothing is stored.
        """
        ranks = None if rank is None else [rank]
        return (await self.append_runs([(events, checkpoint)], received_at, ranks=ranks))[0]

    def fold_run(self, events: Sequence[StoredEvent]) -> tuple[int | None, dict[str, CaseSummary]]:
        """A run's sending rank and the index rows of the cases it touches, as if
        these were all their events; ``(None, {})`` for a store without an indexer.

        Pure (no database): sync calls it as it verifies a run, while the previous
        group commit is being written, and hands the rows to :meth:`append_runs`,
        which uses a row only for a case new to the index that no other run of the
        group touches — any other case is folded in the transaction, from all of its
        stored events.
        """
        if self._indexer is None:
            return None, {}
        return self._indexer.fold_run(events)

    async def append_runs(
        self,
        runs: Sequence[tuple[Sequence[StoredEvent], Checkpoint]],
        received_at: int,
        *,
        ranks: Sequence[int] | None = None,
        folded: Sequence[Mapping[str, CaseSummary]] | None = None,
    ) -> list[int]:
        """Store several verified runs in ONE transaction: one commit, one fsync.

        This is how sync keeps its rate with durable commits: runs that arrive while
        a commit is being synced wait and go together in the next one. Runs may
        repeat each other (two peers relaying the same chain) or continue each other
        (the same author, consecutive batches); order them as they continue.
        ``ranks`` and ``folded`` (:meth:`fold_run` of each run) are what the caller
        worked out beforehand.

        Returns:
            For each run, how many of its events were new (an event that two runs
            carry counts for the first).

        Raises:
            StoreError: as :meth:`append_run` for any run; then nothing is stored.
        """
        for events, checkpoint in runs:
            if not events or any(e.author != checkpoint.author for e in events):
                raise StoreError("a run holds events of its checkpoint's author only")
        indexer = self._indexer
        kept: Sequence[int | None] = (
            [None if indexer is None else indexer.rank(events) for events, _ in runs]
            if ranks is None
            else ranks  # the caller ranked them already (sync does, once)
        )
        alone: dict[str, CaseSummary] = {}
        if folded is not None:
            runs_of: Counter[str] = Counter(case_id for rows in folded for case_id in rows)
            alone = {
                case_id: row
                for rows in folded
                for case_id, row in rows.items()
                if runs_of[case_id] == 1
            }
        every = [e for events, _ in runs for e in events]
        new = await self._append(
            every,
            received_at,
            [(c, rank) for (_, c), rank in zip(runs, kept, strict=True)],
            alone,
        )
        if len(new) == len(every):  # all new, and no run repeats another: a catch-up
            return [len(events) for events, _ in runs]
        inserted = {(e.author, e.seq) for e in new}
        counts = []
        for events, _ in runs:
            fresh = {(e.author, e.seq) for e in events} & inserted
            inserted -= fresh
            counts.append(len(fresh))
        return counts

    async def _append(
        self,
        events: Sequence[StoredEvent],
        received_at: int,
        checkpoints: Sequence[tuple[Checkpoint, int | None]],
        folded: Mapping[str, CaseSummary] | None = None,
    ) -> list[StoredEvent]:
        """Append in one transaction; returns the events that were new.

        ``folded``: index rows of cases whose events are all in ``events`` if the
        case is new to the index (see :meth:`append_runs`).
        """
        self._check_running()
        check_int64("received_at", received_at)
        for event in events:
            check_event(event)
        if not events:
            return []
        batch = sorted(events, key=_CHAIN_ORDER)
        async with self._session("append events to"):
            self._needs_recovery = True  # until the job is known to have finished
            try:
                new, tips = await self._in_thread(
                    self._append_job, batch, received_at, checkpoints, folded or {}
                )
            except StoreError:  # refused before its transaction began: nothing to repair
                self._needs_recovery = False
                raise
            self._needs_recovery = False
            if tips:
                self._heads.update(tips)
            if new or checkpoints:
                self.appended_at = time.monotonic()
        return new

    def _append_job(
        self,
        db: sqlite3.Connection,
        batch: Sequence[StoredEvent],
        received_at: int,
        checkpoints: Sequence[tuple[Checkpoint, int | None]],
        folded: Mapping[str, CaseSummary],
    ) -> tuple[list[StoredEvent], Heads]:
        """:meth:`_append`'s transaction, as one job on the writer thread; returns
        the new events and the new heads (empty when nothing was stored)."""
        stored = _stored_hashes(db, batch, self._heads)
        new, tips = plan_append(batch, self._heads, stored)
        # Payloads of events stored before without them (a peer that had erased the
        # case, or withheld them) are kept too: plan_append found their hashes equal,
        # so their bodies, which name the payloads, are the stored ones.
        late = [] if self._schema_version < PAYLOADS_VERSION else [
            e for e in batch if e.payloads and e.seq <= self._heads.get(e.author, (0,))[0]
        ]  # fmt: skip
        if not (new or checkpoints or late):
            return [], {}
        indexed = self._schema_version >= _INDEX_VERSION
        db.execute("BEGIN IMMEDIATE")
        try:
            if new and self._schema_version >= PAYLOADS_VERSION:
                insert_rows(
                    db,
                    _INSERT_WITH_PAYLOADS,
                    [(*_row(e, received_at), pack_payloads(e.payloads)) for e in new],
                )
            elif new:
                insert_rows(db, _INSERT_EVENT, [_row(e, received_at) for e in new])
            if new and indexed:
                self._index_new(db, new, folded)
            if late:
                late_payloads(db, late)
            if checkpoints and indexed:
                insert_rows(
                    db,
                    "INSERT OR IGNORE INTO checkpoints (author, seq, hash, sig, rank)",
                    [(c.author, c.seq, c.hash, c.sig, r) for c, r in checkpoints],
                )
            elif checkpoints:  # a database of an older schema (tests of migrations)
                db.executemany(
                    "INSERT OR IGNORE INTO checkpoints (author, seq, hash, sig) "
                    "VALUES (?, ?, ?, ?)",
                    [(c.author, c.seq, c.hash, c.sig) for c, _ in checkpoints],
                )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return new, tips

    # -- the case index ------------------------------------------------------------

    def _index_new(
        self,
        db: sqlite3.Connection,
        new: Sequence[StoredEvent],
        folded: Mapping[str, CaseSummary],
    ) -> None:
        """Bring the rows of the cases ``new`` touches up to date (same transaction);
        ``folded`` as in :meth:`_append`."""
        touched: dict[str, list[StoredEvent]] = {}
        for event in new:
            if event.case_id is not None:
                touched.setdefault(event.case_id, []).append(event)
        if not touched:
            return
        if self._indexer is None:
            insert_rows(
                db,
                "INSERT OR IGNORE INTO case_index_todo (case_id)",
                [(case_id,) for case_id in touched],
            )
            return
        before = indexed_cases(db, list(touched))
        # A case new to the index has no older events (a queued one is folded before
        # the store is ready): its events are all in this batch.
        known = [case_id for case_id in touched if case_id in before]
        ready = [
            folded[case_id] for case_id in touched if case_id not in before and case_id in folded
        ]
        for row in ready:
            del touched[row.case_id]
        touched.update(_case_events(db, known))
        self._write_summaries(db, touched, before, ready)

    def _refold(self, db: sqlite3.Connection, case_ids: Sequence[str]) -> None:
        """Fold the rows of these cases again from all of their events (a write job,
        inside the caller's transaction)."""
        self._write_summaries(db, _case_events(db, case_ids), indexed_cases(db, case_ids))

    def _write_summaries(
        self,
        db: sqlite3.Connection,
        cases: dict[str, list[StoredEvent]],
        before: dict[str, Indexed],
        ready: Sequence[CaseSummary] = (),
    ) -> None:
        indexer = self._indexer
        assert indexer is not None
        summaries: list[CaseSummary] = list(ready)
        for case_id, events in cases.items():
            summaries.append(indexer.summarise(case_id, events))
        upsert_summaries(db, summaries, before)

    async def index_queued(self, progress_every: int = 20_000) -> int:
        """Fold every case queued for the index (``case_index_todo``); returns how many.

        Runs when a store with an indexer opens: after the migration that created
        the index, or after events were stored without an indexer. Each batch of
        cases is one transaction; progress is logged.
        """
        if self._indexer is None:
            raise StoreError(f"store {self._path} has no case indexer")
        async with self._session("read the case index of") as db:
            rows = await db.execute_fetchall("SELECT count(*) FROM case_index_todo")
        total = int(next(iter(rows))[0])
        if not total:
            return 0
        log.info("case index of %s: folding %d cases", self._path, total)
        done = 0
        while True:
            async with self._session("build the case index of") as db:
                rows = await db.execute_fetchall(
                    "SELECT case_id FROM case_index_todo LIMIT ?", (_TODO_BATCH,)
                )
                case_ids = [case_id for (case_id,) in rows]
                if not case_ids:
                    break
                async with self._transaction(db):
                    await self._in_thread(self._refold, case_ids)
                    for part in chunks(case_ids):
                        await db.execute(
                            "DELETE FROM case_index_todo"
                            f" WHERE case_id IN ({', '.join('?' * len(part))})",
                            tuple(part),
                        )
            done += len(case_ids)
            if done // progress_every != (done - len(case_ids)) // progress_every:
                log.info("case index of %s: %d of %d cases folded", self._path, done, total)
        return done

    async def rebuild_case_index(self) -> int:
        """Fold every case again from its events (rows keep their keys); returns how many."""
        async with self._session("rebuild the case index of") as db, self._transaction(db):
            await db.execute(
                "INSERT OR IGNORE INTO case_index_todo"
                " SELECT DISTINCT case_id FROM events WHERE case_id IS NOT NULL"
            )
        return await self.index_queued()

    async def set_search_terms(
        self, entries: Sequence[tuple[int, bytes | None, Sequence[int]]]
    ) -> None:
        """Replace the search terms of cases, ``(case_key, personal digest, terms)``,
        and take them off the search queue; one transaction.

        ``terms`` are keyed hashes (:mod:`meshdesk.cases.search`); empty for a case
        this node cannot read.
        """
        if not entries:
            return
        async with self._session("write search terms to") as db, self._transaction(db):
            keys = [key for key, _, _ in entries]
            old: dict[int, bytes] = {}
            for part in chunks(keys):
                rows = await db.execute_fetchall(
                    "SELECT case_key, terms FROM case_search"
                    f" WHERE case_key IN ({', '.join('?' * len(part))})",
                    tuple(part),
                )
                old.update((key, bytes(terms)) for key, terms in rows)
            gone = [(term, key) for key in keys for term in _unpack_terms(old.get(key, b""))]
            await db.executemany("DELETE FROM case_terms WHERE term = ? AND case_key = ?", gone)
            await db.executemany(
                "INSERT OR IGNORE INTO case_terms (term, case_key) VALUES (?, ?)",
                [(term, key) for key, _, terms in entries for term in terms],
            )
            await db.executemany(
                "INSERT INTO case_search (case_key, personal, terms) VALUES (?, ?, ?)"
                " ON CONFLICT (case_key) DO UPDATE"
                " SET personal = excluded.personal, terms = excluded.terms",
                [(key, digest, _pack_terms(terms)) for key, digest, terms in entries],
            )
            await db.executemany(
                "DELETE FROM search_todo WHERE case_key = ?", [(key,) for key in keys]
            )

    async def case_ids(self) -> list[str]:
        """Every case id with at least one stored event."""
        async with self._session("read case ids from") as db:
            rows = await db.execute_fetchall(
                "SELECT DISTINCT case_id FROM events WHERE case_id IS NOT NULL ORDER BY case_id"
            )
        return [case_id for (case_id,) in rows]

    async def event_hashes(self) -> list[tuple[str, int, bytes]]:
        """Every stored event as ``(author, seq, hash)``, sorted (see :func:`digest_of`)."""
        async with self._session("read event hashes from") as db:
            rows = await db.execute_fetchall(
                "SELECT author, seq, hash FROM events ORDER BY author, seq"
            )
        return [(author, seq, bytes(digest)) for author, seq, digest in rows]

    async def checkpoints(self, author: str, after_seq: int = 0) -> list[Checkpoint]:
        """The author's checkpoints past ``after_seq``, oldest first."""
        async with self._session("read checkpoints from") as db:
            rows = await db.execute_fetchall(
                "SELECT author, seq, hash, sig FROM checkpoints "
                "WHERE author = ? AND seq > ? ORDER BY seq",
                (author, after_seq),
            )
        return [Checkpoint(a, q, bytes(h), bytes(g)) for a, q, h, g in rows]

    async def ranked_checkpoints(
        self, author: str, after_seq: int = 0
    ) -> list[tuple[Checkpoint, int | None]]:
        """The author's checkpoints past ``after_seq`` with the sending rank stored
        with each (None: stored before ranks were kept, or without an indexer)."""
        async with self._session("read checkpoints from") as db:
            rows = await db.execute_fetchall(
                "SELECT author, seq, hash, sig, rank FROM checkpoints "
                "WHERE author = ? AND seq > ? ORDER BY seq",
                (author, after_seq),
            )
        return [(Checkpoint(a, q, bytes(h), bytes(g)), r) for a, q, h, g, r in rows]

    async def save_certificate(self, node_id: str, der: bytes, seen_at: int) -> bool:
        """Remember a node's (already verified) certificate; True when it is new."""
        async with self._session("write a certificate to") as db, self._transaction(db):
            cursor = await db.execute(
                "INSERT OR IGNORE INTO certificates (node_id, der, seen_at) VALUES (?, ?, ?)",
                (node_id, der, seen_at),
            )
            return cursor.rowcount == 1

    async def certificates(self) -> dict[str, bytes]:
        """Every node certificate this node has seen, by node id."""
        async with self._session("read certificates from") as db:
            rows = await db.execute_fetchall("SELECT node_id, der FROM certificates")
        return {node_id: bytes(der) for node_id, der in rows}

    async def heads(self) -> dict[str, tuple[int, bytes]]:
        """Every author's latest event: ``author -> (seq, hash)``."""
        async with self._session("read"):
            return dict(self._heads)

    async def events_after(self, author: str, after_seq: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events of ``author`` with seq above ``after_seq``, in order."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT {self._read_columns} FROM events"
                " WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?",
                (author, after_seq, limit),
            )
        return _events(rows)

    async def events_in_order(self, after: int, limit: int) -> list[tuple[int, StoredEvent]]:
        """Up to ``limit`` events stored after local position ``after``, with their
        positions: the order this store took them in (the rowid of the append-only
        ``events`` table; 0 is before the first). Bodies only, no payloads: what the
        prefecture feed reads (:mod:`meshdesk.hub.publisher`)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT rowid, {_EVENT_COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid"
                " LIMIT ?",
                (after, limit),
            )
        return [
            (int(row[0]), event)
            for row, event in zip(rows, _events(r[1:] for r in rows), strict=True)
        ]

    async def events_of_kinds(self, kinds: Sequence[int]) -> list[StoredEvent]:
        """Every stored event that belongs to no case and has one of ``kinds``
        (announcements, messages, receipts), by ``(hlc, author, seq)``."""
        if not kinds:
            return []
        marks = ", ".join("?" * len(kinds))
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT {_EVENT_COLUMNS} FROM events"
                f" WHERE case_id IS NULL AND kind IN ({marks}) ORDER BY hlc, author, seq",
                [int(k) for k in kinds],
            )
        return _events(rows)

    async def events_since(self, received_after: int) -> list[tuple[str, int]]:
        """``(author, seq)`` of the first event of each chain received after the
        given time (ms), for bundles of "what arrived since"."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                "SELECT author, min(seq) FROM events WHERE received_at > ? GROUP BY author",
                (received_after,),
            )
        return [(author, seq) for author, seq in rows]

    async def events_for_case(self, case_id: str) -> list[StoredEvent]:
        """All events of one case, ordered by (hlc, author, seq)."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT {self._read_columns} FROM events WHERE case_id = ?"
                " ORDER BY hlc, author, seq",
                (case_id,),
            )
        return _events(rows)

    # -- erasure -------------------------------------------------------------------

    async def erase_case(
        self, case_id: str, redact: Sequence[tuple[str, int]], erased_at: int
    ) -> int:
        """Drop a case's sealed data for good; returns how many payloads and old
        bodies went (0 when it was erased before).

        One durable transaction: the case is marked erased (its payloads are never
        stored again), its payloads deleted, the listed old events (``(author, seq)``
        of bodies that hold a sealed blob inline) redacted, its search terms deleted
        and its index row folded again. Then the WAL is checkpointed and truncated,
        so the freed bytes (zeroed: ``secure_delete``) leave the ``-wal`` file too.
        """
        check_int64("erased_at", erased_at)
        if self._schema_version < PAYLOADS_VERSION:
            raise StoreError(f"database {self._path} predates erasure (schema 4)")
        async with self._session("erase a case in") as db, self._transaction(db):
            dropped = await erase_rows(db, case_id, redact, erased_at)
            rows = await db.execute_fetchall(
                "SELECT s.case_key, s.terms FROM case_search AS s"
                " JOIN case_index AS c USING (case_key) WHERE c.case_id = ?",
                (case_id,),
            )
            for key, terms in rows:
                await db.executemany(
                    "DELETE FROM case_terms WHERE term = ? AND case_key = ?",
                    [(term, key) for term in _unpack_terms(bytes(terms))],
                )
                await db.execute("DELETE FROM case_search WHERE case_key = ?", (key,))
            if self._indexer is not None and redact:
                await self._in_thread(self._refold, [case_id])
        await self.checkpoint_wal()
        return dropped

    async def checkpoint_wal(self, attempts: int = 50) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes; True when
        done. A reader in the middle of a read holds it back: retried briefly, then
        left to the next erasure (or closing, which checkpoints too), and logged."""
        for _ in range(attempts):
            async with self._session("checkpoint") as db:
                rows = await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            busy = next(iter(rows))[0]
            if not busy:
                return True
            await asyncio.sleep(0.02)
        log.warning("store %s: the WAL could not be truncated now (readers busy)", self._path)
        return False

    async def erased_cases(self) -> dict[str, int]:
        """Cases erased on this node: ``case_id -> erased_at`` (ms)."""
        if self._schema_version < PAYLOADS_VERSION:
            return {}
        async with self._session("read erasures from") as db:
            rows = await db.execute_fetchall("SELECT case_id, erased_at FROM erased")
        return {case_id: int(at) for case_id, at in rows}

    async def exports(self) -> list[StoredEvent]:
        """Every export record (kind 32, any node), oldest first."""
        if self._schema_version < PAYLOADS_VERSION:
            return []
        async with self._session("read exports from") as db:
            rows = await db.execute_fetchall(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind = 32 ORDER BY hlc"
            )
        return _events(rows)

    async def pending_erasures(self) -> list[str]:
        """Cases holding an erasure event (kind 30) that this node has not applied:
        authorised or not, the case book decides."""
        if self._schema_version < PAYLOADS_VERSION:
            return []
        async with self._session("read erasures from") as db:
            rows = await db.execute_fetchall(
                "SELECT DISTINCT case_id FROM events WHERE kind = 30 AND case_id NOT IN"
                " (SELECT case_id FROM erased) ORDER BY case_id"
            )
        return [case_id for (case_id,) in rows]

    async def newest_hlc_of(self, node_id: str) -> int:
        """The highest HLC among the events of every chain of ``node_id`` (0: none).

        A node's chains are named ``NODE-ID`` and ``NODE-ID/EPOCH``
        (:mod:`meshdesk.cases.chain`); the primary key finds them as one range.
        """
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                "SELECT max(hlc) FROM events WHERE author = ? OR (author > ? AND author < ?)",
                (node_id, node_id + "/", node_id + "0"),
            )
        newest = next(iter(rows))[0]
        return int(newest) if newest is not None else 0

    async def counts(self) -> StoreCounts:
        """How much the store holds."""
        async with self._session("read") as db:
            # Events and index rows are never deleted, so the largest rowid is the
            # count (O(log n), where count(*) reads a whole index: seconds at 2 M).
            rows = await db.execute_fetchall(
                "SELECT coalesce((SELECT max(rowid) FROM events), 0),"
                " coalesce((SELECT max(case_key) FROM case_index), 0)"
                " + (SELECT count(*) FROM case_index_todo"
                "    WHERE case_id NOT IN (SELECT case_id FROM case_index)),"
                " (SELECT count(*) FROM issued_nodes),"
                " (SELECT count(*) FROM revoked)"
            )
            events, cases, issued, revoked = next(iter(rows))
            return StoreCounts(
                events=events,
                authors=len(self._heads),
                cases=cases,
                issued_nodes=issued,
                revoked_nodes=revoked,
            )

    # -- node facts --------------------------------------------------------------

    async def get_meta(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        for (value,) in rows:
            return bytes(value)
        return None

    async def set_meta(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing what was there."""
        if not isinstance(value, bytes):
            raise StoreError(f"meta value for {key!r} must be bytes, not {type(value).__name__}")
        async with self._session("write") as db, self._transaction(db):
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- HQ registry -------------------------------------------------------------

    async def record_issued(self, node: IssuedNode) -> None:
        """Record a kit HQ issued.

        Raises:
            StoreError: the node id or the certificate serial is recorded already;
                a serial or node id is issued once, so a second record is a mistake.
        """
        check_int64("issued_at", node.issued_at)
        row = (
            node.node_id,
            node.name,
            node.site,
            node.role,
            json.dumps(list(node.departments), ensure_ascii=False),
            node.serial,
            node.cert_pem,
            node.issued_at,
        )
        async with self._session("write") as db, self._transaction(db):
            try:
                await db.execute(
                    f"INSERT INTO issued_nodes ({_ISSUED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"node {node.node_id} (serial {node.serial}) is already recorded "
                    f"as issued in {self._path}"
                ) from exc

    async def issued_nodes(self) -> list[IssuedNode]:
        """Every kit HQ issued, oldest first."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT {_ISSUED_COLUMNS} FROM issued_nodes ORDER BY issued_at, node_id"
            )
        return [_issued(row) for row in rows]

    async def find_issued(self, query: str) -> list[IssuedNode]:
        """Issued kits whose node id starts with ``query`` or whose name is ``query``.

        The node id match ignores case and dashes, so an operator can type what is
        printed on a card; the name must match exactly.
        """
        query = query.strip()
        if not query:
            return []
        prefix = query.replace("-", "").lower()
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT {_ISSUED_COLUMNS} FROM issued_nodes"
                " WHERE (? <> '' AND substr(lower(replace(node_id, '-', '')), 1, length(?)) = ?)"
                " OR name = ? ORDER BY issued_at, node_id",
                (prefix, prefix, prefix, query),
            )
        return [_issued(row) for row in rows]

    async def mark_revoked(self, node: RevokedNode) -> bool:
        """Record a revocation; the first record of a node is kept.

        Returns:
            True if the node was not marked revoked before.
        """
        check_int64("revoked_at", node.revoked_at)
        async with self._session("write") as db, self._transaction(db):
            cursor = await db.execute(
                "INSERT INTO revoked (node_id, serial, revoked_at, reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (node_id) DO NOTHING",
                (node.node_id, node.serial, node.revoked_at, node.reason),
            )
            return cursor.rowcount > 0

    async def revoked_nodes(self) -> list[RevokedNode]:
        """Every revoked node, in order of revocation."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                "SELECT node_id, serial, revoked_at, reason FROM revoked"
                " ORDER BY revoked_at, node_id"
            )
        return [RevokedNode(*row) for row in rows]

    async def is_revoked(self, node_id: str) -> bool:
        """Whether ``node_id`` is marked revoked."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall("SELECT 1 FROM revoked WHERE node_id = ?", (node_id,))
        return any(True for _ in rows)

    async def save_revocation_list(self, number: int, der: bytes) -> bool:
        """Keep the CA's revocation list if it is newer than the one stored.

        The store does not parse or verify the list; the caller has done so.

        Args:
            number: The list's CRL number.
            der: The list, DER-encoded.

        Returns:
            True if it replaced the stored list (or there was none).
        """
        if not 0 <= number <= INT64_MAX:
            raise StoreError(f"CRL number {number} does not fit the store (0 .. 2**63-1)")
        async with self._session("write") as db, self._transaction(db):
            cursor = await db.execute(
                "INSERT INTO revocation_lists (slot, crl_number, der) VALUES (0, ?, ?)"
                " ON CONFLICT (slot) DO UPDATE"
                " SET crl_number = excluded.crl_number, der = excluded.der"
                " WHERE excluded.crl_number > revocation_lists.crl_number",
                (number, der),
            )
            return cursor.rowcount > 0

    async def revocation_list(self) -> tuple[int, bytes] | None:
        """The stored revocation list as ``(crl_number, der)``, or None."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall("SELECT crl_number, der FROM revocation_lists")
        for number, der in rows:
            return int(number), bytes(der)
        return None


def _quick_check(path: Path) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds in the file, or None (blocking)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("PRAGMA quick_check").fetchall()
    problems = [str(row[0]) for row in rows]
    if problems == ["ok"]:
        return None
    return problems[0].splitlines()[-1] if problems else "no answer"


def _pack_terms(terms: Sequence[int]) -> bytes:
    return struct.pack(f">{len(terms)}q", *terms)


def _unpack_terms(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(blob) // 8}q", blob)


def _stored_hashes(
    db: sqlite3.Connection, batch: Sequence[StoredEvent], heads: Heads
) -> dict[tuple[str, int], bytes]:
    """Hashes of stored events at the seqs of ``batch`` that are not new (a write job)."""
    ranges: dict[str, tuple[int, int]] = {}
    for event in batch:
        if event.seq <= heads.get(event.author, (0, ZERO_HASH))[0]:
            low, high = ranges.get(event.author, (event.seq, event.seq))
            ranges[event.author] = (min(low, event.seq), max(high, event.seq))
    stored: dict[tuple[str, int], bytes] = {}
    for author, (low, high) in ranges.items():
        rows = db.execute(
            "SELECT seq, hash FROM events WHERE author = ? AND seq BETWEEN ? AND ?",
            (author, low, high),
        )
        stored.update(((author, seq), digest) for seq, digest in rows)
    return stored


def _case_events(db: sqlite3.Connection, case_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
    """Every stored event of the given cases, by case (a write job)."""
    out: dict[str, list[StoredEvent]] = {case_id: [] for case_id in case_ids}
    for part in chunks(case_ids):
        rows = db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE case_id IN ({', '.join('?' * len(part))})",
            tuple(part),
        )
        for event in _events(rows):
            assert event.case_id is not None
            out[event.case_id].append(event)
    return out


async def _load_heads(db: aiosqlite.Connection) -> Heads:
    rows = await db.execute_fetchall(_HEADS_QUERY)
    return {author: (seq, bytes(digest)) for author, seq, digest in rows}


def _row(e: StoredEvent, received_at: int) -> tuple[Any, ...]:
    """The values of :data:`_INSERT_EVENT` for an event."""
    return (e.author, e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash, e.hash, received_at)


def _events(rows: Iterable[Any]) -> list[StoredEvent]:
    """Events from rows of the event columns, with the payloads column or without."""
    out: list[StoredEvent] = []
    append = out.append
    for row in rows:
        author, seq, hlc, case_id, kind, body, prev, digest = row[:8]
        if type(body) is not bytes or type(prev) is not bytes or type(digest) is not bytes:
            body, prev, digest = bytes(body), bytes(prev), bytes(digest)  # blobs are bytes
        blobs = () if len(row) < 9 or row[8] is None else unpack_payloads(row[8])
        append(stored_event(author, seq, hlc, case_id, kind, body, prev, digest, blobs))
    return out


def _issued(row: Any) -> IssuedNode:
    node_id, name, site, role, departments, serial, cert_pem, issued_at = row
    return IssuedNode(
        node_id=node_id,
        name=name,
        site=site,
        role=role,
        departments=tuple(json.loads(departments)),
        serial=serial,
        cert_pem=cert_pem,
        issued_at=issued_at,
    )
