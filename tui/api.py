"""The one seam between the console and a node: :class:`NodeApi`.

The console never touches a :class:`~meshdesk.node.Node` directly. It talks to
something with this shape: the control-socket client (:mod:`meshdesk.tui.client`)
for a real node, or :class:`~meshdesk.tui.fake.FakeNode` in tests. Results are the
JSON shapes of the control socket (see docs/ARCHITECTURE.md and the case ops).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from meshdesk.bus import NodeEvent
from meshdesk.errors import MeshdeskError

__all__ = ["CALL_OPS", "ConnectionLost", "Event", "NodeApi"]

#: Control operations of calls (the calls branch implements them on the node).
CALL_OPS = frozenset(
    {
        "call_start",
        "call_answer",
        "call_invite",
        "call_hangup",
        "call_mute",
        "calls",
        "call_preview",
    }
)


class ConnectionLost(MeshdeskError):
    """The console cannot reach the node (it stopped, or its socket went away)."""


#: One event from the node's bus: ``peer``, ``case``, ``sync``, ``log``, ``call``, ``lagged``.
Event = NodeEvent


@runtime_checkable
class NodeApi(Protocol):
    """What the console needs from a node. Every method may raise a MeshdeskError;
    :class:`ConnectionLost` means the node is unreachable (the console shows a banner
    and retries)."""

    @property
    def where(self) -> str:
        """A short description of the node's location, for titles and banners."""
        ...

    async def status(self) -> dict[str, Any]: ...

    async def peers(self) -> list[dict[str, Any]]: ...

    async def sync_state(self) -> list[dict[str, Any]]: ...

    async def directory(self) -> list[dict[str, Any]]: ...

    async def case(self, op: str, args: Mapping[str, Any]) -> Any:
        """Run a case operation (``new``, ``list``, ``show``, ``note``, ``refer``…)."""
        ...

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        """Run a call operation (one of :data:`CALL_OPS`)."""
        ...

    def events(
        self, kinds: Collection[str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Subscribe to the node's events; the iterator ends when the node goes away."""
        ...
