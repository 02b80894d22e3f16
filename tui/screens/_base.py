"""What every console screen has: header, connection banner, footer, live updates."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from meshdesk.tui.console import Console, translate_bindings
from meshdesk.tui.i18n import tr
from meshdesk.tui.widgets import Banner

__all__ = ["ConsoleScreen"]


class ConsoleScreen(Screen[Any]):
    """A screen that gets the console (node + state) through its constructor."""

    TITLE = ""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.desk = console
        translate_bindings(self)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Banner(id="banner")
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.title = tr(self.TITLE)
        if self.desk.changed is not None:
            self.desk.changed.subscribe(self, self._changed)
        self._show_banner()
        self.update_view(None)

    def on_screen_resume(self) -> None:
        self._show_banner()
        self.update_view(None)

    def _changed(self, part: str) -> None:
        if part == "connection":
            self._show_banner()
        if self.is_current:
            self.update_view(part)

    def _show_banner(self) -> None:
        banner = self.query_one(Banner)
        if self.desk.connected:
            banner.hide()
        else:
            banner.show(
                tr("⚠ Not connected to the node ({where}); reconnecting…").format(
                    where=self.desk.api.where
                )
            )

    def update_view(self, part: str | None) -> None:
        """Redraw from the console's state; ``part`` None means everything."""
