"""The one seam between the console and a node: :class:`NodeApi`.

The console never touches a :class:`~meshdesk.node.Node` directly. It talks to
something with this shape: the control-socket client (:mod:`meshdesk.tui.client`)
for a real node, or :class:`~meshdesk.tui.fake.FakeNode` in tests. Results are the
JSON shapes of the control socket; operations are named as in the registry
(:data:`meshdesk.ops.OPS`), which checks their arguments for the node and the fake
alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from meshdesk.bus import NodeEvent
from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.ops import OPS

__all__ = ["ConnectionLost", "Event", "NodeApi", "call_op", "case_op"]


class ConnectionLost(MeshdeskError):
    """The console cannot reach the node (it stopped, or its socket went away)."""


def case_op(op: str) -> str:
    """The registry name of case operation ``op`` (``new`` → ``case_new``)."""
    return f"case_{op}"


def call_op(op: str) -> str:
    """``op`` if it is a call operation of the registry.

    Raises:
        UsageError: it is not.
    """
    if op not in OPS or OPS.spec(op).topic != "call":
        raise UsageError(f"unknown call operation {op!r} (known: {', '.join(OPS.names('call'))})")
    return op


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

    async def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Run any operation of :data:`meshdesk.ops.OPS` by name (not ``subscribe``)."""
        ...

    async def case(self, op: str, args: Mapping[str, Any]) -> Any:
        """Run case operation ``case_<op>`` (``new``, ``list``, ``show``, ``note``…)."""
        ...

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        """Run a call operation (``call_start``, ``calls``…: the registry's call topic)."""
        ...

    def events(
        self, kinds: Collection[str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Subscribe to the node's events; the iterator ends when the node goes away."""
        ...
