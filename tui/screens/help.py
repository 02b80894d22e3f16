"""Help: every key binding of the console, by screen."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from meshdesk.tui.console import Console, plain_row
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.screens._base import ConsoleScreen

__all__ = ["HelpScreen"]


class HelpScreen(ConsoleScreen):
    TITLE = N_("Help")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", N_("Back"))]

    def __init__(self, console: Console, rows: list[tuple[str, str, str]]) -> None:
        super().__init__(console)
        self.rows = rows

    def body(self) -> ComposeResult:
        yield DataTable(id="help", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(tr("Where"), tr("Key"), tr("What"))
        for row in self.rows:
            table.add_row(*plain_row(*row))
        super().on_mount()

    def action_close(self) -> None:
        self.app.pop_screen()
