"""Notices: HQ's announcements (acknowledge with a), operators' messages (read with
r, write with m), posting an announcement (n, where this node may), and USB bundles
(b: export to a file, i: import one) — see meshdesk.notices and meshdesk.bundles.

A severe announcement nobody here acknowledged puts a banner on every screen
(:func:`notice_banner`) until an operator acknowledges it here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Select

from meshdesk.tui.console import Console, attempt, notice_title, plain, plain_row
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.screens._base import ConsoleScreen

__all__ = ["ComposeScreen", "NoticesScreen", "load_notices"]

_SEVERITY = {"info": N_("info"), "warning": N_("warning"), "severe": N_("severe")}


async def load_notices(console: Console) -> None:
    """Read announcements and messages from the node (both are short lists)."""
    console.announcements = list((await console.api.request("announce_list", {}))["announcements"])
    console.messages = list((await console.api.request("message_list", {}))["messages"])
    console.publish("notices")


class ComposeScreen(ModalScreen[dict[str, Any] | None]):
    """A small form: a message (to, text) or an announcement (title, body, severity, to)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", N_("Cancel")),
        Binding("ctrl+s", "send", N_("Send")),
    ]

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def compose(self) -> ComposeResult:
        with Vertical(id="compose"):
            if self.kind == "message":
                yield Label(plain(tr("Message (sealed to its recipients)")), classes="panel-title")
                yield Input(placeholder=tr("To: node name or id"), id="to")
                yield Input(placeholder=tr("or department"), id="dept")
                yield Input(placeholder=tr("Text"), id="text")
            elif self.kind == "announcement":
                yield Label(plain(tr("New announcement")), classes="panel-title")
                yield Input(placeholder=tr("Title"), id="title")
                yield Input(placeholder=tr("Text"), id="body")
                yield Select(
                    [(tr(label), value) for value, label in _SEVERITY.items()],
                    value="info",
                    allow_blank=False,
                    id="severity",
                )
                yield Input(placeholder=tr("To: all, site:NAME, role:ROLE, dept:NAME"), id="to")
            else:
                yield Label(plain(tr("File (absolute path)")), classes="panel-title")
                yield Input(placeholder="/media/usb/meshdesk.bundle", id="file")
            yield Label(plain(tr("Ctrl+S sends, Escape cancels")))

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def action_send(self) -> None:
        if self.kind == "message":
            self.dismiss({"to": self._value("to"), "dept": self._value("dept"),
                          "text": self._value("text")})  # fmt: skip
        elif self.kind == "announcement":
            targets = [t for t in self._value("to").split() if t]
            severity = self.query_one("#severity", Select).value
            self.dismiss({"title": self._value("title"), "body": self._value("body"),
                          "severity": str(severity), "to": targets})  # fmt: skip
        else:
            self.dismiss({"file": self._value("file")})

    def action_cancel(self) -> None:
        self.dismiss(None)


class NoticesScreen(ConsoleScreen):
    TITLE = N_("Notices")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "acknowledge", N_("Acknowledge")),
        Binding("r", "read", N_("Mark read")),
        Binding("m", "message", N_("New message")),
        Binding("n", "announce", N_("New announcement")),
        Binding("b", "bundle('export')", N_("Export bundle")),
        Binding("i", "bundle('import')", N_("Import bundle")),
    ]

    def body(self) -> ComposeResult:
        yield Label(plain(tr("Announcements")), classes="panel-title")
        yield DataTable(id="announcements", cursor_type="row", zebra_stripes=True)
        yield Label(plain(tr("Messages")), classes="panel-title")
        yield DataTable(id="messages", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#announcements", DataTable).add_columns(
            tr("Severity"), tr("Posted"), tr("From"), tr("Title"), tr("Delivered"),
            tr("Read"), tr("State"),
        )  # fmt: skip
        self.query_one("#messages", DataTable).add_columns(
            tr("Sent"), tr("From"), tr("To"), tr("Text"), tr("State")
        )
        super().on_mount()

    def update_view(self, part: str | None) -> None:
        if part not in (None, "notices"):
            return
        table = self.query_one("#announcements", DataTable)
        table.clear()
        for a in self.desk.announcements:
            state = tr("acknowledged") if a.get("acknowledged") else tr("new")
            table.add_row(
                *plain_row(
                    tr(_SEVERITY.get(str(a.get("severity")), str(a.get("severity")))),
                    str(a.get("posted_at", ""))[:16].replace("T", " "),
                    a.get("from"),
                    notice_title(self.desk, a),
                    a.get("delivered_count"),
                    a.get("read_count"),
                    state,
                ),
                key=str(a["id"]),
            )
        messages = self.query_one("#messages", DataTable)
        messages.clear()
        for m in self.desk.messages:
            if m.get("outgoing"):
                got = sum(1 for r in m.get("recipients", []) if r.get("delivered_at"))
                read = sum(1 for r in m.get("recipients", []) if r.get("read_at"))
                state = tr("{got} delivered, {read} read").format(got=got, read=read)
            else:
                state = tr("read") if m.get("read_here") else tr("new")
            messages.add_row(
                *plain_row(
                    str(m.get("sent_at", ""))[:16].replace("T", " "),
                    m.get("from"),
                    m.get("to"),
                    m.get("text") or tr("(sealed)"),
                    state,
                ),
                key=str(m["id"]),
            )

    def _selected(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    async def _do(self, op: str, args: dict[str, Any]) -> Any:
        result = await attempt(self, self.desk.api.request(op, args))
        if result is not None:
            await attempt(self, load_notices(self.desk))
        return result

    async def action_acknowledge(self) -> None:
        notice = self._selected("announcements")
        if notice is not None:
            await self._do("announce_ack", {"id": notice, "operator": self.desk.operator})

    async def action_read(self) -> None:
        notice = self._selected("messages")
        if notice is not None:
            await self._do("message_read", {"id": notice, "operator": self.desk.operator})

    def action_message(self) -> None:
        def send(values: dict[str, Any] | None) -> None:
            if values:
                args = {k: v for k, v in values.items() if v}
                self.run_worker(self._do("message_send", {**args, "operator": self.desk.operator}))

        self.app.push_screen(ComposeScreen("message"), send)

    def action_announce(self) -> None:
        def post(values: dict[str, Any] | None) -> None:
            if values:
                args = {k: v for k, v in values.items() if v}
                self.run_worker(self._do("announce_new", {**args, "operator": self.desk.operator}))

        self.app.push_screen(ComposeScreen("announcement"), post)

    def action_bundle(self, which: str) -> None:
        def run(values: dict[str, Any] | None) -> None:
            if values and values.get("file"):
                op, key = (
                    ("bundle_export", "out") if which == "export" else ("bundle_import", "file")
                )
                self.run_worker(self._bundle(op, {key: values["file"]}))

        self.app.push_screen(ComposeScreen("file"), run)

    async def _bundle(self, op: str, args: dict[str, Any]) -> None:
        result = await attempt(self, self.desk.api.request(op, args))
        if isinstance(result, dict):
            text = (
                tr("Bundle written: {events} events").format(events=result.get("events"))
                if op == "bundle_export"
                else tr("Bundle imported: {new} new of {events} events").format(
                    new=result.get("new_events"), events=result.get("events")
                )
            )
            self.notify(text, title=tr("USB bundle"), markup=False)
            await attempt(self, load_notices(self.desk))
