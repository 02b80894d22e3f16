"""A virtual case table: renders only the visible lines (Textual's Line API).

Setting new rows is O(1) for the widget (it keeps the list and repaints what is on
screen). The rows are a window of the node's list (:class:`~meshdesk.tui.index.
CaseWindow`): when the cursor comes near either end of the rows it holds, the table
posts :class:`CaseTable.Edge` and the screen reads the next page; Home and End past
the window post :class:`CaseTable.Jump`. Columns have fixed cell widths; text is cut
and padded by terminal cells, so Japanese (double-width) text lines up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from meshdesk.tui.console import translate_bindings
from meshdesk.tui.i18n import N_, Lang, tr
from meshdesk.tui.index import CaseRow, label

__all__ = ["COLUMNS", "URGENCY_STYLES", "CaseTable", "header_text", "row_cells"]

#: (title msgid, width in cells)
COLUMNS: tuple[tuple[str, int], ...] = (
    (N_("Urgency"), 10),
    (N_("Status"), 12),
    (N_("Category"), 18),
    (N_("Name"), 18),
    (N_("Site"), 18),
    (N_("Opened"), 17),
    (N_("Case"), 12),
)
#: Rows from either end of the window at which the table asks for the next page.
EDGE = 50
URGENCY_STYLES = {
    "immediate": Style(color="white", bgcolor="red", bold=True),
    "high": Style(color="bright_red", bold=True),
    "normal": Style(),
    "low": Style(dim=True),
}
_SEP = " "


def row_cells(row: CaseRow, lang: Lang) -> list[str]:
    """The row's cell texts, each cut and padded to its column's width in cells."""
    texts = [
        label("urgency", row.urgency, lang),
        label("status", row.status, lang) + (" ⚠" if row.conflicted else ""),
        label("category", row.category, lang),
        row.name or "—",
        row.site,
        row.created.replace("T", " ").removesuffix("Z")[:16],
        row.id[24:],
    ]
    return [set_cell_size(t, width) for t, (_, width) in zip(texts, COLUMNS, strict=True)]


def header_text() -> str:
    return _SEP.join(set_cell_size(tr(title), width) for title, width in COLUMNS)


class CaseTable(ScrollView, can_focus=True):
    """Cases, one per line, with a cursor; Enter (or a click) opens one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(-1)", show=False),
        Binding("enter", "open", N_("Open"), show=False),
    ]

    class Opened(Message):
        def __init__(self, case_id: str) -> None:
            super().__init__()
            self.case_id = case_id

    class Edge(Message):
        """The cursor is near the end (``direction`` 1) or the start (-1) of the rows."""

        def __init__(self, direction: int) -> None:
            super().__init__()
            self.direction = direction

    class Jump(Message):
        """Home (``where`` 0) or End (-1) was pressed: the list's start or end."""

        def __init__(self, where: int) -> None:
            super().__init__()
            self.where = where

    def __init__(self, lang: Lang, *, id: str | None = None) -> None:
        super().__init__(id=id)
        translate_bindings(self)
        self.lang = lang
        self.rows: Sequence[CaseRow] = ()
        self.cursor = 0
        self._cache: dict[CaseRow, list[str]] = {}

    def set_rows(
        self, rows: Sequence[CaseRow], *, shift: int = 0, cursor: int | None = None
    ) -> None:
        """Show ``rows``; ``shift`` rows were added (or, negative, dropped) at the top,
        so the cursor and the view move with them; ``cursor`` puts the cursor there."""
        self.rows = rows
        self.virtual_size = Size(sum(w for _, w in COLUMNS) + len(COLUMNS), len(rows))
        if cursor is not None:
            self.cursor = cursor
            self.scroll_to(y=max(0, cursor - 1), animate=False, immediate=True)
        elif shift:
            self.cursor += shift
            self.scroll_to(y=max(0, self.scroll_offset.y + shift), animate=False, immediate=True)
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self.refresh()

    @property
    def current(self) -> CaseRow | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def _cells(self, row: CaseRow) -> list[str]:
        # Rows are immutable: a changed case is a new row, so the cache never goes stale.
        cells = self._cache.get(row)
        if cells is None:
            if len(self._cache) > 5_000:
                self._cache.clear()
            cells = self._cache[row] = row_cells(row, self.lang)
        return cells

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_offset.y) + y
        width = self.size.width
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        row = self.rows[index]
        base = self.rich_style
        if index == self.cursor:
            base += Style(reverse=True) if self.has_focus else Style(underline=True)
        cells = self._cells(row)
        segments = [Segment(cells[0], base + URGENCY_STYLES.get(row.urgency, Style()))]
        for text in cells[1:]:
            segments.append(Segment(_SEP, base))
            segments.append(Segment(text, base))
        strip = Strip(segments).crop(int(self.scroll_offset.x), int(self.scroll_offset.x) + width)
        return strip.extend_cell_length(width, base)

    def _move(self, to: int) -> None:
        if not self.rows:
            return
        old, self.cursor = self.cursor, max(0, min(len(self.rows) - 1, to))
        self.scroll_to_region_line(self.cursor)
        self.refresh_line(old - int(self.scroll_offset.y))
        self.refresh_line(self.cursor - int(self.scroll_offset.y))
        self._near_edge()

    def _near_edge(self) -> None:
        if self.cursor >= len(self.rows) - EDGE:
            self.post_message(self.Edge(1))
        elif self.cursor < EDGE:
            self.post_message(self.Edge(-1))

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        bottom = int(new) + self.size.height
        if bottom >= len(self.rows) - EDGE:
            self.post_message(self.Edge(1))
        elif int(new) < EDGE and new < old:
            self.post_message(self.Edge(-1))

    def scroll_to_region_line(self, line: int) -> None:
        top, height = int(self.scroll_offset.y), max(1, self.size.height)
        if line < top:
            self.scroll_to(y=line, animate=False)
        elif line >= top + height:
            self.scroll_to(y=line - height + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(1, self.size.height - 1))

    def action_jump(self, where: int) -> None:
        self.post_message(self.Jump(where))  # the screen knows whether the list goes on
        self._move(0 if where == 0 else len(self.rows) - 1)

    def action_open(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(self.Opened(row.id))

    def on_click(self, event: events.Click) -> None:
        index = int(self.scroll_offset.y) + event.y
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain >= 2:
                self.action_open()
            self._move(index)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
