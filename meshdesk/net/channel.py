"""The transport seam: a :class:`Channel` carries frames to one authenticated peer.

Everything above the transport (links, sync, call signalling) talks to a
``Channel`` and never to a socket. Two implementations exist: the TLS stream
(:mod:`meshdesk.net.tls`), reliable and ordered, and the in-memory pair
(:mod:`meshdesk.net.memory`) whose knobs can lose, delay, duplicate and reorder
frames, for tests and for the drill simulator. Protocols above must therefore
tolerate loss and duplicates (they resume from what the peer reports having).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from meshdesk.identity import NodeInfo
from meshdesk.wire import Frame

__all__ = ["Channel", "PeerAddress"]


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a peer can be dialled, and how we learned it."""

    host: str
    port: int
    #: ``mdns``, ``static``, ``exchange`` or ``inbound``.
    source: str

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Channel(Protocol):
    """A frame pipe to one peer whose identity was verified when it opened."""

    @property
    def peer(self) -> NodeInfo:
        """The verified identity of the node at the other end."""
        ...

    @property
    def remote(self) -> str:
        """The other end's address as text, for logs (``host:port`` or a label)."""
        ...

    @property
    def closed(self) -> bool: ...

    async def send(self, frame: Frame) -> None:
        """Send one frame; waits while the peer is slow (backpressure).

        Raises:
            ChannelClosed: the channel is closed or broke while sending.
        """
        ...

    async def recv(self) -> Frame:
        """Wait for the next frame.

        Raises:
            ChannelClosed: the peer hung up, or the channel was closed here.
            WireError: the peer sent a malformed or oversized frame; the channel
                is closed before this is raised.
        """
        ...

    async def aclose(self) -> None:
        """Close the channel; idempotent. A pending ``recv`` raises ChannelClosed."""
        ...

    async def abort(self) -> None:
        """Drop the channel at once, without waiting for the peer; idempotent.

        For a peer judged dead: a graceful close would wait for an answer that
        will never come.
        """
        ...
