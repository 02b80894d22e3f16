"""The case queue's prepared index: filter and sort 10,000 cases in memory.

Every case becomes one :class:`CaseRow` with its display texts in the current
language and a lower-cased search blob (both languages' labels, name, site, id),
built once when the case arrives. Filtering is then a substring test per row over
the rows already in sort order; a query that extends the previous one filters the
previous result only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshdesk.cases.model import Category, Status, Urgency
from meshdesk.tui.i18n import Lang

__all__ = ["SORT_KEYS", "CaseIndex", "CaseRow", "label"]

SORT_KEYS = ("urgency", "status", "created", "name", "site")
_RANK = {str(u): u.rank for u in Urgency}
_STATUS_RANK = {str(s): i for i, s in enumerate(Status)}
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
    blob: str

    @classmethod
    def of(cls, view: Mapping[str, Any]) -> CaseRow:
        name = str(view.get("name") or "")
        parts = [
            str(view.get("id", "")),
            name,
            str(view.get("site") or ""),
            str(view.get("department") or ""),
            str(view.get("shelter") or ""),
        ]
        for kind in _ENUMS:
            value = view.get(kind)
            parts += [str(value or ""), label(kind, value, "ja"), label(kind, value, "en")]
        return cls(
            id=str(view["id"]),
            urgency=str(view.get("urgency") or ""),
            status=str(view.get("status") or ""),
            category=str(view.get("category") or ""),
            name=name,
            site=str(view.get("site") or ""),
            created=str(view.get("created_at") or ""),
            department=str(view.get("department") or ""),
            conflicted=bool(view.get("conflicts")),
            blob="\n".join(parts).lower(),
        )

    def sort_key(self, key: str) -> tuple[object, ...]:
        match key:
            case "urgency":
                return (_RANK.get(self.urgency, 99), self.created)
            case "status":
                return (_STATUS_RANK.get(self.status, 99), _RANK.get(self.urgency, 99))
            case "created":
                return (self.created,)
            case "name":
                return (self.name, self.created)
            case _:
                return (self.site, _RANK.get(self.urgency, 99))


class CaseIndex:
    """Cases by id, kept in the current sort order, with an incremental filter."""

    def __init__(self) -> None:
        self._rows: dict[str, CaseRow] = {}
        self._sorted: list[CaseRow] | None = None
        self.sort_by = "urgency"
        self.reverse = False
        self._last: tuple[str, str, str, list[CaseRow]] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, case_id: str) -> CaseRow | None:
        return self._rows.get(case_id)

    def replace_all(self, views: Iterable[Mapping[str, Any]]) -> None:
        self._rows = {row.id: row for row in map(CaseRow.of, views)}
        self._dirty()

    def upsert(self, views: Iterable[Mapping[str, Any]]) -> None:
        for view in views:
            row = CaseRow.of(view)
            self._rows[row.id] = row
        self._dirty()

    def set_sort(self, key: str, *, reverse: bool = False) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}")
        self.sort_by, self.reverse = key, reverse
        self._dirty()

    def _dirty(self) -> None:
        self._sorted = None
        self._last = None

    def ordered(self) -> list[CaseRow]:
        if self._sorted is None:
            key = self.sort_by
            self._sorted = sorted(
                self._rows.values(), key=lambda r: r.sort_key(key), reverse=self.reverse
            )
        return self._sorted

    def filter(self, query: str = "", *, urgency: str = "", status: str = "") -> list[CaseRow]:
        """Rows whose blob holds every word of ``query``, of that urgency/status if given."""
        query = query.strip().lower()
        base = self.ordered()
        last = self._last
        if last is not None and last[1:3] == (urgency, status) and query.startswith(last[0]):
            base = last[3]  # a longer query only narrows the previous result
        elif urgency or status:
            base = [
                r
                for r in base
                if (not urgency or r.urgency == urgency) and (not status or r.status == status)
            ]
        words = query.split()
        rows = [r for r in base if all(w in r.blob for w in words)] if words else base
        self._last = (query, urgency, status, rows)
        return rows
