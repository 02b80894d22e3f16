"""What every console screen has: header, connection banner, footer, live updates."""

from __future__ import annotations

import logging
from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from meshdesk.tui.console import Console, clock_warning, notice_banner, translate_bindings
from meshdesk.tui.i18n import tr
from meshdesk.tui.widgets import Banner

__all__ = ["ConsoleScreen"]

log = logging.getLogger("meshdesk.tui")


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
        self._update(None)

    def on_screen_resume(self) -> None:
        self._show_banner()
        self._update(None)

    def _changed(self, part: str) -> None:
        if part in ("connection", "status", "notices"):
            self._show_banner()
        if self.is_current:
            self._update(part)

    def _update(self, part: str | None) -> None:
        # What the node sends is data from the network: a shape this screen did not
        # expect is logged and shown, and the console keeps running.
        try:
            self.update_view(part)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.exception("could not show %s on %s", part or "the screen", type(self).__name__)
            self.notify(
                tr("Could not show what the node sent: {error}").format(error=exc),
                severity="error",
                markup=False,
            )

    def _show_banner(self) -> None:
        banner = self.query_one(Banner)
        if self.desk.connected:
            warning = notice_banner(self.desk) or clock_warning(self.desk.status)
            if warning is None:
                banner.hide()
            else:
                banner.show(warning)
        else:
            banner.show(
                tr("⚠ Not connected to the node ({where}); reconnecting…").format(
                    where=self.desk.api.where
                )
            )

    def update_view(self, part: str | None) -> None:
        """Redraw from the console's state; ``part`` None means everything."""
