"""Log: recent node events (INFO and up) and the console's own connection events."""

from __future__ import annotations

import datetime as dt

from rich.markup import escape
from textual.app import ComposeResult
from textual.widgets import RichLog

from meshdesk.tui.i18n import N_
from meshdesk.tui.screens._base import ConsoleScreen

__all__ = ["LogScreen", "log_line"]

_STYLE = {"ERROR": "bold red", "WARNING": "yellow"}


def log_line(ts_ms: int, level: str, text: str) -> str:
    when = (
        dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%H:%M:%S")
        if ts_ms
        else "--:--:--"
    )
    style = _STYLE.get(level)
    body = f"{when} {escape(level):<7} {escape(text)}"
    return f"[{style}]{body}[/]" if style else body


class LogScreen(ConsoleScreen):
    TITLE = N_("Log")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._shown = 0

    def body(self) -> ComposeResult:
        yield RichLog(id="log", markup=True, wrap=True, max_lines=2000)

    def update_view(self, part: str | None) -> None:
        if part not in (None, "log", "connection"):
            return
        widget = self.query_one(RichLog)
        lines = list(self.desk.log)
        if part is None or self._shown > len(lines):
            widget.clear()
            self._shown = 0
        for entry in lines[self._shown :]:
            widget.write(log_line(*entry))
        self._shown = len(lines)
