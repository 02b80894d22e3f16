"""Stewardship in the console: erase a citizen's data (two steps), read a case's trail,
export the queue's cases (``x`` on the queue: a file for Excel or partners).

Erasing cannot be undone on any node, so it is a deliberate two-step flow (as ODK
Central's purge is): Ctrl+E on a case opens :class:`EraseScreen`, which says what
will happen, asks for the reason (kept in the signed event) and erases only on its
own button. :class:`HistoryScreen` lists who did what to the case and when, from its
signed events (``case_history``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from meshdesk.tui.console import plain
from meshdesk.tui.i18n import N_, tr

__all__ = ["EraseScreen", "ExportScreen", "HistoryScreen", "default_export_path", "history_lines"]


class EraseScreen(ModalScreen[str | None]):
    """Confirm an erasure: dismissed with the reason, or None (cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", N_("Cancel"))]

    def __init__(self, case_id: str, name: str | None) -> None:
        super().__init__()
        self.case_id = case_id
        self.citizen = name

    def compose(self) -> ComposeResult:
        who = self.citizen or tr("(sealed)")
        with Vertical(id="erase"):
            yield Label(plain(tr("Erase the citizen's data?")), classes="panel-title")
            yield Static(
                plain(
                    tr(
                        "Case {id} ({name}): the personal data and notes are erased on "
                        "every node, including nodes that are offline now (when they next "
                        "connect). This cannot be undone. The case's open facts and its "
                        "history stay."
                    ).format(id=self.case_id[24:], name=who)
                )
            )
            yield Input(placeholder=tr("Reason (required), e.g. the citizen's request"),
                        id="erase-reason")  # fmt: skip
            with Horizontal(classes="row"):
                yield Button(tr("Erase on every node"), id="erase-confirm", variant="error")
                yield Button(tr("Cancel"), id="erase-cancel")

    def on_mount(self) -> None:
        self.query_one("#erase-reason", Input).focus()

    @on(Button.Pressed, "#erase-confirm")
    def _confirm(self) -> None:
        reason = self.query_one("#erase-reason", Input).value.strip()
        if not reason:
            self.notify(tr("Give the reason for the erasure."), severity="error", markup=False)
            return
        self.dismiss(reason)

    @on(Button.Pressed, "#erase-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def history_lines(events: list[dict[str, Any]]) -> str:
    """The trail as lines: when, what, who (node and operator), details."""
    lines = []
    for row in events:
        who = " ".join(x for x in (str(row.get("name") or row["node"][:7]), row["op"]) if x)
        detail = f"  {row['detail']}" if row.get("detail") else ""
        lines.append(f"{row['at']}  {tr(row['action'])}  {who}{detail}")
    return "\n".join(lines) or tr("No events.")


class HistoryScreen(ModalScreen[None]):
    """A case's audit trail from its signed events; Escape closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", N_("Close"))]

    def __init__(self, case_id: str, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.case_id = case_id
        self.events = events

    def compose(self) -> ComposeResult:
        with Vertical(id="history"):
            yield Label(
                plain(tr("History of case {id}").format(id=self.case_id[24:])),
                classes="panel-title",
            )
            with VerticalScroll():
                yield Static(plain(history_lines(self.events)), id="history-lines")

    def action_close(self) -> None:
        self.dismiss(None)


# Action names of the trail (meshdesk.cases.history.ACTIONS), for the catalogs.
_ACTIONS = (
    N_("opened"),
    N_("set"),
    N_("note added"),
    N_("referred"),
    N_("referral state"),
    N_("consent added"),
    N_("call logged"),
    N_("personal data changed"),
    N_("keys granted"),
    N_("erased"),
    N_("erasure applied"),
    N_("exported"),
    N_("consent withdrawn"),
)


#: Formats ``case_export`` writes (``meshdesk.cases.export.FORMATS``), and their suffixes.
_FORMATS = (("CSV (Excel)", "csv"), ("Excel (.xlsx)", "xlsx"), ("JSON lines", "json"),
            ("HXL (CSV)", "hxl"))  # fmt: skip


def default_export_path(fmt: str, today: str) -> str:
    """Where an export goes unless staff say otherwise: the home folder, dated."""
    suffix = {"hxl": "csv", "json": "jsonl"}.get(fmt, fmt)
    return str(Path.home() / f"meshdesk-cases-{today}.{suffix}")


class ExportScreen(ModalScreen[dict[str, Any] | None]):
    """Export the queue's cases (its urgency and status filters) to a file: dismissed
    with the ``case_export`` arguments, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", N_("Cancel"))]

    def __init__(self, filters: dict[str, str], today: str) -> None:
        super().__init__()
        self.filters = filters
        self.today = today

    def compose(self) -> ComposeResult:
        shown = ", ".join(f"{k}: {v}" for k, v in self.filters.items()) or tr("all cases")
        with Vertical(id="export"):
            yield Label(plain(tr("Export cases")), classes="panel-title")
            yield Static(plain(tr("Cases: {which}").format(which=shown)))
            yield Select(_FORMATS, value="csv", allow_blank=False, id="export-format")
            yield Input(value=default_export_path("csv", self.today), id="export-out")
            yield Checkbox(tr("Include personal data (HQ only; recorded)"), id="export-personal")
            with Horizontal(classes="row"):
                yield Button(tr("Export"), id="export-confirm", variant="primary")
                yield Button(tr("Cancel"), id="export-cancel")

    @on(Select.Changed, "#export-format")
    def _format(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.query_one("#export-out", Input).value = default_export_path(
                event.value, self.today
            )

    @on(Button.Pressed, "#export-confirm")
    def _confirm(self) -> None:
        out = self.query_one("#export-out", Input).value.strip()
        if not out:
            self.notify(tr("Give the file to write."), severity="error", markup=False)
            return
        fmt = self.query_one("#export-format", Select).value
        self.dismiss(
            {
                **self.filters,
                "format": fmt if isinstance(fmt, str) else "csv",
                "out": str(Path(out).expanduser().absolute()),
                "personal": self.query_one("#export-personal", Checkbox).value,
            }
        )

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
