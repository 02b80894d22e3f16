"""One live link to a peer: hello exchange, heartbeats, flood limits, frame dispatch.

A :class:`Link` owns a :class:`~meshdesk.net.channel.Channel` whose peer identity
was verified when it opened. The link adds what TCP cannot promise: it notices a
dead peer within ``dead_after`` seconds (a pulled cable sends no FIN), it cuts off
a peer that floods, and it hands every other frame to the layer above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshdesk.config import Timings
from meshdesk.errors import ChannelClosed, LinkError, WireError
from meshdesk.net.channel import Channel
from meshdesk.net.liveness import ClockOffset, Heartbeat, TokenBucket
from meshdesk.wire import ErrorFrame, Frame, Goodbye, Hello, Ping, Pong

__all__ = ["ERR_QUARANTINED", "ERR_TWIN", "PROTOCOL_VERSION", "FloodLimits", "Link"]

log = logging.getLogger(__name__)

#: Version of the link protocol spoken in :class:`~meshdesk.wire.Hello`.
PROTOCOL_VERSION = 1

FrameHandler = Callable[["Link", Frame], Awaitable[None]]

#: Error codes sent in an ErrorFrame before hanging up.
ERR_PROTOCOL = 1
ERR_FLOOD = 2
#: The peer's identity is already in use by another running node (a copied home).
ERR_TWIN = 3
#: The peer sent malformed or forged frames and is shut out for a while.
ERR_QUARANTINED = 4


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """How many frames per second a peer may send before it is cut off."""

    rate: float = 2000.0
    burst: float = 4000.0


class Link:
    """A verified channel plus liveness; ``run()`` until it ends, then it is closed."""

    def __init__(
        self,
        channel: Channel,
        *,
        hello: Hello,
        outbound: bool,
        timings: Timings,
        on_frame: FrameHandler,
        flood: FloodLimits = FloodLimits(),
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.channel = channel
        self.outbound = outbound
        self._hello = hello
        self._timings = timings
        self._on_frame = on_frame
        self._clock = clock
        self._wall_ms = wall_ms
        self._offset = ClockOffset()
        now = clock()
        self._heartbeat = Heartbeat(
            interval=timings.heartbeat_interval, dead_after=timings.dead_after, last_rx=now
        )
        self._bucket = TokenBucket.full(flood.rate, flood.burst, now)
        self.peer_hello: Hello | None = None
        #: ``(code, message)`` of the ErrorFrame the peer ended the link with, if any.
        self.peer_error: tuple[int, str] | None = None
        #: What the peer did wrong if the link ended for it (a malformed frame,
        #: flooding, a protocol violation), else None.
        self.misbehaved: str | None = None
        self.close_reason: str | None = None
        self._closing = False
        self._dead = False

    @property
    def peer_id(self) -> str:
        return str(self.channel.peer.node_id)

    @property
    def remote(self) -> str:
        """The peer's address as text, for logs and for choosing a local address."""
        return self.channel.remote

    @property
    def rtt(self) -> float | None:
        return self._heartbeat.rtt

    @property
    def clock_offset_ms(self) -> int | None:
        """The peer's wall clock minus ours (from its pings), None before the first."""
        return self._offset.ms

    def __repr__(self) -> str:
        way = "out" if self.outbound else "in"
        return f"<Link {way} {self.channel.peer.name} {self.channel.remote}>"

    async def handshake(self) -> Hello:
        """Exchange hellos; the peer's hello must name the node its certificate names.

        Raises:
            LinkError: timeout, wrong first frame, mismatched node id, other protocol.
            ChannelClosed: the peer hung up.
        """
        timeout = self._timings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                await self.channel.send(self._hello)
                first = await self.channel.recv()
        except TimeoutError as exc:
            await self.close("no hello in time")
            raise LinkError(f"{self.channel.remote}: no hello within {timeout:g} s") from exc
        except WireError:
            await self.close("malformed hello")
            raise
        except asyncio.CancelledError:
            # Shutting down mid-hello: nobody else holds this channel yet.
            await self.channel.abort()
            raise
        if not isinstance(first, Hello):
            await self.refuse(ERR_PROTOCOL, f"expected Hello, got {type(first).__name__}")
            raise LinkError(f"{self.channel.remote}: first frame was {type(first).__name__}")
        if first.node_id != str(self.channel.peer.node_id):
            await self.refuse(ERR_PROTOCOL, "hello names another node than the certificate")
            raise LinkError(
                f"{self.channel.remote}: hello claims {first.node_id} but the certificate "
                f"is {self.channel.peer.node_id}"
            )
        if first.proto != PROTOCOL_VERSION:
            await self.refuse(ERR_PROTOCOL, f"protocol {first.proto} not supported")
            raise LinkError(f"{self.channel.remote}: speaks protocol {first.proto}")
        self.peer_hello = first
        self._heartbeat.received(self._clock())
        return first

    async def send(self, frame: Frame) -> None:
        await self.channel.send(frame)

    async def answers(self, within: float) -> bool:
        """Whether the peer is alive: a ping is sent and any frame must come back
        within ``within`` seconds. Used to tell a restarted peer (its old link is
        dead) from two running copies of one node (both answer)."""
        asked = self._clock()
        deadline = asked + within
        with contextlib.suppress(ChannelClosed):
            await self.channel.send(Ping(nonce=0, sent_ms=self._wall_ms()))
        while self._clock() < deadline:
            if self.channel.closed or self._closing:
                return False
            if self._heartbeat.last_rx > asked:
                return True
            await asyncio.sleep(0.02)
        return False

    async def run(self) -> str:
        """Serve the link until it ends; returns why it ended. Closes the channel.

        Deliberately not a TaskGroup: on Python 3.11 a TaskGroup whose child fails
        leaves its parent task marked as cancelled, and a later timeout in the
        closing path then turns into a CancelledError that kills the caller before
        it can record that the link is down.
        """
        receive = asyncio.create_task(self._receive(), name=f"{self!r} receive")
        tick = asyncio.create_task(self._tick(), name=f"{self!r} tick")
        try:
            done, _ = await asyncio.wait({receive, tick}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self._note_end(task)
        finally:
            for task in (receive, tick):
                task.cancel()
            await asyncio.gather(receive, tick, return_exceptions=True)
            if self._dead:
                # Nothing will answer a goodbye or a TLS close: drop it at once.
                self._closing = True
                await self.channel.abort()
            else:
                await self.close(self.close_reason or "closed")
        return self.close_reason or "closed"

    def _note_end(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.close_reason is not None:
            return
        exc = task.exception()
        if isinstance(exc, WireError):
            self.close_reason = f"malformed frame: {exc}"
        elif isinstance(exc, ChannelClosed):
            self.close_reason = str(exc) or "peer hung up"
        elif isinstance(exc, LinkError):
            self.close_reason = str(exc)
        elif exc is not None:
            log.error("%s failed unexpectedly", self, exc_info=exc)
            self.close_reason = f"internal error: {type(exc).__name__}: {exc}"
        else:
            self.close_reason = "closed"

    async def close(self, reason: str) -> None:
        """Say goodbye (best effort, bounded) and close; idempotent."""
        if self._closing:
            return
        self._closing = True
        self.close_reason = self.close_reason or reason
        if not self.channel.closed:
            with contextlib.suppress(ChannelClosed, TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.channel.send(Goodbye(reason=reason[:256]))
        await self.channel.aclose()

    async def refuse(self, code: int, message: str) -> None:
        """Tell the peer why (an ErrorFrame with ``code``), then close."""
        with contextlib.suppress(ChannelClosed, TimeoutError):
            async with asyncio.timeout(0.5):
                await self.channel.send(ErrorFrame(code=code, message=message[:1024]))
        await self.close(message)

    async def _receive(self) -> None:
        while True:
            try:
                frame = await self.channel.recv()
            except WireError as exc:
                self.misbehaved = f"malformed frame: {exc}"
                raise
            now = self._clock()
            self._heartbeat.received(now)
            if not self._bucket.take(now):
                log.warning("%s floods (over %g frames/s): cutting it off", self, self._bucket.rate)
                self.misbehaved = f"flooding: more than {self._bucket.rate:g} frames/s"
                await self.refuse(ERR_FLOOD, self.misbehaved)
                raise LinkError(f"{self.channel.remote} flooded the link")
            match frame:
                case Ping(nonce=nonce, sent_ms=sent_ms):
                    self._offset.sample(sent_ms, self._wall_ms())
                    await self.channel.send(Pong(nonce=nonce, echo_ms=sent_ms))
                case Pong(nonce=nonce):
                    self._heartbeat.pong(nonce, now)
                case Goodbye(reason=reason):
                    self.close_reason = f"peer said goodbye: {reason}"
                    raise ChannelClosed(self.close_reason)
                case ErrorFrame(code=code, message=message):
                    self.peer_error = (code, message)
                    self.close_reason = f"peer reported error {code}: {message}"
                    raise ChannelClosed(self.close_reason)
                case Hello():
                    self.misbehaved = "a second hello"
                    await self.refuse(ERR_PROTOCOL, "a second hello")
                    raise LinkError(f"{self.channel.remote} sent a second hello")
                case _:
                    await self._on_frame(self, frame)

    async def _tick(self) -> None:
        while True:
            now = self._clock()
            if self._heartbeat.dead(now):
                silent = now - self._heartbeat.last_rx
                self._dead = True
                self.close_reason = f"no frame for {silent:.1f} s (dead link)"
                raise LinkError(self.close_reason)
            nonce = self._heartbeat.ping_due(now)
            if nonce is not None:
                # A dead peer may stop draining our writes: never wait past the
                # moment the link would be declared dead anyway.
                left = self._heartbeat.last_rx + self._heartbeat.dead_after - now
                try:
                    async with asyncio.timeout(max(left, 0.05)):
                        await self.channel.send(Ping(nonce=nonce, sent_ms=self._wall_ms()))
                except TimeoutError:
                    continue  # the dead check at the top of the loop decides
            await asyncio.sleep(self._heartbeat.next_wakeup(self._clock()) + 0.001)
