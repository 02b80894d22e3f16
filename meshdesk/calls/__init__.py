"""Direct WebRTC calls between nodes: signalling over links, media peer to peer.

See :mod:`meshdesk.calls.manager` for how a call flows.
"""

from __future__ import annotations

from meshdesk.calls.link import CallLink
from meshdesk.calls.manager import MESH_MAX, CallManager, Guest, is_call_frame, is_guest
from meshdesk.calls.media import open_media, parse_media
from meshdesk.calls.policy import QualityPolicy, Sample

__all__ = [
    "MESH_MAX",
    "CallLink",
    "CallManager",
    "Guest",
    "QualityPolicy",
    "Sample",
    "is_call_frame",
    "is_guest",
    "open_media",
    "parse_media",
]
