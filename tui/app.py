"""The operator console: a Textual app over one :class:`~meshdesk.tui.api.NodeApi`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.signal import Signal

from meshdesk.errors import MeshdeskError
from meshdesk.tui.api import ConnectionLost, NodeApi
from meshdesk.tui.bridge import run_bridge
from meshdesk.tui.console import Console, attempt, translate_bindings
from meshdesk.tui.i18n import N_, Lang, set_language, tr
from meshdesk.tui.messages import (
    BundleProgress,
    CallChanged,
    CasesChanged,
    CitizenChanged,
    LogLine,
    NodeBack,
    NodeLost,
    NoticesChanged,
    PeerChanged,
    SyncProgress,
)
from meshdesk.tui.screens import (
    CallScreen,
    CaseFormScreen,
    DashboardScreen,
    HelpScreen,
    LogScreen,
    NoticesScreen,
    QueueScreen,
    SyncScreen,
)
from meshdesk.tui.screens.notices import load_notices
from meshdesk.tui.widgets import CaseTable
from meshdesk.tui.widgets.conflict import ConflictView

__all__ = ["SCREENS_BY_KEY", "MeshdeskApp"]

log = logging.getLogger("meshdesk.tui")

#: Above this many changed cases at once, reload the whole list.
_RELOAD_ABOVE = 200

SCREENS_BY_KEY: dict[str, tuple[str, str]] = {
    "dashboard": ("f1", N_("Dashboard")),
    "queue": ("f2", N_("Cases")),
    "calls": ("f3", N_("Calls")),
    "sync": ("f4", N_("Sync")),
    "log": ("f5", N_("Log")),
    "notices": ("f7", N_("Notices")),
}


def _wall_ms() -> int:
    return int(time.time() * 1000)


class MeshdeskApp(App[None]):
    """Dashboard, case queue and form, calls, sync, log and help over one node."""

    CSS_PATH = "app.tcss"
    TITLE = "meshdesk"
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"show('{name}')", title) for name, (key, title) in SCREENS_BY_KEY.items()),
        Binding("f6", "help", N_("Help")),
        Binding("question_mark", "help", N_("Help"), show=False),
        Binding("ctrl+n", "new_case", N_("New case")),
        Binding("ctrl+q", "quit", N_("Quit")),
    ]

    def __init__(
        self,
        api: NodeApi,
        *,
        lang: Lang = "ja",
        operator: str = "operator",
        now_ms: Callable[[], int] = _wall_ms,
        poll_interval: float = 2.0,
        retry: tuple[float, float] = (0.25, 3.0),
    ) -> None:
        set_language(lang)
        super().__init__()
        translate_bindings(self)
        self.desk = Console(api=api, lang=lang, operator=operator, now_ms=now_ms)
        self.desk.changed = Signal(self, "changed")
        self._poll_interval = poll_interval
        self._retry = retry
        self._pending: set[str] = set()
        self._reload_all = False
        self._loading = False
        self._notices_seen = False
        self._bundle_shown: tuple[str, int] = ("", -1)
        self.sub_title = api.where

    # -- start -----------------------------------------------------------------------

    def on_mount(self) -> None:
        c = self.desk
        self.install_screen(DashboardScreen(c), "dashboard")
        self.install_screen(QueueScreen(c), "queue")
        self.install_screen(CallScreen(c), "calls")
        self.install_screen(SyncScreen(c), "sync")
        self.install_screen(LogScreen(c), "log")
        self.install_screen(NoticesScreen(c), "notices")
        self.push_screen("dashboard")
        self._bridge()
        self.poll()
        self.set_interval(self._poll_interval, self.poll)

    @work(exclusive=True, group="bridge")
    async def _bridge(self) -> None:
        await run_bridge(
            self.desk.api, self.post_message, retry_min=self._retry[0], retry_max=self._retry[1]
        )

    # -- node state ----------------------------------------------------------------------

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        """Status, peers, sync and calls every few seconds (events make it live between)."""
        c = self.desk
        try:
            c.status = await c.api.status()
            c.publish("status")  # the clock banner, this node's row
            c.peers = {p["node_id"]: p for p in await c.api.peers()}
            c.publish("peers")
            if not c.directory:
                c.directory = await c.api.directory()
            c.sync = {p["node_id"]: p for p in await self._optional(c.api.sync_state())}
            c.publish("sync")
            calls = await self._optional(c.api.call("calls", {}))
            c.calls = {call["call_id"]: call for call in calls}
            c.publish("calls")
            invites = await self._optional(c.api.request("invite_list", {}))
            c.citizens = {i["invite_id"]: i for i in invites}
            c.publish("citizens")
            await self._notices(c)
        except ConnectionLost as exc:
            self._lost(str(exc))
        except MeshdeskError as exc:
            self.notify(str(exc), severity="error", title=tr("Not done"), markup=False)

    async def _notices(self, c: Console) -> None:
        """Announcements and messages; a new severe announcement rings once."""
        before = {a.get("id") for a in c.announcements}
        try:
            await load_notices(c)
        except MeshdeskError as exc:
            if "unknown operation" not in str(exc) or isinstance(exc, ConnectionLost):
                raise
            return  # an older node: no notices
        if self._notices_seen and any(
            a.get("id") not in before and a.get("severity") == "severe" for a in c.announcements
        ):
            self.bell()
        self._notices_seen = True

    @work(exclusive=True, group="notices")
    async def _reload_notices(self) -> None:
        try:
            await self._notices(self.desk)
        except ConnectionLost as exc:
            self._lost(str(exc))
        except MeshdeskError as exc:
            self.notify(str(exc), severity="error", title=tr("Not done"), markup=False)

    async def _optional(self, request: Any) -> list[dict[str, Any]]:
        """A list the node may not offer yet (an older node: unknown operation)."""
        try:
            result = await request
        except ConnectionLost:
            raise
        except MeshdeskError as exc:
            if "unknown operation" in str(exc):
                return []
            raise
        return list(result or [])

    def _queue_cases(self, ids: set[str], everything: bool) -> None:
        self._pending |= ids
        self._reload_all = self._reload_all or everything or len(self._pending) > _RELOAD_ABOVE
        if not self._loading:
            self._loading = True
            self._load_cases()

    @work(group="cases")
    async def _load_cases(self) -> None:
        """Follow case changes: rows on screen are refreshed (a few changed) or the
        queue reloads its page (many), and the counts are read again."""
        c = self.desk
        try:
            while self._pending or self._reload_all:
                if self._reload_all:
                    self._pending.clear()
                    self._reload_all = False
                    c.changed_cases = None
                else:
                    ids, self._pending = self._pending, set()
                    shown = [i for i in sorted(ids) if c.window.get(i) is not None]
                    c.window.replace([await c.api.case("show", {"id": i}) for i in shown])
                    c.changed_cases = frozenset(ids)
                c.publish("cases")
                c.counts = await c.api.case("counts", {})
                c.publish("counts")
        except ConnectionLost as exc:
            self._reload_all = True
            self._lost(str(exc))
        except MeshdeskError as exc:
            self.notify(str(exc), severity="error", title=tr("Not done"), markup=False)
        finally:
            self._loading = False

    def _lost(self, reason: str) -> None:
        if self.desk.connected:
            self.desk.connected = False
            self.desk.log.append((self.desk.now_ms(), "ERROR", reason))
            self.desk.publish("connection")

    # -- bridge messages -------------------------------------------------------------------

    def on_node_lost(self, message: NodeLost) -> None:
        self.desk.connected = True  # so _lost records and publishes once
        self._lost(message.reason)

    def on_node_back(self, message: NodeBack) -> None:
        self.desk.connected = True
        self.desk.publish("connection")
        self.poll()
        self._queue_cases(set(), True)

    def on_peer_changed(self, message: PeerChanged) -> None:
        node_id = message.peer.get("node_id")
        if isinstance(node_id, str):
            self.desk.peers[node_id] = message.peer
            self.desk.publish("peers")

    def on_cases_changed(self, message: CasesChanged) -> None:
        self._queue_cases(message.case_ids, message.everything)

    def on_sync_progress(self, message: SyncProgress) -> None:
        self.desk.sync = {p["node_id"]: p for p in message.peers if "node_id" in p}
        self.desk.publish("sync")

    def on_call_changed(self, message: CallChanged) -> None:
        self.desk.calls[message.call["call_id"]] = message.call
        self.desk.publish("calls")

    def on_citizen_changed(self, message: CitizenChanged) -> None:
        invite = message.invite
        self.desk.citizens[invite["invite_id"]] = invite
        self.desk.publish("citizens")
        if message.change == "waiting":
            self.bell()
            self.notify(
                tr("Citizen waiting: code {code}. Calls screen (F3): y admits, n declines.").format(
                    code=invite.get("code")
                ),
                title=tr("Citizen waiting"),
                timeout=30,
                markup=False,
            )

    def on_bundle_progress(self, message: BundleProgress) -> None:
        """A large bundle's progress, a notice per tenth of each phase."""
        tenth = message.done * 10 // max(message.total, 1)
        if message.total < 1 or (message.doing, tenth) == self._bundle_shown:
            return
        self._bundle_shown = (message.doing, tenth)
        phase = {
            "reading": N_("reading"), "checking": N_("checking"), "storing": N_("storing"),
            "writing": N_("writing"),
        }.get(message.doing, message.doing)  # fmt: skip
        self.notify(
            tr("USB bundle: {phase} {percent}%").format(phase=tr(phase), percent=tenth * 10),
            title=tr("USB bundle"),
            timeout=3,
            markup=False,
        )

    def on_notices_changed(self, message: NoticesChanged) -> None:
        self._reload_notices()

    def on_log_line(self, message: LogLine) -> None:
        self.desk.log.append((message.ts_ms, message.level, message.text))
        self.desk.publish("log")

    # -- actions ---------------------------------------------------------------------------

    def action_show(self, name: str) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if self.screen is not self.get_screen(name):
            self.switch_screen(name)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.desk, self.help_rows()))

    def action_new_case(self) -> None:
        if not isinstance(self.screen, CaseFormScreen):
            self.push_screen(CaseFormScreen(self.desk, None))

    def open_case(self, case_id: str) -> None:
        self.push_screen(CaseFormScreen(self.desk, case_id))

    async def act(self, action: Any) -> Any:
        return await attempt(self, action)

    def help_rows(self) -> list[tuple[str, str, str]]:
        """(where, key, what) for every binding of the app and its screens."""
        rows: list[tuple[str, str, str]] = []
        owners: list[tuple[str, Iterable[BindingType]]] = [(tr("Everywhere"), self.BINDINGS)]
        for cls in (
            DashboardScreen, QueueScreen, CaseFormScreen, CallScreen, SyncScreen, NoticesScreen
        ):  # fmt: skip
            owners.append((tr(cls.TITLE), cls.__dict__.get("BINDINGS", [])))
        owners.append((tr("Conflict"), ConflictView.BINDINGS))
        owners.append((tr("Cases"), CaseTable.BINDINGS))
        for where, bindings in owners:
            for binding in Binding.make_bindings(bindings):
                if binding.description:
                    key = self.get_key_display(binding)
                    rows.append((where, key, tr(binding.description)))
        return rows

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for name, (_, title) in SCREENS_BY_KEY.items():
            yield SystemCommand(
                tr(title), tr("Show this screen"), lambda n=name: self.action_show(n)
            )
        yield SystemCommand(tr("New case"), tr("Open an empty case form"), self.action_new_case)
        yield SystemCommand(tr("Help"), tr("Every key binding"), self.action_help)
