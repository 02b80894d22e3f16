"""What every screen shares: the node (:class:`NodeApi`), who is at the desk, and
the console's picture of the node, kept up to date by the app."""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.text import Text
from textual.app import App
from textual.binding import BindingsMap
from textual.dom import DOMNode
from textual.signal import Signal
from textual.widget import Widget

from meshdesk.errors import MeshdeskError
from meshdesk.tui.api import NodeApi
from meshdesk.tui.i18n import Lang, tr
from meshdesk.tui.index import CaseWindow

__all__ = [
    "LOG_LINES",
    "Console",
    "ago",
    "attempt",
    "clock_warning",
    "notice_banner",
    "notice_title",
    "plain",
    "plain_row",
    "span",
    "translate_bindings",
]

LOG_LINES = 500
_T = TypeVar("_T")
log = logging.getLogger("meshdesk.tui")


@dataclass
class Console:
    api: NodeApi
    lang: Lang
    operator: str
    now_ms: Callable[[], int]
    #: The queue's rows: a window of the node's case list (see tui/index.py).
    window: CaseWindow = field(default_factory=CaseWindow)
    #: ``case_counts``: cases by urgency and status, and the total.
    counts: dict[str, Any] = field(default_factory=dict)
    #: Cases the last ``cases`` change was about (None: maybe any).
    changed_cases: frozenset[str] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sync: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Invitations for citizens' phones by id (see meshdesk.web), from invite_list.
    citizens: dict[str, dict[str, Any]] = field(default_factory=dict)
    directory: list[dict[str, Any]] = field(default_factory=list)
    #: Announcements this node shows, newest first (``announce_list``), and messages
    #: to and from it (``message_list``); see meshdesk.notices.
    announcements: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    log: deque[tuple[int, str, str]] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    connected: bool = False
    #: Published with the part that changed: peers, cases, counts, sync, calls, citizens,
    #: notices, log, status, connection.
    changed: Signal[str] | None = None

    def publish(self, part: str) -> None:
        if self.changed is not None:
            self.changed.publish(part)

    def departments(self) -> list[str]:
        """Every department some node of the deployment serves (from the directory)."""
        return sorted({d for info in self.directory for d in info.get("departments", [])})

    def nodes_of(self, department: str) -> list[dict[str, Any]]:
        me = self.status.get("node_id")
        return [
            info
            for info in self.directory
            if department in info.get("departments", []) and info.get("node_id") != me
        ]


def plain(value: object) -> Text:
    """Text shown as it is: names and notes come from people and peers, never markup."""
    return Text("-" if value is None else str(value))


def plain_row(*values: object) -> list[Text]:
    return [plain(v) for v in values]


def ago(now_ms: int, then_ms: object) -> str:
    """ "12 s ago" style, translated; "-" when never."""
    if not isinstance(then_ms, int):
        return "-"
    seconds = max(0, (now_ms - then_ms) // 1000)
    if seconds < 60:
        return tr("{n} s ago").format(n=seconds)
    if seconds < 3600:
        return tr("{n} min ago").format(n=seconds // 60)
    return tr("{n} h ago").format(n=seconds // 3600)


def span(ms: int) -> str:
    """A length of time people read at a glance, translated: "400 d 3 h", "5 min"."""
    seconds = abs(ms) // 1000
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    if days:
        parts = [tr("{n} d").format(n=days)] + ([tr("{n} h").format(n=hours)] if hours else [])
    elif hours:
        parts = [tr("{n} h").format(n=hours)]
    else:
        parts = [tr("{n} min").format(n=max(1, seconds // 60))]
    return " ".join(parts)


def clock_warning(status: Mapping[str, Any]) -> str | None:
    """The warning for this node's clock, from ``status["clock"]`` (see meshdesk.clock)."""
    clock = status.get("clock")
    if not isinstance(clock, dict) or not clock.get("warning"):
        return None
    skew, reference = clock.get("skew_ms"), str(clock.get("reference") or "")
    if not isinstance(skew, int) or not reference:
        return tr("⚠ This node's clock differs from its peer's: check the date and time")
    text = (
        tr("⚠ This node's clock is {amount} ahead of {reference}'s: set the date and time")
        if skew > 0
        else tr("⚠ This node's clock is {amount} behind {reference}'s: set the date and time")
    )
    return text.format(amount=span(skew), reference=reference)


def notice_title(console: Console, a: dict[str, Any]) -> str:
    """The announcement's title in the console's language, else the other one."""
    first, second = ("title_ja", "title_en") if console.lang == "ja" else ("title_en", "title_ja")
    return str(a.get(first) or a.get(second) or "")


def notice_banner(console: Console) -> str | None:
    """The banner for severe announcements from elsewhere that nobody here read."""
    me = console.status.get("node_id")
    open_ = [
        a
        for a in console.announcements
        if a.get("severity") == "severe"
        and not a.get("acknowledged")
        and not a.get("expired")
        and a.get("from_node") != me
    ]
    if not open_:
        return None
    text = tr("⚠ Announcement from {sender}: {title} (F7, a to acknowledge)").format(
        sender=open_[0].get("from"), title=notice_title(console, open_[0])
    )
    if len(open_) > 1:
        text += tr(" and {n} more").format(n=len(open_) - 1)
    return text


def translate_bindings(node: DOMNode) -> None:
    """Replace ``node``'s binding descriptions by their translations (BINDINGS hold msgids)."""
    keys = {
        key: [
            dataclasses.replace(b, description=tr(b.description)) if b.description else b
            for b in bindings
        ]
        for key, bindings in node._bindings.key_to_bindings.items()
    }
    node._bindings = BindingsMap.from_keys(keys)


async def attempt(widget: Widget | App[Any], action: Awaitable[_T]) -> _T | None:
    """Await a user action; a MeshdeskError becomes an error notification, not a crash."""
    try:
        return await action
    except MeshdeskError as exc:
        log.info("action failed: %s", exc)
        widget.notify(str(exc), severity="error", title=tr("Not done"), timeout=8, markup=False)
        return None
