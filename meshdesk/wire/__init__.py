"""The meshdesk wire codec: frames as versioned msgpack envelopes.

``encode``/``decode`` turn one frame into one envelope and back; ``pack_frame`` and
``FrameDecoder`` add the 4-byte length prefix used on byte streams. Every malformed,
oversized or unknown input raises :class:`meshdesk.errors.WireError`, and nothing else.
"""

from __future__ import annotations

from meshdesk.wire._codec import WIRE_VERSION
from meshdesk.wire._limits import DEFAULT_LIMITS, WireLimits
from meshdesk.wire._schema import MaxLen, Range
from meshdesk.wire.frames import (
    AuthorHead,
    CallAnswer,
    CallDecline,
    CallDegrade,
    CallLeave,
    CallMember,
    CallMute,
    CallOffer,
    CallRoster,
    Certificates,
    CheckpointRef,
    ErrorFrame,
    Frame,
    FrameKind,
    Goodbye,
    Hello,
    PeerAddr,
    PeerExchange,
    Ping,
    Pong,
    Revocations,
    SyncCredit,
    SyncDelta,
    SyncEvents,
    SyncHeads,
    SyncReject,
    SyncResync,
    WireEvent,
    decode,
    encode,
    frame_types,
)
from meshdesk.wire.stream import FrameDecoder, pack_frame

__all__ = [
    "DEFAULT_LIMITS",
    "WIRE_VERSION",
    "AuthorHead",
    "CallAnswer",
    "CallDecline",
    "CallDegrade",
    "CallLeave",
    "CallMember",
    "CallMute",
    "CallOffer",
    "CallRoster",
    "Certificates",
    "CheckpointRef",
    "ErrorFrame",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "Goodbye",
    "Hello",
    "MaxLen",
    "PeerAddr",
    "PeerExchange",
    "Ping",
    "Pong",
    "Range",
    "Revocations",
    "SyncCredit",
    "SyncDelta",
    "SyncEvents",
    "SyncHeads",
    "SyncReject",
    "SyncResync",
    "WireEvent",
    "WireLimits",
    "decode",
    "encode",
    "frame_types",
    "pack_frame",
]
