"""The link seam of calls: what call signalling needs of a link to one peer.

Calls send signalling frames over the node's links and learn who sent a frame from
the link it came on. They need no more of a link than this Protocol:
:class:`meshdesk.net.link.Link` satisfies it, and tests pass a small fake.
"""

from __future__ import annotations

from typing import Protocol

from meshdesk.wire import Frame

__all__ = ["CallLink"]


class CallLink(Protocol):
    """A link to one authenticated peer, as calls use it."""

    @property
    def peer_id(self) -> str:
        """The peer's node id, from its verified certificate: the sender of every frame."""
        ...

    @property
    def remote(self) -> str:
        """The peer's address as text (``host:port``): where media should go out."""
        ...

    async def send(self, frame: Frame) -> None:
        """Send one frame to the peer.

        Raises:
            ChannelClosed: the link is closed or broke while sending.
        """
        ...
