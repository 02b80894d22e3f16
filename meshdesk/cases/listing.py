"""Pages of the case queue, read from the store's case index.

A page is a keyset page of the index (:class:`~meshdesk.store.CaseQuery`): filters,
an order (most urgent first by default) and a cursor (the case it continues after or
before). Nothing is folded to list cases; only the rows of the page are opened, to
show the citizen's name where this node may read it, through a bounded cache keyed
by the personal block's digest (a changed block is a new key, so it is never stale).

Search words match a case when one of these holds: its name or reading (keyed
terms, :mod:`meshdesk.cases.search`, checked against the decrypted name before it is
shown), the start of its id or of the id's last group, or part of its site,
department, category, urgency or status (either language's label). Every word must
match.

:class:`CaseLister` also keeps the search terms: :meth:`CaseLister.index_search`
makes the terms of cases queued by the index (new or changed personal blocks), and
:meth:`CaseLister.run` does so in the background for the running node.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meshdesk.cases.hlc import make_hlc, to_datetime
from meshdesk.cases.model import Category, Personal, Status, Urgency
from meshdesk.cases.search import SearchKey, matches
from meshdesk.cases.state import CaseState
from meshdesk.cases.summary import personal_digest
from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.store import CaseQuery, CaseSummary, Store, Word

if TYPE_CHECKING:
    from meshdesk.cases.book import CaseBook

__all__ = ["CaseLister", "conflict_views", "parse_since", "query_from"]

log = logging.getLogger(__name__)

_HEX = re.compile(r"[0-9a-f-]{3,36}")
#: Cases whose search terms are made per transaction (on demand, and in the background).
SEARCH_BATCH = 256
BACKGROUND_BATCH = 32
#: Extra pages read to fill one when search words dropped fragment coincidences.
_REFILLS = 8


def parse_since(text: str) -> int:
    """An HLC from ``YYYY-MM-DD`` or an ISO date and time (local time when no offset).

    Raises:
        UsageError: not a date or date and time.
    """
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"since {text[:40]!r} is not a date (YYYY-MM-DD) or a time") from None
    if when.tzinfo is None:
        when = when.astimezone()  # the machine's local time, as staff read clocks
    return make_hlc(max(0, int(when.timestamp() * 1000)))


def _iso(hlc: int) -> str:
    return to_datetime(hlc).isoformat(timespec="seconds").replace("+00:00", "Z")


def conflict_views(state: CaseState) -> list[dict[str, object]]:
    """A case's open conflicts as views show them: each field with every candidate."""
    return [
        {
            "field": c.field,
            "candidates": [
                {"value": v.value, "node": v.author, "at": _iso(v.hlc), "op": v.op}
                for v in c.candidates
            ],
        }
        for c in state.conflicts
    ]


def _labels(member: Category | Urgency | Status) -> tuple[str, ...]:
    return (str(member), member.label("ja").lower(), member.label("en").lower())


@dataclasses.dataclass(frozen=True, slots=True)
class _Readable:
    """What a page shows of a case's personal block (None: not readable here)."""

    personal: Personal | None
    #: The candidates of each open conflict (a conflicted case is folded for them).
    conflicts: list[dict[str, object]] | None = None


_NOTHING = _Readable(None)


class CaseLister:
    """Pages of the case index, with names where this node may read them."""

    def __init__(
        self,
        store: Store,
        book: CaseBook,
        search_key: SearchKey | None,
        *,
        cache_size: int = 4096,
    ) -> None:
        self._store = store
        self._book = book
        self._key = search_key
        self._cache: collections.OrderedDict[tuple[str, bytes, int, int], _Readable] = (
            collections.OrderedDict()
        )
        self._cache_size = cache_size

    def forget(self, case_id: str) -> int:
        """Drop what was decrypted of a case (its erasure); returns how many entries."""
        keys = [key for key in self._cache if key[0] == case_id]
        for key in keys:
            del self._cache[key]
        return len(keys)

    # -- personal fields, lazily -----------------------------------------------------

    async def _read(self, summary: CaseSummary) -> _Readable:
        """What a page shows of a case beyond its row: the citizen's details where this
        node may read them, and a conflicted case's candidates (cached by what they
        depend on, so a changed case is a new key and never stale: its event count
        grows with every event stored, even one older than its newest)."""
        if summary.personal is None and not summary.conflicts:
            return _NOTHING
        key = (summary.case_id, summary.personal or b"", summary.grants, summary.events)
        hit = self._cache.get(key)
        if hit is None:
            state = await self._book.state(summary.case_id)
            conflicts = conflict_views(state) if summary.conflicts else None
            hit = _Readable(self._book.personal(state), conflicts)
            self._cache[key] = hit
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def view(self, summary: CaseSummary, read: _Readable) -> dict[str, object]:
        """A case as a list shows it (JSON-ready); see :meth:`CaseBook.view` for one case."""
        personal = read.personal
        conflicts = read.conflicts or [{"field": f, "candidates": []} for f in summary.conflicts]
        return {
            "id": summary.case_id,
            "category": summary.category or None,
            "urgency": summary.urgency or None,
            "status": summary.status or None,
            "department": summary.department or None,
            "site": summary.site or None,
            "origin": summary.origin or None,
            "created_at": _iso(summary.created_hlc) if summary.opened else None,
            "updated_at": _iso(summary.updated_hlc),
            "consent": list(summary.consent),
            "referrals": [{"department": d, "state": s} for d, s in summary.referrals],
            "conflicts": conflicts,
            "readable": personal is not None,
            "name": None if personal is None else personal.name,
            "phone": None if personal is None else personal.phone,
            "shelter": None if personal is None else personal.shelter,
        }

    # -- search words -----------------------------------------------------------------

    async def words(self, search: str) -> tuple[tuple[str, Word], ...]:
        """Each word of ``search`` with what it may match in the index."""
        texts = search.split()
        if not texts:
            return ()
        sites = await self._store.index.values("site")
        departments = await self._store.index.values("department")
        out = []
        for text in texts:
            low = text.lower()
            out.append(
                (
                    text,
                    Word(
                        terms=self._key.query(text) if self._key is not None else (),
                        id_part=low if _HEX.fullmatch(low) else None,
                        sites=tuple(s for s in sites if low in s.lower()),
                        departments=tuple(d for d in departments if low in d.lower()),
                        categories=tuple(
                            str(c) for c in Category if any(low in t for t in _labels(c))
                        ),
                        statuses=tuple(str(s) for s in Status if any(low in t for t in _labels(s))),
                        urgencies=tuple(
                            str(u) for u in Urgency if any(low in t for t in _labels(u))
                        ),
                    ),
                )
            )
        return tuple(out)

    @staticmethod
    def _holds(text: str, word: Word, s: CaseSummary, personal: Personal | None) -> bool:
        """Whether the word really matches (the terms only say it may)."""
        if word.id_part and (
            s.case_id.startswith(word.id_part) or s.case_id[24:].startswith(word.id_part)
        ):
            return True
        if (
            s.site in word.sites
            or s.department in word.departments
            or s.category in word.categories
            or s.status in word.statuses
            or s.urgency in word.urgencies
        ):
            return True
        return personal is not None and matches(text, personal)

    def _all_hold(
        self, words: tuple[tuple[str, Word], ...], s: CaseSummary, personal: Personal | None
    ) -> bool:
        return all(self._holds(text, word, s, personal) for text, word in words)

    # -- pages -------------------------------------------------------------------------

    async def page(
        self, query: CaseQuery, *, search: str = "", count: int | None = None
    ) -> dict[str, object]:
        """One page: ``{"cases": [...], "next": id | None, "prev": id | None}``.

        ``next`` continues after the page (``after``), ``prev`` before it
        (``before``); None when nothing lies that way. With ``count`` (a cap),
        ``matched`` says how many cases the filters and words select, up to the cap
        (fragment coincidences of name words included), and ``matched_capped``
        whether counting stopped there.

        Raises:
            UsageError: the cursor names a case this node does not hold.
        """
        words = await self.words(search)
        query = dataclasses.replace(
            query,
            words=tuple(w for _, w in words),
            after=await self._full_id(query.after),
            before=await self._full_id(query.before),
        )
        backwards = query.before is not None
        rows: list[tuple[CaseSummary, _Readable]] = []
        more_after = more_before = False
        q = query
        for _ in range(_REFILLS + 1):
            page = await self._store.index.page(q)
            if page is None:
                raise UsageError(f"no case {(q.after or q.before or '')[:40]!r} on this node")
            fetched = [(s, await self._read(s)) for s in page.rows]
            good = [
                (s, r)
                for s, r in fetched
                if all(self._holds(t, w, s, r.personal) for t, w in words)
            ]
            rows = good + rows if backwards else rows + good
            more_after, more_before = page.more_after, page.more_before
            more = more_before if backwards else more_after
            if len(good) == len(fetched) or len(rows) >= query.limit or not more or not fetched:
                break
            edge = fetched[0][0].case_id if backwards else fetched[-1][0].case_id
            wanted = query.limit - len(rows)
            q = dataclasses.replace(
                query,
                after=None if backwards else edge,
                before=edge if backwards else None,
                limit=max(wanted, 16),
            )
        if len(rows) > query.limit:
            rows = rows[-query.limit :] if backwards else rows[: query.limit]
            if backwards:
                more_before = True
            else:
                more_after = True
        out: dict[str, object] = {
            "cases": [self.view(s, r) for s, r in rows],
            "next": rows[-1][0].case_id if rows and more_after else None,
            "prev": rows[0][0].case_id if rows and more_before else None,
        }
        if count is not None:
            matched = await self._store.index.count(query, count + 1)
            out["matched"] = min(matched, count)
            out["matched_capped"] = matched > count
        return out

    async def _full_id(self, cursor: str | None) -> str | None:
        """A cursor as staff may type it (the start of an id or of its last group)."""
        if cursor is None or len(cursor) == 36:
            return cursor
        return await self._book.resolve_id(cursor)

    async def counts(self) -> dict[str, object]:
        """How many cases have each urgency and status (kept by the index, no scan)."""
        urgencies, statuses = list(Urgency), list(Status)
        counts = await self._store.index.counts()
        grid = [
            {
                "urgency": str(urgencies[u]) if u < len(urgencies) else None,
                "status": str(statuses[st]) if st < len(statuses) else None,
                "cases": n,
            }
            for (u, st), n in sorted(counts.items())
        ]
        return {"counts": grid, "total": sum(counts.values())}

    # -- search terms --------------------------------------------------------------------

    async def index_search(self, limit: int = SEARCH_BATCH) -> int:
        """Make the search terms of up to ``limit`` queued cases; returns how many."""
        todo = await self._store.index.search_todo(limit)
        if not todo:
            return 0
        entries: list[tuple[int, bytes | None, list[int]]] = []
        for case_key, case_id in todo:
            terms: list[int] = []
            digest: bytes | None = None
            try:
                state = await self._book.state(case_id)
            except MeshdeskError as exc:
                log.warning("search terms of case %s: %s", case_id, exc)
            else:
                digest = personal_digest(state.personal_sealed)
                personal = self._book.personal(state)
                if personal is not None and self._key is not None:
                    terms = self._key.terms_of(personal)
            entries.append((case_key, digest, terms))
        await self._store.set_search_terms(entries)
        return len(todo)

    async def run(self, idle: float = 1.0, pause: float = 0.05, *, yield_for: float = 5.0) -> None:
        """Keep the search terms up to date until cancelled (the node runs this).

        A backlog (a node that just received a million cases) is worked off in small
        batches with a ``pause`` between them, so replication and the console keep
        most of the processor: decrypting a name costs ≈ 0.3 ms. While runs are being
        stored (a catch-up), it waits for a quiet moment, but never longer than
        ``yield_for`` seconds between two batches: terms lag a catch-up, never
        stop.
        """
        backlog = await self._store.index.search_backlog()
        if backlog:
            log.info("search: making the terms of %d cases in the background", backlog)
        waited = 0.0
        while True:
            if waited < yield_for and time.monotonic() - self._store.appended_at < idle:
                waited += pause
                await asyncio.sleep(pause)
                continue
            waited = 0.0
            try:
                done = await self.index_search(BACKGROUND_BATCH)
            except MeshdeskError as exc:  # a full disk, say: try again later
                log.warning("search terms: %s", exc)
                done = 0
            except Exception:  # a bug must not end search for the node's lifetime
                log.exception("search terms failed unexpectedly; trying again later")
                done = 0
            await asyncio.sleep(pause if done >= BACKGROUND_BATCH else idle)

    def terms_for(self, personal: Personal) -> list[int]:
        """Search terms of a personal block (benches that write cases directly)."""
        return [] if self._key is None else self._key.terms_of(personal)


def query_from(args: Mapping[str, Any]) -> CaseQuery:
    """A :class:`CaseQuery` from checked ``case_list`` arguments (see ops/cases.py)."""
    since = args.get("since")
    try:
        return _query(args, since)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _query(args: Mapping[str, Any], since: object) -> CaseQuery:
    return CaseQuery(
        status=args.get("status"),
        urgency=args.get("urgency"),
        site=args.get("site"),
        category=args.get("category"),
        department=args.get("department"),
        conflicts=bool(args.get("conflicts")),
        since_hlc=parse_since(since) if isinstance(since, str) else None,
        sort=str(args.get("sort") or "urgency"),
        reverse=bool(args.get("reverse")),
        after=args.get("after"),
        before=args.get("before"),
        limit=int(args.get("limit") or 100),
    )
