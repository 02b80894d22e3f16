"""Networking: channels, TLS links, discovery and the link manager."""

from __future__ import annotations

from meshdesk.net.channel import Channel, PeerAddress
from meshdesk.net.discovery import Discovery, Sighting, StaticDiscovery, ZeroconfDiscovery
from meshdesk.net.interfaces import Interface, select_interfaces
from meshdesk.net.link import PROTOCOL_VERSION, FloodLimits, Link
from meshdesk.net.memory import ChannelKnobs, MemoryChannel, MemoryPair, memory_pair
from meshdesk.net.mesh import LinkManager, PeerEvent
from meshdesk.net.peers import PeerRecord, PeerState
from meshdesk.net.tls import TlsChannel, TlsListener, client_context, connect, serve, server_context
from meshdesk.net.trust import TrustPolicy, fingerprint

__all__ = [
    "PROTOCOL_VERSION",
    "Channel",
    "ChannelKnobs",
    "Discovery",
    "FloodLimits",
    "Interface",
    "Link",
    "LinkManager",
    "MemoryChannel",
    "MemoryPair",
    "PeerAddress",
    "PeerEvent",
    "PeerRecord",
    "PeerState",
    "Sighting",
    "StaticDiscovery",
    "TlsChannel",
    "TlsListener",
    "TrustPolicy",
    "ZeroconfDiscovery",
    "client_context",
    "connect",
    "fingerprint",
    "memory_pair",
    "select_interfaces",
    "serve",
    "server_context",
]
