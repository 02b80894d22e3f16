"""The one bridge from the node's event stream to Textual messages.

:func:`run_bridge` subscribes, turns each :class:`~meshdesk.tui.api.Event` into a
message (see :mod:`meshdesk.tui.messages`) and posts it; when the stream ends or
cannot be opened it posts :class:`NodeLost` once and retries with backoff, then
:class:`NodeBack` when the stream is up again. It returns only when cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from textual.message import Message

from meshdesk.errors import MeshdeskError
from meshdesk.tui.api import ConnectionLost, Event, NodeApi
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

__all__ = ["run_bridge", "to_message"]

log = logging.getLogger(__name__)


def to_message(event: Event) -> Message | None:
    """The message for one node event; None for kinds the console does not show."""
    data = event.data
    match event.kind:
        case "peer":
            peer = data.get("peer")
            if isinstance(peer, dict):
                return PeerChanged(str(data.get("change", "")), peer)
        case "case":
            ids = data.get("case_ids")
            if isinstance(ids, list):
                return CasesChanged({str(i) for i in ids})
        case "sync":
            peers = data.get("peers")
            if isinstance(peers, list):
                return SyncProgress([p for p in peers if isinstance(p, dict)])
        case "log":
            text = f"{data.get('logger', '')}: {data.get('message', '')}"
            return LogLine(event.ts_ms, str(data.get("level", "INFO")), text)
        case "call":
            if isinstance(data.get("call_id"), str):
                return CallChanged(dict(data))
        case "citizen":
            invite = data.get("invite")
            if isinstance(invite, dict) and isinstance(invite.get("invite_id"), str):
                return CitizenChanged(str(data.get("change", "")), dict(invite))
        case "notice":
            return NoticesChanged()
        case "bundle":
            doing, done, total = data.get("doing"), data.get("done"), data.get("total")
            if isinstance(doing, str) and isinstance(done, int) and isinstance(total, int):
                return BundleProgress(doing, done, total)
        case "lagged":
            # We missed events: reload the cases; the periodic refresh covers the rest.
            return CasesChanged(set(), everything=True)
    return None


async def run_bridge(
    api: NodeApi,
    post: Callable[[Message], object],
    *,
    retry_min: float = 0.25,
    retry_max: float = 3.0,
) -> None:
    delay = retry_min
    lost: str | None = None
    first = True
    while True:
        try:
            async with api.events() as stream:
                if lost is not None or first:
                    post(NodeBack())
                lost, first, delay = None, False, retry_min
                async for event in stream:
                    message = to_message(event)
                    if message is not None:
                        post(message)
            reason = f"the node in {api.where} closed its event stream"
        except ConnectionLost as exc:
            reason = str(exc)
        except MeshdeskError as exc:
            # The node answers but refuses to stream (an older node): no live events,
            # the console's periodic refresh still works. Not a lost node.
            log.warning("no live events from the node: %s", exc)
            if lost is not None or first:
                post(NodeBack())
            post(LogLine(0, "WARNING", f"no live events: {exc}"))
            lost, first = None, False
            await asyncio.sleep(retry_max * 10)
            continue
        if lost is None:
            post(NodeLost(reason))
            lost = reason
        first = False
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)
