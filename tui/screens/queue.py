"""Case queue: the node's case list, a page at a time, urgent first.

Every filter keystroke asks the node for the first page of the new query (its case
index answers it); scrolling near either end of the rows held asks for the next
page. How many cases match is counted after the page is shown, so a keystroke
repaints at once whatever the count costs.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input, Static

from meshdesk.cases.model import Status, Urgency
from meshdesk.tui.console import attempt, plain
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.index import COUNT_CAP, SORT_KEYS, QueueQuery, label
from meshdesk.tui.screens._base import ConsoleScreen
from meshdesk.tui.screens.steward import ExportScreen
from meshdesk.tui.widgets import CaseTable
from meshdesk.tui.widgets.case_table import header_text

__all__ = ["QueueScreen"]

_SORT_NAMES = {
    "urgency": N_("urgency"),
    "status": N_("status"),
    "opened": N_("opened"),
    "site": N_("site"),
}


class QueueScreen(ConsoleScreen):
    TITLE = N_("Cases")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", N_("Search")),
        Binding("u", "cycle_urgency", N_("Urgency filter")),
        Binding("t", "cycle_status", N_("Status filter")),
        Binding("o", "cycle_sort", N_("Sort")),
        Binding("r", "reverse", N_("Reverse")),
        Binding("enter", "open", N_("Open")),
        Binding("x", "export", N_("Export…")),
        Binding("escape", "leave_search", N_("To table"), show=False),
    ]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.urgency = ""
        self.status = ""
        self.sort = "urgency"
        self.reverse = False

    def body(self) -> ComposeResult:
        yield Input(placeholder=tr("Search: name, site, id, category… (/)"), id="search")
        yield Static(id="filters")
        yield Static(header_text(), id="table-header")
        yield CaseTable(self.desk.lang, id="cases")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(CaseTable).focus()
        self.apply_filter()

    @property
    def table(self) -> CaseTable:
        return self.query_one(CaseTable)

    def _query(self) -> QueueQuery:
        return QueueQuery(
            search=self.query_one("#search", Input).value,
            urgency=self.urgency,
            status=self.status,
            sort=self.sort,
            reverse=self.reverse,
        )

    def update_view(self, part: str | None) -> None:
        window = self.desk.window
        if part == "cases":
            if window.prev is None:  # the top of the list is on screen: new cases show
                current = self.table.current
                self._load(self._query(), keep=current.id if current else None)
            else:
                self.table.refresh()
        elif part in (None, "counts"):
            self._show_filters()

    def apply_filter(self) -> None:
        self._load(self._query())

    # -- reading pages -------------------------------------------------------------------

    @work(exclusive=True, group="queue")
    async def _load(self, query: QueueQuery, keep: str | None = None) -> None:
        """The first page of ``query``; the cursor stays on ``keep`` if it is there."""
        window = self.desk.window
        page = await attempt(self, self.desk.api.case("list", query.args()))
        if page is None:
            return
        window.reset(query, page)
        window.matched = None
        rows = window.rows
        at = next((i for i, r in enumerate(rows) if r.id == keep), 0) if keep else 0
        self.table.set_rows(rows, cursor=at)
        self._show_filters()
        self._count(query)

    @work(exclusive=True, group="queue-count")
    async def _count(self, query: QueueQuery) -> None:
        args = query.args(limit=1, count=True, count_cap=COUNT_CAP)
        page = await attempt(self, self.desk.api.case("list", args))
        if page is not None and self.desk.window.query == query:
            self.desk.window.matched = int(page.get("matched", 0))
            self.desk.window.capped = bool(page.get("matched_capped"))
            self._show_filters()

    @work(exclusive=True, group="queue-more")
    async def _more(self, direction: int) -> None:
        window = self.desk.window
        query = window.query
        cursor = window.next if direction > 0 else window.prev
        if cursor is None:
            return
        args = query.args(after=cursor) if direction > 0 else query.args(before=cursor)
        page: dict[str, Any] | None = await attempt(self, self.desk.api.case("list", args))
        if (
            page is None
            or window.query != query
            or (window.next, window.prev)[direction < 0] != cursor
        ):
            return  # the query changed meanwhile: that page is not wanted any more
        if direction > 0:
            self.table.set_rows(window.rows, shift=-window.extend(page))
        else:
            self.table.set_rows(window.rows, shift=window.extend_back(page))

    @work(exclusive=True, group="queue")
    async def _end(self, where: int) -> None:
        """Home or End of the whole list (the window may hold only part of it)."""
        window, query = self.desk.window, self._query()
        if where == 0:
            if window.prev is not None:
                page = await attempt(self, self.desk.api.case("list", query.args()))
                if page is not None:
                    window.reset(query, page)
                    self.table.set_rows(window.rows, cursor=0)
            return
        if window.next is None:
            return
        flipped = QueueQuery(
            query.search, query.urgency, query.status, query.sort, not query.reverse
        )
        page = await attempt(self, self.desk.api.case("list", flipped.args()))
        if page is not None:
            matched = window.matched
            window.at_end(query, page)
            window.matched = matched
            self.table.set_rows(window.rows, cursor=max(0, len(window.rows) - 1))

    @on(CaseTable.Edge)
    def _edge(self, message: CaseTable.Edge) -> None:
        window = self.desk.window
        if (window.next if message.direction > 0 else window.prev) is not None:
            self._more(message.direction)

    @on(CaseTable.Jump)
    def _jump(self, message: CaseTable.Jump) -> None:
        self._end(message.where)

    # -- the line above the table ------------------------------------------------------

    def _show_filters(self) -> None:
        lang, window = self.desk.lang, self.desk.window
        every = tr("all")
        matched = "…" if window.matched is None else f"{window.matched:,}"
        if window.capped:
            matched += "+"
        total = self.desk.counts.get("total")
        self.query_one("#filters", Static).update(
            plain(
                tr(
                    "{shown} of {total} cases · urgency: {u} · status: {s} · sorted by {k}{rev}"
                ).format(
                    shown=matched,
                    total="…" if total is None else f"{total:,}",
                    u=label("urgency", self.urgency, lang) if self.urgency else every,
                    s=label("status", self.status, lang) if self.status else every,
                    k=tr(_SORT_NAMES[self.sort]),
                    rev=" ↑" if self.reverse else "",
                )
            )
        )

    # -- keys --------------------------------------------------------------------------

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self.apply_filter()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.table.focus()

    @on(CaseTable.Opened)
    def _opened(self, message: CaseTable.Opened) -> None:
        self.app.open_case(message.case_id)  # type: ignore[attr-defined]

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_leave_search(self) -> None:
        self.table.focus()

    def action_open(self) -> None:
        self.table.action_open()

    @work(exclusive=True, group="queue-export")
    async def action_export(self) -> None:
        """Export the cases the urgency and status filters select (the node writes the
        file and records the export); the search words do not narrow an export."""
        filters = {k: v for k, v in (("urgency", self.urgency), ("status", self.status)) if v}
        today = time.strftime("%Y%m%d", time.localtime(self.desk.now_ms() / 1000))
        args = await self.app.push_screen_wait(ExportScreen(filters, today))
        if not args:
            return
        self.notify(tr("Exporting…"), markup=False)
        done = await attempt(
            self, self.desk.api.case("export", {"operator": self.desk.operator, **args})
        )
        if isinstance(done, dict):
            self.notify(
                tr("Exported {rows} cases to {path}").format(rows=done["rows"], path=done["path"]),
                markup=False,
            )

    def action_cycle_urgency(self) -> None:
        options = ["", *map(str, Urgency)]
        self.urgency = options[(options.index(self.urgency) + 1) % len(options)]
        self.apply_filter()

    def action_cycle_status(self) -> None:
        options = ["", *map(str, Status)]
        self.status = options[(options.index(self.status) + 1) % len(options)]
        self.apply_filter()

    def action_cycle_sort(self) -> None:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        self.apply_filter()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.apply_filter()
