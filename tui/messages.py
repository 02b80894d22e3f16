"""Textual messages the bridge worker posts for node events.

High-rate kinds coalesce through :meth:`Message.can_replace`: a pending sync
update is superseded by a newer one, a call's stats by the same call's next
update, and pending case changes merge their ids into the newer message.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

__all__ = [
    "BundleProgress",
    "CallChanged",
    "CasesChanged",
    "CitizenChanged",
    "LogLine",
    "NodeBack",
    "NodeLost",
    "NoticesChanged",
    "PeerChanged",
    "SyncProgress",
]


class NodeLost(Message):
    """The node cannot be reached; the bridge keeps retrying."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class NodeBack(Message):
    """The event stream is up again (after a loss, or for the first time)."""


class PeerChanged(Message):
    def __init__(self, change: str, peer: dict[str, Any]) -> None:
        super().__init__()
        self.change = change
        self.peer = peer


class CasesChanged(Message):
    """Cases changed on the node; ``case_ids`` empty means "reload everything"."""

    def __init__(self, case_ids: set[str], *, everything: bool = False) -> None:
        super().__init__()
        self.case_ids = case_ids
        self.everything = everything

    def can_replace(self, message: Message) -> bool:
        # Called on the older message with the newer pending one: merge and let it win.
        if isinstance(message, CasesChanged):
            message.case_ids |= self.case_ids
            message.everything = message.everything or self.everything
            return True
        return False


class SyncProgress(Message):
    def __init__(self, peers: list[dict[str, Any]]) -> None:
        super().__init__()
        self.peers = peers

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SyncProgress)


class CallChanged(Message):
    def __init__(self, call: dict[str, Any]) -> None:
        super().__init__()
        self.call = call

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, CallChanged)
            and message.call.get("call_id") == self.call.get("call_id")
            and self.call.get("state") == message.call.get("state")
        )


class CitizenChanged(Message):
    """An invitation changed: a citizen waits (``change`` "waiting"), was admitted, …"""

    def __init__(self, change: str, invite: dict[str, Any]) -> None:
        super().__init__()
        self.change = change
        self.invite = invite


class BundleProgress(Message):
    """A USB bundle the node exports or imports moved on (``doing``: reading,
    checking, storing, writing; ``done`` of ``total`` bytes or events)."""

    def __init__(self, doing: str, done: int, total: int) -> None:
        super().__init__()
        self.doing = doing
        self.done = done
        self.total = total


class NoticesChanged(Message):
    """An announcement, message or receipt arrived or was written (a ``notice`` event)."""


class LogLine(Message):
    def __init__(self, ts_ms: int, level: str, text: str) -> None:
        super().__init__()
        self.ts_ms = ts_ms
        self.level = level
        self.text = text
