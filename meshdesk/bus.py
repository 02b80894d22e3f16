"""The node's event stream: what changed, for the console, the CLI and drills.

Parts of the node :meth:`EventBus.publish` small JSON-safe facts ("peer linked",
"cases changed", "sync progress", "call stats", log lines); each subscriber gets
its own bounded queue. Publishing never blocks and never fails: a subscriber
that cannot keep up loses its *oldest* events and is told how many with one
``lagged`` event, so a stuck console can never slow the node down.

Kinds published by :class:`~meshdesk.node.Node`: ``peer``, ``case``, ``sync``,
``log`` and ``call`` (see docs/ARCHITECTURE.md for their data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_QUEUE", "BusLogHandler", "EventBus", "NodeEvent", "Subscription"]

#: Events a subscriber may fall behind by before the oldest are dropped.
DEFAULT_QUEUE = 1000


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One fact: its kind, JSON-safe data, and wall-clock milliseconds."""

    kind: str
    data: Mapping[str, object]
    ts_ms: int

    def to_json(self) -> dict[str, object]:
        return {"event": self.kind, "data": dict(self.data), "ts_ms": self.ts_ms}


@dataclass(eq=False)
class Subscription:
    """A subscriber's queue; iterate it with ``async for``."""

    kinds: frozenset[str] | None
    limit: int
    _queue: deque[NodeEvent] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _dropped: int = 0
    _closed: bool = False

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def put(self, event: NodeEvent) -> None:
        if self._closed:
            return
        if len(self._queue) >= self.limit:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        """End the iteration once the queued events are taken."""
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[NodeEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[NodeEvent]:
        while True:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                yield NodeEvent("lagged", {"dropped": dropped}, _now_ms())
            if self._queue:
                yield self._queue.popleft()
                continue
            if self._closed:
                return
            self._ready.clear()
            await self._ready.wait()


def _now_ms() -> int:
    return int(time.time() * 1000)


class EventBus:
    """Fan-out of node events to any number of bounded subscriptions."""

    def __init__(self, *, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._clock_ms = clock_ms
        self._subs: set[Subscription] = set()
        self.published = 0
        # Subscriptions belong to the loop the bus was made on; other threads (the
        # zeroconf engine logs from its own) hand their events over to that loop.
        self._thread = threading.get_ident()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: Mapping[str, object]) -> None:
        """Queue ``data`` for every subscriber that wants ``kind``; never blocks."""
        if threading.get_ident() != self._thread:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop is shutting down
                    self._loop.call_soon_threadsafe(self.publish, kind, data)
            return
        self.published += 1
        if not self._subs:
            return
        event = NodeEvent(kind, data, self._clock_ms())
        for sub in self._subs:
            if sub.wants(kind):
                sub.put(event)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, kinds: Collection[str] | None = None, *, limit: int = DEFAULT_QUEUE
    ) -> AsyncIterator[Subscription]:
        """A subscription for ``kinds`` (None: every kind), removed on exit."""
        sub = Subscription(None if kinds is None else frozenset(kinds), limit)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            sub.close()

    def close(self) -> None:
        """End every subscription (the node is stopping)."""
        for sub in list(self._subs):
            sub.close()
        self._subs.clear()


class BusLogHandler(logging.Handler):
    """Publishes log records (INFO and up by default) as ``log`` events."""

    def __init__(self, bus: EventBus, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._bus = bus

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string in someone's log call
            message = str(record.msg)
        self._bus.publish(
            "log", {"level": record.levelname, "logger": record.name, "message": message}
        )
