"""An in-memory channel pair whose knobs lose, duplicate, reorder and delay frames.

For tests and for the drill simulator, which builds large meshes out of these pairs.
Every frame goes through :func:`~meshdesk.wire.encode` and
:func:`~meshdesk.wire.decode`, so the codec and its limits are exercised and the two
sides never share a frame object.

Each direction is a FIFO of encoded frames stamped with a delivery time
(``send time + latency + U(0, jitter)``, never earlier than the frame before it, so
delay alone never reorders; only ``reorder`` does). A receiver takes a frame once its
time has come. No tasks run behind the pair: delays are waited out by ``recv``,
so there is nothing to leak or cancel, and a pair works on any event loop clock.

Semantics, in the terms of a TCP link:

* ``queue_limit`` frames may be in flight per direction (sent, not yet received);
  ``send`` waits for room (backpressure).
* ``aclose()`` is a FIN: the peer receives what was in flight, then ``recv`` raises
  :class:`~meshdesk.errors.ChannelClosed`. Frames still queued *to* the closed side
  are discarded, and the peer's later sends are dropped until it sees the FIN.
* :meth:`MemoryPair.cut` pulls the cable: frames not yet delivered and every frame
  sent until :meth:`MemoryPair.restore` are lost, without any FIN. A close during a
  cut reaches the peer once the cable is back (like a reset on the next contact).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from meshdesk._lifecycle import AsyncResource
from meshdesk.errors import ChannelClosed, WireError
from meshdesk.identity import NodeInfo
from meshdesk.wire import DEFAULT_LIMITS, Frame, WireLimits, decode, encode

__all__ = ["ChannelKnobs", "MemoryChannel", "MemoryPair", "memory_pair"]


@dataclass(frozen=True, slots=True)
class ChannelKnobs:
    """Faults applied to every frame, in each direction independently.

    Attributes:
        loss: Probability that a frame is dropped.
        duplicate: Probability that a frame is delivered twice.
        reorder: Probability that a frame is held back and delivered right after the
            next frame sent the same way (or before the FIN, if none follows).
        latency: Seconds from ``send`` until the frame can be received.
        jitter: Up to this many seconds added to ``latency``, drawn per frame.
        queue_limit: Frames in flight per direction before ``send`` waits.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    latency: float = 0.0
    jitter: float = 0.0
    queue_limit: int = 256

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ChannelKnobs.{name} must be a probability, got {value!r}")
        for name in ("latency", "jitter"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"ChannelKnobs.{name} must be >= 0 seconds, got {value!r}")
        if isinstance(self.queue_limit, bool) or self.queue_limit < 1:
            raise ValueError(f"ChannelKnobs.queue_limit must be >= 1, got {self.queue_limit!r}")

    @property
    def needs_rng(self) -> bool:
        """Whether these knobs draw random numbers."""
        return bool(self.loss or self.duplicate or self.reorder or self.jitter)


def _now() -> float:
    return asyncio.get_running_loop().time()


class _Pipe:
    """One direction: encoded frames in flight, each with its delivery time.

    ``None`` in the queue is the sender's FIN.
    """

    __slots__ = ("changed", "fin_pending", "fin_sent", "held", "last_due", "queue", "reader_gone")

    def __init__(self) -> None:
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.held: list[bytes] = []  # held back by ``reorder``; counts as in flight
        self.last_due = -math.inf
        self.fin_sent = False
        self.fin_pending = False  # closed during a cut; sent on restore
        self.reader_gone = False
        # Set on every change; a waiter clears it, re-checks state, then waits.
        # No await between check and clear, so no wake-up is lost.
        self.changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self.queue) + len(self.held)

    def push(self, data: bytes | None, due: float) -> None:
        self.last_due = due = max(due, self.last_due)
        self.queue.append((due, data))
        self.changed.set()

    def send_fin(self, due: float) -> None:
        for data in self.held:
            self.push(data, due)
        self.held.clear()
        self.push(None, due)
        self.fin_sent, self.fin_pending = True, False

    def drop_undelivered(self, now: float | None) -> None:
        """The cable is pulled: lose what has not reached the other end yet."""
        while self.queue and (now is None or self.queue[-1][0] > now):
            _, data = self.queue.pop()
            if data is None:  # the FIN was lost too: send it again on restore
                self.fin_sent, self.fin_pending = False, True
        self.held.clear()
        self.changed.set()

    async def wait(self, until: float | None = None) -> None:
        """Wait for a change, or until the loop time ``until`` at the latest."""
        self.changed.clear()
        if until is None:
            await self.changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(until):
                await self.changed.wait()


class _Link:
    """State the two ends share: knobs, randomness, the cable."""

    __slots__ = ("cut", "knobs", "limits", "pipes", "rng")

    def __init__(self, knobs: ChannelKnobs, rng: random.Random | None, limits: WireLimits) -> None:
        self.knobs = knobs
        self.rng = rng
        self.limits = limits
        self.cut = False
        self.pipes = (_Pipe(), _Pipe())  # a -> b, b -> a

    def transmit(self, pipe: _Pipe, data: bytes) -> None:
        if self.cut or pipe.reader_gone:
            return
        knobs, rng = self.knobs, self.rng
        if rng is None:
            copies, delay, hold = 1, knobs.latency, False
        else:
            # Draws happen in a fixed order, only for knobs that are on: the same
            # seed and the same sends give the same deliveries.
            if knobs.loss and rng.random() < knobs.loss:
                return
            copies = 2 if knobs.duplicate and rng.random() < knobs.duplicate else 1
            delay = knobs.latency + (rng.uniform(0.0, knobs.jitter) if knobs.jitter else 0.0)
            hold = not pipe.held and bool(knobs.reorder) and rng.random() < knobs.reorder
        if hold:
            pipe.held.extend([data] * copies)
            return
        due = _now() + delay
        for _ in range(copies):
            pipe.push(data, due)
        for held in pipe.held:
            pipe.push(held, due)
        pipe.held.clear()


class MemoryChannel(AsyncResource):
    """One end of a :func:`memory_pair`; implements :class:`~meshdesk.net.Channel`."""

    __slots__ = ("_closed", "_in", "_label", "_link", "_out", "_peer")

    def __init__(
        self, link: _Link, peer: NodeInfo, out: _Pipe, inbound: _Pipe, label: str | None = None
    ) -> None:
        self._link = link
        self._peer = peer
        self._out = out
        self._in = inbound
        self._closed = False
        self._label = label or f"memory:{peer.node_id.short}"

    @property
    def peer(self) -> NodeInfo:
        return self._peer

    @property
    def remote(self) -> str:
        return self._label

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frame: Frame) -> None:
        """Send ``frame`` (subject to the knobs); waits while the queue is full.

        Raises:
            ChannelClosed: this end is closed, or was closed while waiting.
            WireError: ``frame`` breaks the wire limits (the channel stays open).
        """
        if self._closed:
            raise ChannelClosed(f"channel to {self._label} is closed")
        data = encode(frame, self._link.limits)
        out, link = self._out, self._link
        while out.in_flight >= link.knobs.queue_limit and not (link.cut or out.reader_gone):
            await out.wait()
            if self._closed:
                raise ChannelClosed(f"channel to {self._label} was closed while sending")
        link.transmit(out, data)

    def send_bytes(self, data: bytes) -> None:
        """Put raw bytes on the wire as one frame, whatever they are: how tests play
        a hostile peer that sends malformed frames."""
        self._link.transmit(self._out, data)

    async def recv(self) -> Frame:
        """Wait for the next frame whose delivery time has come.

        Raises:
            ChannelClosed: the peer closed (after its frames in flight were
                received), or this end was closed.
            WireError: a frame does not decode; this end is closed first.
        """
        inbound = self._in
        while True:
            if self._closed:
                raise ChannelClosed(f"channel to {self._label} is closed")
            if not inbound.queue:
                await inbound.wait()
                continue
            due, data = inbound.queue[0]
            if due > _now():
                await inbound.wait(until=due)
                continue
            inbound.queue.popleft()
            inbound.changed.set()  # room for the sender
            if data is None:
                self._close()
                raise ChannelClosed(f"{self._label} closed the channel")
            try:
                return decode(data, self._link.limits)
            except WireError:
                self._close()
                raise

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        inbound, out = self._in, self._out
        # Nothing more will be read here: drop what is queued and what comes.
        inbound.reader_gone = True
        inbound.queue.clear()
        inbound.held.clear()
        inbound.changed.set()
        if not out.reader_gone and not out.fin_sent:
            if self._link.cut:
                out.fin_pending = True
            else:
                out.send_fin(_now() + self._link.knobs.latency)
        out.changed.set()

    async def aclose(self) -> None:
        """Close this end (a FIN to the peer); idempotent."""
        self._close()

    async def abort(self) -> None:
        """Same as :meth:`aclose`: a memory channel never waits for its peer."""
        self._close()

    async def __aenter__(self) -> MemoryChannel:
        return self


class MemoryPair(NamedTuple):
    """The two ends of an in-memory link, plus the cable between them.

    Unpacks like a tuple: ``a_end, b_end = memory_pair(a, b)``.
    """

    #: ``a``'s end (its peer is ``b``).
    first: MemoryChannel
    #: ``b``'s end (its peer is ``a``).
    second: MemoryChannel

    @property
    def is_cut(self) -> bool:
        return self.first._link.cut

    def cut(self) -> None:
        """Pull the cable: undelivered frames and all frames sent until
        :meth:`restore` are lost; neither end is told."""
        link = self.first._link
        link.cut = True
        try:
            now: float | None = _now()
        except RuntimeError:  # no loop running: nothing can have been delivered
            now = None
        for pipe in link.pipes:
            pipe.drop_undelivered(now)

    def restore(self) -> None:
        """Plug the cable back in; a close that happened meanwhile now reaches the peer."""
        link = self.first._link
        if not link.cut:
            return
        link.cut = False
        for pipe in link.pipes:
            if pipe.fin_pending and not pipe.reader_gone:
                pipe.send_fin(_now() + link.knobs.latency)

    async def aclose(self) -> None:
        """Close both ends."""
        await self.first.aclose()
        await self.second.aclose()


def memory_pair(
    a: NodeInfo,
    b: NodeInfo,
    *,
    knobs: ChannelKnobs = ChannelKnobs(),
    rng: random.Random | None = None,
    limits: WireLimits = DEFAULT_LIMITS,
    remotes: tuple[str, str] | None = None,
) -> MemoryPair:
    """Two connected channels: ``first`` is ``a``'s view (peer ``b``), ``second`` ``b``'s.

    Args:
        remotes: What each end reports as ``remote`` (``host:port`` of the other
            side as it would appear on a network), for simulated meshes whose
            addresses are gossiped; default labels name the peer.
        knobs: Faults and delays, applied to both directions.
        rng: The only source of randomness (seed it: drills must replay exactly);
            required when a knob is random (loss, duplicate, reorder, jitter).
        limits: Wire limits for encoding and decoding.

    Raises:
        ValueError: random knobs without an ``rng``.
    """
    if knobs.needs_rng and rng is None:
        raise ValueError("loss, duplicate, reorder and jitter need a seeded random.Random")
    link = _Link(knobs, rng if knobs.needs_rng else None, limits)
    a_to_b, b_to_a = link.pipes
    return MemoryPair(
        MemoryChannel(link, b, out=a_to_b, inbound=b_to_a, label=remotes and remotes[0]),
        MemoryChannel(link, a, out=b_to_a, inbound=a_to_b, label=remotes and remotes[1]),
    )
