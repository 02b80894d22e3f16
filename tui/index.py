"""The case queue's window onto the node's case list: pages, never the whole list.

The node keeps the case index and answers ``case_list`` a page at a time (filters,
search words, an order, a cursor). The queue holds a :class:`CaseWindow`: the rows
of a few pages around what is on screen, with the cursors to read on either side.
Each case becomes one immutable :class:`CaseRow` with its display texts. Scrolling
reads the next page and, past :attr:`CaseWindow.MAX_ROWS`, drops rows from the far
end, so memory stays flat whether the node holds a hundred cases or a million.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshdesk.cases.model import Category, Status, Urgency
from meshdesk.tui.i18n import Lang

__all__ = ["COUNT_CAP", "PAGE", "SORT_KEYS", "CaseRow", "CaseWindow", "QueueQuery", "label"]

#: Orders the node's index serves (``case_list`` ``sort``).
SORT_KEYS = ("urgency", "status", "opened", "site")
#: Cases asked for per page: a screen and a half (more come as the table scrolls).
PAGE = 60
#: The queue counts matching cases up to this many ("1,000+").
COUNT_CAP = 1_000
_ENUMS: dict[str, type[Category | Urgency | Status]] = {
    "category": Category,
    "urgency": Urgency,
    "status": Status,
}


def label(kind: str, value: object, lang: Lang) -> str:
    """The label of an enum value (``kind`` is category, urgency or status)."""
    enum = _ENUMS[kind]
    try:
        return enum(str(value)).label(lang)
    except ValueError:
        return str(value or "-")


@dataclass(frozen=True, slots=True)
class CaseRow:
    id: str
    urgency: str
    status: str
    category: str
    name: str
    site: str
    created: str
    department: str
    conflicted: bool

    @classmethod
    def of(cls, view: Mapping[str, Any]) -> CaseRow:
        return cls(
            id=str(view["id"]),
            urgency=str(view.get("urgency") or ""),
            status=str(view.get("status") or ""),
            category=str(view.get("category") or ""),
            name=str(view.get("name") or ""),
            site=str(view.get("site") or ""),
            created=str(view.get("created_at") or ""),
            department=str(view.get("department") or ""),
            conflicted=bool(view.get("conflicts")),
        )


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """What the queue shows: search words, filters and order (``case_list`` args)."""

    search: str = ""
    urgency: str = ""
    status: str = ""
    sort: str = "urgency"
    reverse: bool = False

    def args(self, **more: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"sort": self.sort, "reverse": self.reverse, "limit": PAGE}
        if self.search.strip():
            out["search"] = self.search.strip()
        if self.urgency:
            out["urgency"] = self.urgency
        if self.status:
            out["status"] = self.status
        return {**out, **more}


@dataclass
class CaseWindow:
    """Rows of a few consecutive pages of one query, and the cursors around them.

    ``next`` is the id to read after the last row (None: the list ends there),
    ``prev`` the id to read before the first (None: the list starts there).
    """

    MAX_ROWS = 2_000

    query: QueueQuery = field(default_factory=QueueQuery)
    rows: list[CaseRow] = field(default_factory=list)
    next: str | None = None
    prev: str | None = None
    #: How many cases the query selects (None: not counted yet), and whether more do.
    matched: int | None = None
    capped: bool = False
    #: Every case the node holds.
    total: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, case_id: str) -> CaseRow | None:
        return next((r for r in self.rows if r.id == case_id), None)

    def reset(self, query: QueueQuery, page: Mapping[str, Any]) -> None:
        """The first page of a new query (or of the end of it, see :meth:`at_end`)."""
        self.query = query
        self.rows = [CaseRow.of(v) for v in page["cases"]]
        self.next, self.prev = page.get("next"), page.get("prev")
        if "matched" in page:
            self.matched = int(page["matched"])

    def at_end(self, query: QueueQuery, page: Mapping[str, Any]) -> None:
        """The last page: ``page`` was read in the reverse order (its ``next`` says
        whether cases lie before it in ours)."""
        rows = [CaseRow.of(v) for v in page["cases"]]
        rows.reverse()
        self.query = query
        self.rows = rows
        self.next = None
        self.prev = rows[0].id if rows and page.get("next") else None

    def extend(self, page: Mapping[str, Any]) -> int:
        """Rows read after the last; returns how many were dropped from the top."""
        self.rows += [CaseRow.of(v) for v in page["cases"]]
        self.next = page.get("next")
        drop = max(0, len(self.rows) - self.MAX_ROWS)
        if drop:
            self.rows = self.rows[drop:]
            self.prev = self.rows[0].id
        return drop

    def extend_back(self, page: Mapping[str, Any]) -> int:
        """Rows read before the first; returns how many were added at the top."""
        added = [CaseRow.of(v) for v in page["cases"]]
        self.rows = added + self.rows
        self.prev = page.get("prev")
        drop = max(0, len(self.rows) - self.MAX_ROWS)
        if drop:
            self.rows = self.rows[:-drop]
            self.next = self.rows[-1].id
        return len(added)

    def replace(self, views: Iterable[Mapping[str, Any]]) -> bool:
        """Update the rows of changed cases that are in the window; True if any was."""
        fresh = {str(v["id"]): CaseRow.of(v) for v in views}
        hit = False
        for i, row in enumerate(self.rows):
            new = fresh.get(row.id)
            if new is not None:
                self.rows[i] = new
                hit = True
        return hit
