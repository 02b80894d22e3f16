"""The frames meshdesk nodes exchange, and the typed encode/decode entry points.

Each frame is a frozen dataclass registered to a :class:`FrameKind`; its type hints
are its wire schema (see :mod:`meshdesk.wire._schema`). To add a frame: add a kind
in the right numbering block, define the class with ``@frame(kind)``, add it to
:data:`Frame`, and give it an example in the round-trip test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, TypeAlias, cast

from meshdesk.wire._codec import decode_envelope, encode_envelope, frame, registered
from meshdesk.wire._limits import DEFAULT_LIMITS, WireLimits
from meshdesk.wire._schema import MaxLen, Range

__all__ = [
    "Certificates",
    "ErrorFrame",
    "Frame",
    "FrameKind",
    "Goodbye",
    "Hello",
    "PeerAddr",
    "PeerExchange",
    "Ping",
    "Pong",
    "Revocations",
    "decode",
    "encode",
    "frame_types",
]


class FrameKind(IntEnum):
    """Frame kind on the wire. Blocks: 1-19 link control, 20-39 sync, 40-59 calls,
    60+ control. A number, once released, is never reused for another frame."""

    HELLO = 1
    PING = 2
    PONG = 3
    GOODBYE = 4
    PEER_EXCHANGE = 5
    ERROR = 6
    REVOCATIONS = 7
    CERTIFICATES = 8


_NodeId = Annotated[str, MaxLen(64)]
_U16 = Annotated[int, Range(0, 0xFFFF)]
_Nonce = Annotated[int, Range(0, 2**63 - 1)]
_Millis = Annotated[int, Range(0)]


@frame(FrameKind.HELLO)
@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on a new link: who is speaking, where it can be reached, what it can do."""

    proto: int
    node_id: _NodeId
    name: Annotated[str, MaxLen(128)]
    site: Annotated[str, MaxLen(128)]
    role: Annotated[str, MaxLen(16)]
    listen_port: _U16
    features: Annotated[tuple[Annotated[str, MaxLen(32)], ...], MaxLen(32)]
    #: Random per process start: a hello with a new instance means the peer restarted,
    #: so any link still held from its previous run is stale and gives way.
    instance: _Nonce = 0


@frame(FrameKind.PING)
@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness probe; the peer answers with a :class:`Pong` echoing both values."""

    nonce: _Nonce
    sent_ms: _Millis


@frame(FrameKind.PONG)
@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a :class:`Ping`; same bounds, since it only echoes the ping's values."""

    nonce: _Nonce
    echo_ms: _Millis


@frame(FrameKind.GOODBYE)
@dataclass(frozen=True, slots=True)
class Goodbye:
    """Orderly close of a link, with a human-readable reason for the peer's log."""

    reason: Annotated[str, MaxLen(256)]


@dataclass(frozen=True, slots=True)
class PeerAddr:
    """Where a known peer can be reached, and how we learned of it (``via``)."""

    node_id: _NodeId
    host: Annotated[str, MaxLen(255)]
    port: _U16
    via: Annotated[str, MaxLen(16)]


@frame(FrameKind.PEER_EXCHANGE)
@dataclass(frozen=True, slots=True)
class PeerExchange:
    """Peers the sender knows, so a mesh grows past what discovery alone can see."""

    peers: Annotated[tuple[PeerAddr, ...], MaxLen(256)]


@frame(FrameKind.ERROR)
@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """The sender refuses something the peer did; ``code`` is for machines."""

    code: _U16
    message: Annotated[str, MaxLen(1024)]


@frame(FrameKind.REVOCATIONS)
@dataclass(frozen=True, slots=True)
class Revocations:
    """The deployment's CA-signed revocation list (X.509 CRL, DER), gossiped on links.

    Receivers verify it against the CA and keep it only if ``number`` is higher
    than what they have; nothing in it is trusted before that check.
    """

    number: _Nonce
    crl: Annotated[bytes, MaxLen(256 * 1024)]


@frame(FrameKind.CERTIFICATES)
@dataclass(frozen=True, slots=True)
class Certificates:
    """Node certificates (DER) the sender knows: the deployment's directory, gossiped.

    Each is verified against the deployment CA before it is kept; they tell a node
    the signing key of every author and the sealing key of every audience member.
    """

    certs: Annotated[tuple[Annotated[bytes, MaxLen(8192)], ...], MaxLen(256)]


#: Every frame class; ``match`` on it and mypy checks that all kinds are handled.
Frame: TypeAlias = (
    Hello | Ping | Pong | Goodbye | PeerExchange | ErrorFrame | Revocations | Certificates
)


def frame_types() -> Mapping[FrameKind, type[Frame]]:
    """Every registered frame class by kind (read-only)."""
    return cast("Mapping[FrameKind, type[Frame]]", registered())


def encode(frame: Frame, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """Encode ``frame`` as one msgpack envelope (no length prefix).

    Raises:
        WireError: A field breaks its declared bounds or ``limits``.
    """
    return encode_envelope(frame, limits)


def decode(data: bytes, limits: WireLimits = DEFAULT_LIMITS) -> Frame:
    """Decode exactly one envelope; trailing bytes are an error.

    Raises:
        WireError: For any malformed, oversized, unknown or out-of-bounds input.
    """
    return cast("Frame", decode_envelope(data, limits))
