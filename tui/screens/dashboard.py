"""Dashboard: every site and peer, case counts by urgency and status, sync progress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Label, ProgressBar

from meshdesk.cases.model import Status, Urgency
from meshdesk.clock import SKEW_WARN_MS
from meshdesk.tui.console import ago, plain, plain_row, span
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.index import label
from meshdesk.tui.screens._base import ConsoleScreen

__all__ = ["DashboardScreen", "link_cell", "link_label"]

_LINK = {
    "linked": N_("linked"),
    "connecting": N_("connecting"),
    "down": N_("down"),
    "known": N_("known"),
    "refused": N_("refused"),
    "quarantined": N_("quarantined"),
}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def link_label(state: str) -> str:
    return tr(_LINK[state]) if state in _LINK else state


def link_cell(peer: Mapping[str, Any]) -> str:
    """The link state, with what staff must know: the peer's clock is off, a copy of
    it was refused (the same home running on two machines)."""
    parts = [link_label(str(peer.get("state")))]
    offset = peer.get("clock_offset_ms")
    if isinstance(offset, int) and abs(offset) > SKEW_WARN_MS:
        way = tr("clock {amount} ahead") if offset > 0 else tr("clock {amount} behind")
        parts.append(way.format(amount=span(offset)))
    if peer.get("twin"):
        parts.append(tr("a copy at {address} was refused").format(address=peer["twin"]))
    return " · ".join(parts)


class DashboardScreen(ConsoleScreen):
    TITLE = N_("Dashboard")

    def body(self) -> ComposeResult:
        with Horizontal(id="dash-top"):
            with Vertical(classes="panel"):
                yield Label(tr("Sites and peers"), classes="panel-title")
                yield DataTable(id="peers", cursor_type="row", zebra_stripes=True)
            with Vertical(classes="panel"):
                yield Label(tr("Cases by urgency and status"), classes="panel-title")
                yield DataTable(id="counts", cursor_type="none")
        with Vertical(classes="panel", id="dash-sync"):
            yield Label(tr("Sync progress"), classes="panel-title")
            yield VerticalScroll(id="bars")

    def on_mount(self) -> None:
        peers = self.query_one("#peers", DataTable)
        peers.add_columns(tr("Site"), tr("Node"), tr("Link"), tr("Last contact"), tr("Backlog"))
        counts = self.query_one("#counts", DataTable)
        counts.add_columns(tr("Urgency"), *(s.label(self.desk.lang) for s in Status), tr("Total"))
        super().on_mount()

    def update_view(self, part: str | None) -> None:
        if part in (None, "peers", "sync", "status"):
            self._peers()
        if part in (None, "counts"):
            self._counts()
        if part in (None, "sync"):
            self._bars()

    def _peers(self) -> None:
        c = self.desk
        table = self.query_one("#peers", DataTable)
        table.clear()
        now = c.now_ms()
        me = c.status
        if me:
            this = tr("this node")
            table.add_row(
                *plain_row(
                    me.get("site", ""), f"{me.get('name', '')} ({this})", tr("self"), "-", "-"
                ),
                key=str(me.get("node_id")),
            )
        for peer in sorted(c.peers.values(), key=lambda p: (str(p["site"]), str(p["name"]))):
            backlog = c.sync.get(peer["node_id"], {}).get("outbox")
            table.add_row(
                *plain_row(
                    peer["site"],
                    peer["name"],
                    link_cell(peer),
                    ago(now, peer.get("last_seen_ms")),
                    "-" if backlog is None else str(backlog),
                ),
                key=peer["node_id"],
            )

    def _counts(self) -> None:
        lang = self.desk.lang
        grid = {(str(u), str(s)): 0 for u in Urgency for s in Status}
        for cell in self.desk.counts.get("counts", []):
            key = (str(cell.get("urgency")), str(cell.get("status")))
            if key in grid:
                grid[key] += int(cell.get("cases", 0))
        table = self.query_one("#counts", DataTable)
        table.clear()
        for u in Urgency:
            values = [grid[(str(u), str(s))] for s in Status]
            table.add_row(label("urgency", u, lang), *map(str, values), str(sum(values)))
        totals = [sum(grid[(str(u), str(s))] for u in Urgency) for s in Status]
        table.add_row(tr("Total"), *map(str, totals), str(sum(totals)))

    def _bars(self) -> None:
        bars = self.query_one("#bars", VerticalScroll)
        rows = sorted(self.desk.sync.values(), key=lambda p: str(p.get("name")))
        bars.remove_children()
        if not rows:
            bars.mount(Label(tr("No linked peer is syncing."), classes="dim"))
            return
        widgets: list[Widget] = []
        for row in rows:
            sent, received = _count(row.get("sent_events")), _count(row.get("received_events"))
            outbox, inbox = row.get("outbox"), _count(row.get("inbox"))
            done = sent + received
            if not isinstance(outbox, int):  # the peer's heads are not known yet
                text = tr("{name}: sent {sent}, received {received}, comparing…").format(
                    name=row.get("name"), sent=sent, received=received
                )
                widgets += [Label(plain(text)), ProgressBar(total=None, show_eta=False)]
                continue
            text = tr("{name}: sent {sent}, received {received}, waiting {left}").format(
                name=row.get("name"), sent=sent, received=received, left=outbox + inbox
            )
            bar = ProgressBar(total=max(1, done + outbox + inbox), show_eta=False)
            bar.progress = done if outbox + inbox else max(1, done + outbox + inbox)
            widgets += [Label(plain(text)), bar]
        bars.mount_all(widgets)
