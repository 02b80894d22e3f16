"""Sync: per peer, what we hold that it lacks (outbox), and the last exchange."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable

from meshdesk.tui.console import ago, plain_row
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.screens._base import ConsoleScreen

__all__ = ["SyncScreen"]


def _number(value: object) -> str:
    """A count, or "…" while it is not known yet (the peer's heads have not arrived)."""
    return str(value) if isinstance(value, int) else "…"


class SyncScreen(ConsoleScreen):
    TITLE = N_("Sync")

    def body(self) -> ComposeResult:
        yield DataTable(id="sync", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(
            tr("Node"),
            tr("Site"),
            tr("Outbox"),
            tr("Inbox"),
            tr("Sent"),
            tr("Received"),
            tr("Last exchange"),
            tr("State"),
        )
        super().on_mount()

    def update_view(self, part: str | None) -> None:
        if part not in (None, "sync"):
            return
        table = self.query_one(DataTable)
        table.clear()
        now = self.desk.now_ms()
        for row in sorted(self.desk.sync.values(), key=lambda r: str(r.get("name"))):
            table.add_row(
                *plain_row(
                    row.get("name"),
                    row.get("site"),
                    _number(row.get("outbox")),
                    _number(row.get("inbox")),
                    _number(row.get("sent_events")),
                    _number(row.get("received_events")),
                    ago(now, row.get("last_exchange_ms")),
                    tr("idle") if row.get("idle") else tr("syncing"),
                )
            )
