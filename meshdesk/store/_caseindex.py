"""The case index in SQL: rows in, pages out (the store calls these in its session).

The index is one row per case (:class:`~meshdesk.store.records.CaseSummary`) in the
table ``case_index`` (schema version 3). Pages are read by keyset: a page continues
after (or before) a case named by its id, in one of a few fixed orders, each served
by an index so that a page costs the page, not the table, whatever its depth.

Name search never sees a name: the layer above turns a word into keyed hashes of
its fragments (``case_terms``), and the index matches those.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiosqlite

from meshdesk.store._sql import chunks, insert_rows
from meshdesk.store.records import CaseSummary

__all__ = [
    "DENSE",
    "SORTS",
    "CasePage",
    "CaseQuery",
    "Indexed",
    "Word",
    "case_counts",
    "count_cases",
    "fetch_page",
    "indexed_cases",
    "summaries_of",
    "summary_of",
    "upsert_summaries",
]

#: Sort orders: name -> index columns (the rowid ``case_key`` breaks ties).
SORTS: dict[str, tuple[str, ...]] = {
    "urgency": ("urgency_rank", "created_hlc"),
    "status": ("status_rank", "urgency_rank", "created_hlc"),
    "site": ("site", "urgency_rank", "created_hlc"),
    "opened": ("created_hlc",),
}

_COLUMNS = (
    "case_id, opened, created_hlc, updated_hlc, events, origin, site, category, urgency,"
    " urgency_rank, status, status_rank, department, consent, referrals, conflicts,"
    " conflicted, personal, grants"
)
_UPSERT = f"INSERT INTO case_index ({_COLUMNS})"
_UPSERT_TAIL = " ON CONFLICT (case_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _COLUMNS.replace(" ", "").split(",")[1:]
)
_SELECTED = ", ".join("c." + name.strip() for name in _COLUMNS.split(","))
#: A search word whose rarest term more cases hold is matched row by row in the
#: order's index instead of listing its cases first (see ``_name_sql``).
DENSE = 10_000


@dataclass(frozen=True, slots=True)
class Word:
    """One search word: a case matches when any of its alternatives holds.

    Attributes:
        terms: Keyed hashes that must all be among the case's name terms (empty: the
            word cannot match a name).
        id_part: Start of the case id, or of its last group (what screens show).
        sites, categories, departments, statuses, urgencies: Open values the word
            names (a site it is part of, a category whose label it is part of, ...).
    """

    terms: tuple[int, ...] = ()
    id_part: str | None = None
    sites: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    urgencies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseQuery:
    """Which cases, in which order, which page.

    Filters are exact values ("" never matches: a case without a site has site "").
    ``since_hlc`` keeps cases opened at or after it. Every word must match.
    ``after`` / ``before`` name a case (by id) the page continues from; the page
    itself is always in the query's order.
    """

    status: str | None = None
    urgency: str | None = None
    site: str | None = None
    category: str | None = None
    department: str | None = None
    conflicts: bool = False
    since_hlc: int | None = None
    words: tuple[Word, ...] = ()
    sort: str = "urgency"
    reverse: bool = False
    after: str | None = None
    before: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"unknown sort {self.sort!r}; one of {', '.join(SORTS)}")
        if self.after is not None and self.before is not None:
            raise ValueError("a page continues after a case or before one, not both")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")


@dataclass(frozen=True, slots=True)
class CasePage:
    """A page of the index in the query's order.

    ``more_after`` / ``more_before``: whether cases matching the query lie past the
    page's last / before its first row (only the side the page was read towards is
    known exactly; the other is True when the page started from a cursor).
    """

    rows: list[CaseSummary]
    more_after: bool
    more_before: bool


def _json(items: Sequence[Any]) -> str:
    return json.dumps(list(items), ensure_ascii=False) if items else "[]"


def summary_row(s: CaseSummary) -> tuple[Any, ...]:
    return (
        s.case_id,
        int(s.opened),
        s.created_hlc,
        s.updated_hlc,
        s.events,
        s.origin,
        s.site,
        s.category,
        s.urgency,
        s.urgency_rank,
        s.status,
        s.status_rank,
        s.department,
        _json(s.consent),
        _json([list(r) for r in s.referrals]),
        _json(s.conflicts),
        int(bool(s.conflicts)),
        s.personal,
        s.grants,
    )


def _summary(row: Sequence[Any]) -> CaseSummary:
    (case_id, opened, created, updated, events, origin, site, category, urgency,
     urgency_rank, status, status_rank, department, consent, referrals, conflicts,
     _conflicted, personal, grants) = row  # fmt: skip
    # Positional, in CaseSummary's order (a catch-up or a feed reads one per case).
    return CaseSummary(
        case_id, bool(opened), created, updated, events, origin, site, category, urgency,
        urgency_rank, status, status_rank, department,
        tuple(json.loads(consent)) if consent != "[]" else (),
        tuple([(str(d), str(s)) for d, s in json.loads(referrals)]) if referrals != "[]" else (),
        tuple(json.loads(conflicts)) if conflicts != "[]" else (),
        None if personal is None else bytes(personal),
        grants,
    )  # fmt: skip


class Indexed(NamedTuple):
    """What an index row held before a change (to see what the change changes)."""

    case_key: int
    personal: bytes | None
    grants: int
    urgency_rank: int
    status_rank: int


def indexed_cases(db: sqlite3.Connection, case_ids: Sequence[str]) -> dict[str, Indexed]:
    """The rows of those cases already in the index, by id (in a write job)."""
    found: dict[str, Indexed] = {}
    for part in chunks(case_ids):
        marks = ", ".join("?" * len(part))
        rows = db.execute(
            "SELECT case_id, case_key, personal, grants, urgency_rank, status_rank"
            f" FROM case_index WHERE case_id IN ({marks})",
            tuple(part),
        )
        for case_id, key, personal, grants, urgency, status in rows:
            blob = None if personal is None else bytes(personal)
            found[case_id] = Indexed(key, blob, grants, urgency, status)
    return found


def upsert_summaries(
    db: sqlite3.Connection, summaries: Sequence[CaseSummary], before: dict[str, Indexed]
) -> None:
    """Write rows, keep the urgency × status counts, and queue for search every case
    whose personal block or key grants changed (in a write job).

    ``before`` is :func:`indexed_cases` of the same cases, read in this transaction.
    """
    insert_rows(db, _UPSERT, [summary_row(s) for s in summaries], _UPSERT_TAIL)
    counts: Counter[tuple[int, int]] = Counter()
    for s in summaries:
        old = before.get(s.case_id)
        if old is not None:
            counts[(old.urgency_rank, old.status_rank)] -= 1
        counts[(s.urgency_rank, s.status_rank)] += 1
    insert_rows(
        db,
        "INSERT INTO case_counts (urgency_rank, status_rank, n)",
        [(u, st, n) for (u, st), n in counts.items() if n],
        " ON CONFLICT (urgency_rank, status_rank) DO UPDATE SET n = n + excluded.n",
    )
    changed = [
        s.case_id
        for s in summaries
        if s.personal is not None
        and (
            s.case_id not in before
            or (before[s.case_id].personal, before[s.case_id].grants) != (s.personal, s.grants)
        )
    ]
    for part in chunks(changed):
        marks = ", ".join("?" * len(part))
        db.execute(
            "INSERT OR IGNORE INTO search_todo (case_key)"
            f" SELECT case_key FROM case_index WHERE case_id IN ({marks})",
            tuple(part),
        )


async def _postings(db: aiosqlite.Connection, term: int, cap: int) -> int:
    """How many cases hold ``term``, counted up to ``cap``."""
    rows = await db.execute_fetchall(
        "SELECT count(*) FROM (SELECT 1 FROM case_terms WHERE term = ? LIMIT ?)", (term, cap)
    )
    return int(next(iter(rows))[0])


def _listed(terms: Sequence[int]) -> str:
    """Cases holding every term, listed (their posting lists intersected)."""
    inner = " INTERSECT ".join("SELECT case_key FROM case_terms WHERE term = ?" for _ in terms)
    return f"c.case_key IN ({inner})"


def _probed(terms: Sequence[int]) -> str:
    """Every term tested on the row at hand (a key lookup each)."""
    probe = "EXISTS (SELECT 1 FROM case_terms AS t WHERE t.term = ? AND t.case_key = c.rowid)"
    return "(" + " AND ".join([probe] * len(terms)) + ")"


async def _where(
    db: aiosqlite.Connection, query: CaseQuery, dense: int
) -> tuple[list[str], list[Any]]:
    """The query's filters and words as SQL conditions on ``case_index AS c``.

    A word matches a name through its terms. A word most cases match (what counts
    is its rarest term) is tested row by row as the page walks the order's index,
    stopping at the page's end; a rarer word's cases are listed first (posting lists
    intersected), and the page is sorted from those alone. Words that each match
    many but together few (``佐藤 花``) are listed together.
    """
    conds: list[str] = []
    args: list[Any] = []
    for column in ("status", "urgency", "site", "category", "department"):
        value = getattr(query, column)
        if value is not None:
            conds.append(f"c.{column} = ?")
            args.append(value)
    if query.conflicts:
        conds.append("c.conflicted")
    if query.since_hlc is not None:
        conds.append("c.created_hlc >= ?")
        args.append(query.since_hlc)
    rarest: dict[int, int] = {}
    for i, word in enumerate(query.words):
        if word.terms:
            rarest[i] = min([await _postings(db, term, dense) for term in word.terms])
    names_only = [i for i, w in enumerate(query.words) if i in rarest and not _others(w)]
    together: set[int] = set()
    if len(names_only) > 1 and all(rarest[i] >= dense for i in names_only):
        total = await _total(db)
        expected = total * math.prod(min(1.0, rarest[i] / max(total, 1)) for i in names_only)
        if expected < dense:
            together = set(names_only)
            terms = sorted({t for i in names_only for t in query.words[i].terms})
            conds.append(_listed(terms))
            args.extend(terms)
    for i, word in enumerate(query.words):
        if i in together:
            continue
        options: list[str] = []
        if rarest.get(i):
            options.append(_probed(word.terms) if rarest[i] >= dense else _listed(word.terms))
            args.extend(word.terms)
        if word.id_part:
            low, high = word.id_part, word.id_part + "\U0010ffff"
            options.append("(c.case_id >= ? AND c.case_id < ?)")
            options.append("(substr(c.case_id, 25) >= ? AND substr(c.case_id, 25) < ?)")
            args.extend((low, high, low, high))
        for column, values in _others(word):
            if column == "id":
                continue  # above: two index ranges
            # Unary + keeps the planner on the order's index: these match many.
            options.append(f"+c.{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
        conds.append("(" + " OR ".join(options) + ")" if options else "0")
    return conds, args


def _others(word: Word) -> list[tuple[str, tuple[str, ...]]]:
    """The word's alternatives in open columns, and its id alternative as ``id``."""
    out = [
        (column, values)
        for column, values in (
            ("site", word.sites),
            ("category", word.categories),
            ("department", word.departments),
            ("status", word.statuses),
            ("urgency", word.urgencies),
        )
        if values
    ]
    return out + ([("id", (word.id_part,))] if word.id_part else [])


async def _total(db: aiosqlite.Connection) -> int:
    rows = await db.execute_fetchall("SELECT coalesce(max(case_key), 0) FROM case_index")
    return int(next(iter(rows))[0])


async def fetch_page(
    db: aiosqlite.Connection, query: CaseQuery, dense: int = DENSE
) -> CasePage | None:
    """One page of the index; None when the cursor names a case the index lacks."""
    keys = (*SORTS[query.sort], "case_key")
    cursor_id = query.after if query.after is not None else query.before
    conds, args = await _where(db, query, dense)
    backwards = query.before is not None
    descending = query.reverse != backwards  # reading towards the start of the order
    if cursor_id is not None:
        rows = await db.execute_fetchall(
            f"SELECT {', '.join(keys)} FROM case_index WHERE case_id = ?", (cursor_id,)
        )
        mark = next(iter(rows), None)
        if mark is None:
            return None
        tuple_sql = "(" + ", ".join(f"c.{k}" for k in keys) + ")"
        conds.append(f"{tuple_sql} {'<' if descending else '>'} ({', '.join('?' * len(keys))})")
        args.extend(mark)
    direction = " DESC" if descending else ""
    order = ", ".join(f"c.{k}{direction}" for k in keys)
    where = " WHERE " + " AND ".join(conds) if conds else ""
    rows = list(
        await db.execute_fetchall(
            f"SELECT {_SELECTED} FROM case_index AS c{where} ORDER BY {order} LIMIT ?",
            (*args, query.limit + 1),
        )
    )
    more = len(rows) > query.limit
    page = [_summary(r) for r in rows[: query.limit]]
    if backwards:
        page.reverse()
        return CasePage(page, more_after=True, more_before=more)
    return CasePage(page, more_after=more, more_before=cursor_id is not None)


async def summary_of(db: aiosqlite.Connection, case_id: str) -> CaseSummary | None:
    rows = await db.execute_fetchall(
        f"SELECT {_COLUMNS} FROM case_index WHERE case_id = ?", (case_id,)
    )
    return next((_summary(r) for r in rows), None)


async def summaries_of(db: aiosqlite.Connection, case_ids: Sequence[str]) -> list[CaseSummary]:
    """The index rows of the given cases that have one (any order)."""
    out: list[CaseSummary] = []
    for start in range(0, len(case_ids), 500):  # SQLite's bound-parameter limit
        chunk = case_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = await db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM case_index WHERE case_id IN ({marks})", tuple(chunk)
        )
        out.extend(_summary(r) for r in rows)
    return out


async def count_cases(
    db: aiosqlite.Connection, query: CaseQuery, cap: int, dense: int = DENSE
) -> int:
    """How many cases match the query's filters and words (at most ``cap``)."""
    conds, args = await _where(db, query, dense)
    where = " WHERE " + " AND ".join(conds) if conds else ""
    rows = await db.execute_fetchall(
        f"SELECT count(*) FROM (SELECT 1 FROM case_index AS c{where} LIMIT ?)", (*args, cap)
    )
    return int(next(iter(rows))[0])


async def case_counts(db: aiosqlite.Connection) -> dict[tuple[int, int], int]:
    """How many cases have each ``(urgency_rank, status_rank)``."""
    rows = await db.execute_fetchall("SELECT urgency_rank, status_rank, n FROM case_counts")
    return {(u, st): n for u, st, n in rows if n}
