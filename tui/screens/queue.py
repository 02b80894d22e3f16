"""Case queue: a sortable, filterable table of every case, urgent first."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input, Static

from meshdesk.cases.model import Status, Urgency
from meshdesk.tui.console import plain
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.index import SORT_KEYS, label
from meshdesk.tui.screens._base import ConsoleScreen
from meshdesk.tui.widgets import CaseTable
from meshdesk.tui.widgets.case_table import header_text

__all__ = ["QueueScreen"]

_SORT_NAMES = {
    "urgency": N_("urgency"),
    "status": N_("status"),
    "created": N_("opened"),
    "name": N_("name"),
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
        Binding("escape", "leave_search", N_("To table"), show=False),
    ]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.urgency = ""
        self.status = ""

    def body(self) -> ComposeResult:
        yield Input(placeholder=tr("Search: name, site, id, category… (/)"), id="search")
        yield Static(id="filters")
        yield Static(header_text(), id="table-header")
        yield CaseTable(self.desk.lang, id="cases")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(CaseTable).focus()

    @property
    def table(self) -> CaseTable:
        return self.query_one(CaseTable)

    def update_view(self, part: str | None) -> None:
        if part in (None, "cases"):
            self.apply_filter()

    def apply_filter(self) -> None:
        query = self.query_one("#search", Input).value
        rows = self.desk.index.filter(query, urgency=self.urgency, status=self.status)
        self.table.set_rows(rows)
        lang = self.desk.lang
        every = tr("all")
        self.query_one("#filters", Static).update(
            plain(
                tr(
                    "{shown} of {total} cases · urgency: {u} · status: {s} · sorted by {k}{rev}"
                ).format(
                    shown=len(rows),
                    total=len(self.desk.index),
                    u=label("urgency", self.urgency, lang) if self.urgency else every,
                    s=label("status", self.status, lang) if self.status else every,
                    k=tr(_SORT_NAMES[self.desk.index.sort_by]),
                    rev=" ↑" if self.desk.index.reverse else "",
                )
            )
        )

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

    def action_cycle_urgency(self) -> None:
        options = ["", *map(str, Urgency)]
        self.urgency = options[(options.index(self.urgency) + 1) % len(options)]
        self.apply_filter()

    def action_cycle_status(self) -> None:
        options = ["", *map(str, Status)]
        self.status = options[(options.index(self.status) + 1) % len(options)]
        self.apply_filter()

    def action_cycle_sort(self) -> None:
        index = self.desk.index
        index.set_sort(SORT_KEYS[(SORT_KEYS.index(index.sort_by) + 1) % len(SORT_KEYS)])
        self.apply_filter()

    def action_reverse(self) -> None:
        index = self.desk.index
        index.set_sort(index.sort_by, reverse=not index.reverse)
        self.apply_filter()
