"""Reads of the case index on a connection of their own (:attr:`Store.index`).

The store's one connection serialises its operations, and a sync's group commit (ten
thousand events, with their cases' index rows) holds it for a while. A write-ahead
log lets readers run beside the writer, each seeing what was committed when its read
began, so the case queue, search and counts read through a second connection (made
read-only with ``PRAGMA query_only``) and keep answering the console during a sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiosqlite

from meshdesk.errors import StoreError
from meshdesk.store._caseindex import (
    DENSE,
    CasePage,
    CaseQuery,
    case_counts,
    count_cases,
    fetch_page,
    summaries_of,
    summary_of,
)
from meshdesk.store._payloads import unpack_payloads
from meshdesk.store._sql import chunks
from meshdesk.store.records import CaseSummary, StoredEvent

__all__ = ["CaseReader"]

_EVENT_COLUMNS = "author, seq, hlc, case_id, kind, body, prev_hash, hash"


class CaseReader:
    """The case index (and cases' events) as read beside the store's writes."""

    def __init__(
        self, path: Path, error: Callable[[str, sqlite3.Error], StoreError], busy_timeout: float
    ) -> None:
        self._path = path
        self._error = error
        self._busy_timeout = busy_timeout
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        #: Whether the database keeps detached payloads (schema 4; the store sets it).
        self.payloads = False
        #: Cases holding a search word's rarest term above which the word is tested
        #: row by row instead of listing its cases first (tests lower it).
        self.dense = DENSE

    async def open(self) -> None:
        try:
            db = await aiosqlite.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None
            )
            await db.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        self._db = db

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                with contextlib.suppress(sqlite3.Error):
                    await db.close()

    @contextlib.asynccontextmanager
    async def _session(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._db
            if db is None:
                raise StoreError(f"store {self._path} is closed")
            try:
                yield db
            except sqlite3.Error as exc:
                raise self._error(doing, exc) from exc

    async def page(self, query: CaseQuery) -> CasePage | None:
        """One page of the case index (None: the cursor names no case held here)."""
        async with self._session("read the case index of") as db:
            return await fetch_page(db, query, self.dense)

    async def count(self, query: CaseQuery, cap: int = 1_000_000) -> int:
        """Cases matching the query's filters and words, counted up to ``cap``."""
        async with self._session("read the case index of") as db:
            return await count_cases(db, query, cap, self.dense)

    async def counts(self) -> dict[tuple[int, int], int]:
        """How many cases have each ``(urgency_rank, status_rank)`` (kept with the rows)."""
        async with self._session("read the case index of") as db:
            return await case_counts(db)

    async def summary(self, case_id: str) -> CaseSummary | None:
        """The index row of one case, or None."""
        async with self._session("read the case index of") as db:
            return await summary_of(db, case_id)

    async def summaries(self, case_ids: Sequence[str]) -> dict[str, CaseSummary]:
        """The index rows of the given cases, by case id (a case without one is left out)."""
        async with self._session("read the case index of") as db:
            return {s.case_id: s for s in await summaries_of(db, case_ids)}

    async def keys(self, case_ids: Sequence[str]) -> dict[str, int]:
        """The index keys (``case_key``) of cases, by id (cases not indexed left out)."""
        found: dict[str, int] = {}
        async with self._session("read the case index of") as db:
            for part in chunks(case_ids):
                rows = await db.execute_fetchall(
                    "SELECT case_id, case_key FROM case_index"
                    f" WHERE case_id IN ({', '.join('?' * len(part))})",
                    tuple(part),
                )
                found.update((case_id, key) for case_id, key in rows)
        return found

    async def find_ids(self, start: str, limit: int = 2) -> list[str]:
        """Ids of cases whose id, or its last group, starts with ``start``."""
        high = start + "\U0010ffff"
        async with self._session("read the case index of") as db:
            rows = await db.execute_fetchall(
                "SELECT case_id FROM case_index WHERE case_id >= ? AND case_id < ?"
                " UNION SELECT case_id FROM case_index"
                " WHERE substr(case_id, 25) >= ? AND substr(case_id, 25) < ? LIMIT ?",
                (start, high, start, high, limit),
            )
        return sorted(case_id for (case_id,) in rows)

    async def values(self, column: str) -> list[str]:
        """Every non-empty site, department or category the index holds, sorted."""
        if column not in ("site", "department", "category"):
            raise ValueError(f"no distinct values of {column!r}")
        async with self._session("read the case index of") as db:
            # One index step per distinct value (a skip-scan), however many cases.
            rows = await db.execute_fetchall(
                f"""
                WITH RECURSIVE seen (v) AS (
                    SELECT min({column}) FROM case_index WHERE {column} > ''
                    UNION ALL
                    SELECT (SELECT min({column}) FROM case_index WHERE {column} > seen.v)
                    FROM seen WHERE seen.v IS NOT NULL
                )
                SELECT v FROM seen WHERE v IS NOT NULL
                """
            )
        return [value for (value,) in rows]

    async def case_events(self, case_id: str) -> list[StoredEvent]:
        """All events of one case, ordered by (hlc, author, seq)."""
        async with self._session("read") as db:
            rows = await db.execute_fetchall(
                f"SELECT {_EVENT_COLUMNS}{', payloads' if self.payloads else ''} FROM events"
                " WHERE case_id = ? ORDER BY hlc, author, seq",
                (case_id,),
            )
        out = []
        for row in rows:
            author, seq, hlc, cid, kind, body, prev, digest = row[:8]
            blobs = unpack_payloads(bytes(row[8]) if len(row) > 8 and row[8] is not None else None)
            out.append(
                StoredEvent(
                    author, seq, hlc, cid, kind, bytes(body), bytes(prev), bytes(digest), blobs
                )
            )
        return out

    async def retention_due(self, before_hlc: int, origin: str | None, limit: int) -> list[str]:
        """Resolved or closed cases not changed since ``before_hlc`` and not erased
        here (of ``origin`` only, unless None), oldest change first."""
        if not self.payloads:
            return []
        mine = "" if origin is None else " AND origin = ?"
        async with self._session("read the case index of") as db:
            rows = await db.execute_fetchall(
                "SELECT case_id FROM case_index WHERE status IN ('resolved', 'closed')"
                f" AND updated_hlc < ?{mine} AND case_id NOT IN (SELECT case_id FROM erased)"
                " ORDER BY updated_hlc LIMIT ?",
                (before_hlc, *(() if origin is None else (origin,)), limit),
            )
        return [case_id for (case_id,) in rows]

    async def search_todo(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` cases whose search terms must be (re)made: ``(key, id)``."""
        async with self._session("read the search queue of") as db:
            rows = await db.execute_fetchall(
                "SELECT t.case_key, c.case_id FROM search_todo AS t"
                " JOIN case_index AS c USING (case_key) ORDER BY t.case_key LIMIT ?",
                (limit,),
            )
        return [(key, case_id) for key, case_id in rows]

    async def search_backlog(self) -> int:
        """How many cases wait for their search terms."""
        async with self._session("read the search queue of") as db:
            rows = await db.execute_fetchall("SELECT count(*) FROM search_todo")
        return int(next(iter(rows))[0])
