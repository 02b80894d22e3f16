"""Call: participants, mute, hang up, invite a department or a citizen's phone, live
stats, video preview, and the citizens waiting to be admitted."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, OptionList, Static
from textual.widgets.option_list import Option

from meshdesk.errors import MeshdeskError
from meshdesk.tui.console import attempt, plain, plain_row
from meshdesk.tui.i18n import N_, tr
from meshdesk.tui.screens._base import ConsoleScreen
from meshdesk.tui.screens.citizen import invite_citizen, waiting_citizens
from meshdesk.tui.widgets import VideoPreview
from meshdesk.tui.widgets.preview import decode_frame

__all__ = ["CallScreen", "PickScreen", "sound_text", "stats_text"]

log = logging.getLogger("meshdesk.tui")

_STATE = {
    "ringing": N_("ringing"),
    "connecting": N_("connecting"),
    "active": N_("active"),
    "ended": N_("ended"),
    "invited": N_("invited"),
    "connected": N_("connected"),
    "left": N_("left"),
    "dropped": N_("dropped"),
}


def _state(value: object) -> str:
    return tr(_STATE[str(value)]) if str(value) in _STATE else str(value)


def stats_text(call: dict[str, Any]) -> str:
    s = call.get("stats") or {}
    return tr(
        "RTT {rtt} ms · loss {loss} % · {kbps} kbit/s · video {fs}/{fr} fps · setup {setup} ms"
    ).format(
        rtt=s.get("rtt_ms", "-"),
        loss=s.get("loss_pct", "-"),
        kbps=s.get("bitrate_kbps", "-"),
        fs=s.get("fps_sent", "-"),
        fr=s.get("fps_received", "-"),
        setup=s.get("setup_ms", "-"),
    )


def sound_text(call: dict[str, Any]) -> str:
    """Whether echo cancelling is on (with a microphone), and what fell short."""
    lines = []
    sound = call.get("sound")
    if isinstance(sound, dict):
        if sound.get("echo_cancel"):
            lines.append(tr("Echo cancelling: on"))
        else:
            lines.append(
                tr("Echo cancelling: off ({why}). Use a headset: the speaker is heard by the "
                   "microphone.").format(why=sound.get("note", "-"))
            )  # fmt: skip
    if call.get("notice"):
        lines.append(tr("Note: {notice}").format(notice=call["notice"]))
    return "\n".join(lines)


class PickScreen(ModalScreen[str | None]):
    """Pick one option (a peer, a department); Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", N_("Cancel"))]

    def __init__(self, title: str, options: list[tuple[str, str]]) -> None:
        super().__init__()
        self._title = title
        self._options = options

    def compose(self) -> ComposeResult:
        with Vertical(id="pick"):
            yield Label(plain(self._title), classes="panel-title")
            yield OptionList(*(Option(plain(text), id=value) for text, value in self._options))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class CallScreen(ConsoleScreen):
    TITLE = N_("Calls")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "start", N_("Call a peer")),
        Binding("a", "answer", N_("Answer")),
        Binding("m", "mute('audio')", N_("Mute")),
        Binding("v", "mute('video')", N_("Video off")),
        Binding("i", "invite", N_("Invite department")),
        Binding("h", "hangup", N_("Hang up")),
        Binding("q", "invite_citizen", N_("Invite citizen (QR)")),
        Binding("y", "admit", N_("Admit citizen")),
        Binding("n", "decline", N_("Decline citizen")),
    ]

    def body(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="panel"):
                yield Static(id="call-title", classes="panel-title")
                yield DataTable(id="participants", cursor_type="none")
                yield Static(id="stats")
                yield Static(id="sound")
                yield Static(id="citizens", classes="citizens")
            yield VideoPreview(id="preview")

    def on_mount(self) -> None:
        self.query_one("#participants", DataTable).add_columns(
            tr("Name"), tr("Site"), tr("State"), tr("Audio"), tr("Video")
        )
        super().on_mount()
        self.set_interval(1.0, self._preview)

    @property
    def current(self) -> dict[str, Any] | None:
        """The live call, else the latest one."""
        calls = sorted(self.desk.calls.values(), key=lambda c: int(c.get("started_ms", 0)))
        live = [c for c in calls if c.get("state") != "ended"]
        pool = live or calls
        return pool[-1] if pool else None

    def update_view(self, part: str | None) -> None:
        if part not in (None, "calls", "citizens"):
            return
        waiting = waiting_citizens(self.desk)
        self.query_one("#citizens", Static).update(
            plain(
                tr("Citizen waiting: code {codes} (y admits, n declines)").format(
                    codes=", ".join(str(i.get("code")) for i in waiting)
                )
                if waiting
                else ""
            )
        )
        call = self.current
        table = self.query_one("#participants", DataTable)
        table.clear()
        self.query_one("#sound", Static).update(plain(sound_text(call)) if call else "")
        if call is None:
            self.query_one("#call-title", Static).update(tr("No call. Press c to call a peer."))
            self.query_one("#stats", Static).update("")
            self.query_one(VideoPreview).show(None)
            return
        kind = tr("audio only") if call.get("audio_only") else tr("video")
        degraded = tr(" (degraded to audio)") if call.get("degraded") else ""
        self.query_one("#call-title", Static).update(
            plain(f"{call['call_id']} · {_state(call.get('state'))} · {kind}{degraded}")
        )
        for p in call.get("participants", []):
            table.add_row(
                *plain_row(
                    p.get("name"),
                    p.get("site"),
                    _state(p.get("state")),
                    tr("muted") if p.get("muted_audio") else tr("on"),
                    tr("off") if p.get("muted_video") else tr("on"),
                )
            )
        self.query_one("#stats", Static).update(plain(stats_text(call)))
        if call.get("state") == "ended":
            self.query_one(VideoPreview).show(None)

    @work(exclusive=True, group="preview")
    async def _preview(self) -> None:
        call = self.current
        if not self.is_current or call is None or call.get("state") != "active":
            return
        if call.get("audio_only"):
            return
        try:
            frame = await self.desk.api.call("call_preview", {"call_id": call["call_id"]})
        except MeshdeskError as exc:  # best-effort: the bridge reports a lost node
            log.debug("no preview: %s", exc)
            return
        self.query_one(VideoPreview).show(decode_frame(frame))

    def _live(self) -> dict[str, Any] | None:
        call = self.current
        if call is None or call.get("state") == "ended":
            self.notify(tr("There is no call in progress."), severity="warning", markup=False)
            return None
        return call

    def _apply(self, call: dict[str, Any] | None) -> None:
        if call is not None:
            self.desk.calls[call["call_id"]] = call
            self.update_view("calls")

    def action_start(self) -> None:
        peers = [
            (f"{p['name']} @ {p['site']}", p["node_id"])
            for p in self.desk.peers.values()
            if p.get("state") == "linked"
        ]
        if not peers:
            self.notify(tr("No linked peer to call."), severity="warning", markup=False)
            return
        self.app.push_screen(PickScreen(tr("Call whom?"), peers), self._picked_peer)

    def _picked_peer(self, peer: str | None) -> None:
        self._start(peer)

    def _picked_department(self, department: str | None) -> None:
        self._invite(department)

    @work(exclusive=True, group="call-action")
    async def _start(self, peer: str | None) -> None:
        if peer is not None:
            # The node's own [calls] media: camera and microphone on a real desk.
            args = {"peer": peer, "case": None, "audio_only": False}
            self._apply(await attempt(self, self.desk.api.call("call_start", args)))

    @work(exclusive=True, group="call-action")
    async def action_answer(self) -> None:
        call = self._live()
        if call is not None:
            args = {"call_id": call["call_id"], "accept": True}
            self._apply(await attempt(self, self.desk.api.call("call_answer", args)))

    @work(exclusive=True, group="call-action")
    async def action_mute(self, what: str) -> None:
        call = self._live()
        if call is None:
            return
        me: dict[str, Any] = next(iter(call.get("participants", [])), {})
        muted = not me.get(f"muted_{what}", False)
        args = {"call_id": call["call_id"], "audio": None, "video": None, what: muted}
        self._apply(await attempt(self, self.desk.api.call("call_mute", args)))

    def action_invite(self) -> None:
        if self._live() is None:
            return
        options = [(d, d) for d in self.desk.departments() if self.desk.nodes_of(d)]
        if not options:
            self.notify(tr("No department to invite."), severity="warning", markup=False)
            return
        self.app.push_screen(
            PickScreen(tr("Invite which department?"), options), self._picked_department
        )

    @work(exclusive=True, group="call-action")
    async def _invite(self, department: str | None) -> None:
        call = self._live()
        if department is None or call is None:
            return
        node = self.desk.nodes_of(department)[0]
        args = {"call_id": call["call_id"], "peer": node["node_id"]}
        self._apply(await attempt(self, self.desk.api.call("call_invite", args)))

    @work(exclusive=True, group="call-action")
    async def action_invite_citizen(self) -> None:
        call = self.current
        live = call is not None and call.get("state") != "ended"
        call_id = call["call_id"] if live and call is not None else None
        case_id = call.get("case_id") if live and call is not None else None
        await invite_citizen(self, self.desk, case_id=case_id, call_id=call_id)

    def _answer_citizen(self, op: str) -> None:
        waiting = waiting_citizens(self.desk)
        if not waiting:
            self.notify(tr("No citizen is waiting."), severity="warning", markup=False)
        elif len(waiting) == 1:
            self._citizen(op, str(waiting[0]["code"]))
        else:
            options = [(tr("code {code}").format(code=i["code"]), str(i["code"])) for i in waiting]

            def picked(code: str | None) -> None:
                self._citizen(op, code)

            self.app.push_screen(PickScreen(tr("Which citizen?"), options), picked)

    def action_admit(self) -> None:
        self._answer_citizen("invite_admit")

    def action_decline(self) -> None:
        self._answer_citizen("invite_decline")

    @work(group="citizen-action")
    async def _citizen(self, op: str, code: str | None) -> None:
        if code is None:
            return
        invite = await attempt(self, self.desk.api.request(op, {"code": code}))
        if isinstance(invite, dict):
            self.desk.citizens[str(invite["invite_id"])] = invite
            self.update_view("citizens")

    @work(exclusive=True, group="call-action")
    async def action_hangup(self) -> None:
        call = self._live()
        if call is not None:
            args = {"call_id": call["call_id"]}
            self._apply(await attempt(self, self.desk.api.call("call_hangup", args)))
