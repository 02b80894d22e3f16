"""Networking: channels, TLS links, discovery and the link manager."""

from __future__ import annotations

from meshdesk.net.channel import Channel, PeerAddress

__all__ = ["Channel", "PeerAddress"]
