"""The frames meshdesk nodes exchange, and the typed encode/decode entry points.

Each frame is a frozen dataclass registered to a :class:`FrameKind`; its type hints
are its wire schema (see :mod:`meshdesk.wire._schema`). To add a frame: add a kind
in the right numbering block, define the class with ``@frame(kind)``, add it to
:data:`Frame`, and give it an example in the round-trip test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, TypeAlias, cast

from meshdesk._slots import slot_builder
from meshdesk.wire._codec import decode_envelope, encode_envelope, frame, registered
from meshdesk.wire._limits import DEFAULT_LIMITS, WireLimits
from meshdesk.wire._schema import MaxLen, Range

__all__ = [
    "AuthorHead",
    "BundleHeader",
    "BundleHeads",
    "BundleSeal",
    "CallAnswer",
    "CallDecline",
    "CallDegrade",
    "CallGuestReady",
    "CallGuestStandby",
    "CallHost",
    "CallLeave",
    "CallMember",
    "CallMute",
    "CallOffer",
    "CallRoster",
    "CallStanding",
    "Certificates",
    "CheckpointRef",
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
    "SyncCredit",
    "SyncDelta",
    "SyncEvents",
    "SyncHeads",
    "SyncReject",
    "SyncResync",
    "WireEvent",
    "decode",
    "encode",
    "frame_types",
    "wire_event",
]


class FrameKind(IntEnum):
    """Frame kind on the wire. Blocks: 1-19 link control, 20-39 sync, 40-59 calls,
    60-69 control, 70-79 USB bundle files. A number, once released, is never reused
    for another frame."""

    HELLO = 1
    PING = 2
    PONG = 3
    GOODBYE = 4
    PEER_EXCHANGE = 5
    ERROR = 6
    REVOCATIONS = 7
    CERTIFICATES = 8
    # 20-39: replication (meshdesk.sync)
    SYNC_HEADS = 20
    SYNC_DELTA = 21
    SYNC_CREDIT = 22
    SYNC_EVENTS = 23
    SYNC_REJECT = 24
    SYNC_RESYNC = 25
    # 40-59: calls (meshdesk.calls)
    CALL_OFFER = 40
    CALL_ANSWER = 41
    CALL_DECLINE = 42
    CALL_LEAVE = 43
    CALL_ROSTER = 44
    CALL_MUTE = 45
    CALL_DEGRADE = 46
    CALL_STANDING = 47
    CALL_HOST = 48
    CALL_GUEST_STANDBY = 49
    CALL_GUEST_READY = 50
    # 70-79: USB bundles (meshdesk.bundles): files, never sent on a link
    BUNDLE_HEADER = 70
    BUNDLE_SEAL = 71
    BUNDLE_HEADS = 72


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


# -- replication (meshdesk.sync; the protocol is described there) ------------------------

_Seq = Annotated[int, Range(0, 2**63 - 1)]
_Int64 = Annotated[int, Range(-(2**63), 2**63 - 1)]
_Hash = Annotated[bytes, MaxLen(32)]
_Round = Annotated[int, Range(0, 0xFFFF_FFFF)]
#: Largest event body: one event still fits a 1 MiB frame with room to spare.
_BODY_MAX = 960 * 1024


@dataclass(frozen=True, slots=True)
class AuthorHead:
    """The sender stores ``author``'s chain up to ``seq``, whose event hash is ``hash``."""

    author: _NodeId
    seq: _Seq
    hash: _Hash


@frame(FrameKind.SYNC_HEADS)
@dataclass(frozen=True, slots=True)
class SyncHeads:
    """Part ``part`` of ``parts`` of the sender's heads, opening its receive ``round``.

    Every author the sender stores is listed (relays included), split over as many
    parts as it takes; the peer starts streaming to a round once it holds every part.
    """

    round: _Round
    part: _U16
    parts: _U16
    heads: Annotated[tuple[AuthorHead, ...], MaxLen(4096)]


@frame(FrameKind.SYNC_DELTA)
@dataclass(frozen=True, slots=True)
class SyncDelta:
    """Heads that moved since the sender's last :class:`SyncHeads` (new local data)."""

    heads: Annotated[tuple[AuthorHead, ...], MaxLen(4096)]


@frame(FrameKind.SYNC_CREDIT)
@dataclass(frozen=True, slots=True)
class SyncCredit:
    """Flow control for the stream into the sender's ``round``.

    The peer may have at most ``window`` events sent but not yet ``settled``
    (counted from the start of the round).
    """

    round: _Round
    settled: _Seq
    window: Annotated[int, Range(1, 2**31 - 1)]


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One event of the author named by its frame; the receiver computes its hash."""

    seq: _Seq
    hlc: _Int64
    case_id: Annotated[str, MaxLen(128)] | None
    kind: _Int64
    body: Annotated[bytes, MaxLen(_BODY_MAX)]
    prev_hash: _Hash
    #: The sealed blobs the body names by SHA-256, kept beside the chain (not hashed):
    #: a sender that erased the case sends none, a receiver that did stores none.
    payloads: Annotated[tuple[Annotated[bytes, MaxLen(64 * 1024)], ...], MaxLen(4)] = ()


#: ``WireEvent(seq, hlc, case_id, kind, body, prev_hash, payloads)``, every field
#: given, in half the time (a sender makes one per event it sends).
wire_event: Callable[[int, int, str | None, int, bytes, bytes, tuple[bytes, ...]], WireEvent] = (
    slot_builder(WireEvent)
)


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """The author's signature over its chain head at ``seq`` (author named by the frame)."""

    seq: _Seq
    hash: _Hash
    sig: Annotated[bytes, MaxLen(128)]


@frame(FrameKind.SYNC_EVENTS)
@dataclass(frozen=True, slots=True)
class SyncEvents:
    """Contiguous events of one author, at stream position ``offset`` of ``round``.

    ``checkpoints`` are the author's checkpoints among these events; the receiver
    stores a run only up to a checkpoint and holds the rest until the next one.
    """

    round: _Round
    offset: _Seq
    author: _NodeId
    events: Annotated[tuple[WireEvent, ...], MaxLen(4096)]
    checkpoints: Annotated[tuple[CheckpointRef, ...], MaxLen(4096)]


@frame(FrameKind.SYNC_REJECT)
@dataclass(frozen=True, slots=True)
class SyncReject:
    """The sender refused ``author``'s run ending at ``seq`` and takes no more of it."""

    author: _NodeId
    seq: _Seq
    reason: Annotated[str, MaxLen(256)]


@frame(FrameKind.SYNC_RESYNC)
@dataclass(frozen=True, slots=True)
class SyncResync:
    """The sender's stream into the peer's ``round`` (0: none yet) is stuck after
    ``sent`` events: the peer opens a new round if some went missing, else it
    announces its round (heads and credit) again."""

    round: _Round
    sent: _Seq


# -- calls (meshdesk.calls; signalling rides on the authenticated link) ---------------

#: A call id is a UUIDv7 (36 characters); the limit leaves room, the manager checks it.
_CallId = Annotated[str, MaxLen(64)]
#: An SDP with audio, video and a handful of host candidates is 2-6 KiB.
_Sdp = Annotated[str, MaxLen(32 * 1024)]
_Reason = Annotated[str, MaxLen(256)]
#: Most members a call roster may name (the mesh holds 4; a relayed group more).
CALL_MEMBERS_MAX = 16


@frame(FrameKind.CALL_OFFER)
@dataclass(frozen=True, slots=True)
class CallOffer:
    """An SDP offer for one leg of call ``call_id``; the sender is the link's peer.

    ``join`` is false for an invitation (the receiver's operator or config decides)
    and true when a newcomer opens its legs to the members already in the call.
    The DTLS fingerprint inside ``sdp`` is trusted because the link is.
    """

    call_id: _CallId
    case_id: Annotated[str, MaxLen(64)] | None
    audio_only: bool
    host: _NodeId
    members: Annotated[tuple[_NodeId, ...], MaxLen(CALL_MEMBERS_MAX)]
    join: bool
    sdp: _Sdp


@frame(FrameKind.CALL_ANSWER)
@dataclass(frozen=True, slots=True)
class CallAnswer:
    """The SDP answer to the sender's peer's :class:`CallOffer` for ``call_id``."""

    call_id: _CallId
    sdp: _Sdp


@frame(FrameKind.CALL_DECLINE)
@dataclass(frozen=True, slots=True)
class CallDecline:
    """The sender will not take the offered leg (declined, busy, bad offer)."""

    call_id: _CallId
    reason: _Reason


@frame(FrameKind.CALL_LEAVE)
@dataclass(frozen=True, slots=True)
class CallLeave:
    """The sender left call ``call_id``; its leg with the receiver is over."""

    call_id: _CallId
    reason: _Reason


@dataclass(frozen=True, slots=True)
class CallMember:
    """One member of a call as the sender sees it (state: invited, connected, left...)."""

    node_id: _NodeId
    state: Annotated[str, MaxLen(16)]


@frame(FrameKind.CALL_ROSTER)
@dataclass(frozen=True, slots=True)
class CallRoster:
    """Who is in call ``call_id`` according to the sender (sent when it changes)."""

    call_id: _CallId
    host: _NodeId
    members: Annotated[tuple[CallMember, ...], MaxLen(CALL_MEMBERS_MAX)]


@frame(FrameKind.CALL_MUTE)
@dataclass(frozen=True, slots=True)
class CallMute:
    """The sender muted or unmuted its audio and video in call ``call_id``."""

    call_id: _CallId
    audio: bool
    video: bool


@frame(FrameKind.CALL_DEGRADE)
@dataclass(frozen=True, slots=True)
class CallDegrade:
    """The sender fell back to audio only in ``call_id`` (loss or RTT too high)."""

    call_id: _CallId
    reason: _Reason


@frame(FrameKind.CALL_STANDING)
@dataclass(frozen=True, slots=True)
class CallStanding:
    """A member of a relayed call tells its host how fit it is to take over: CPU
    headroom, its worst link round trip to the other members, its media loss."""

    call_id: _CallId
    cpu_free_pct: Annotated[int, Range(0, 100)]
    rtt_ms: Annotated[int, Range(0, 600_000)]
    loss_pct: Annotated[int, Range(0, 100)]


@frame(FrameKind.CALL_HOST)
@dataclass(frozen=True, slots=True)
class CallHost:
    """Who hosts call ``call_id`` from host generation ``epoch`` on, whether it is a
    star through it (``relayed``) or a full mesh, and who takes over next, in order.

    The host sends it when the order or the shape changes (same epoch); a new host
    (a handover: the host left, vanished or degraded) with the next epoch.
    """

    call_id: _CallId
    host: _NodeId
    epoch: Annotated[int, Range(0, 2**31)]
    relayed: bool
    successors: Annotated[tuple[_NodeId, ...], MaxLen(CALL_MEMBERS_MAX)]
    reason: _Reason


@frame(FrameKind.CALL_GUEST_STANDBY)
@dataclass(frozen=True, slots=True)
class CallGuestStandby:
    """The host of a call with a citizen's phone asks its first successor to keep an
    invitation ready for that phone (``token``, new, secret: the link is encrypted),
    in case the host leaves or vanishes. ``remote`` is the phone's address (the
    successor's page URL names the address that reaches it)."""

    call_id: _CallId
    guest_id: Annotated[str, MaxLen(64)]
    code: Annotated[str, MaxLen(8)]
    token: Annotated[str, MaxLen(64)]
    case_id: Annotated[str, MaxLen(64)] | None
    remote: Annotated[str, MaxLen(64)]


@frame(FrameKind.CALL_GUEST_READY)
@dataclass(frozen=True, slots=True)
class CallGuestReady:
    """The successor keeps the invitation ready at ``url`` (the host tells the phone)."""

    call_id: _CallId
    guest_id: Annotated[str, MaxLen(64)]
    url: Annotated[str, MaxLen(512)]


# -- USB bundle files (meshdesk.bundles; never sent on a link) ----------------------------


@frame(FrameKind.BUNDLE_HEADER)
@dataclass(frozen=True, slots=True)
class BundleHeader:
    """First frame of a bundle file: whose it is and what it holds. Untrusted until
    the file's :class:`BundleSeal` verifies with the creator's certificate."""

    version: _U16
    deployment: _NodeId
    creator: _NodeId
    creator_name: Annotated[str, MaxLen(128)]
    created_ms: _Millis
    runs: _Millis
    events: _Millis
    authors: _Millis
    certificates: _Millis


@frame(FrameKind.BUNDLE_HEADS)
@dataclass(frozen=True, slots=True)
class BundleHeads:
    """What the bundle's creator held when it wrote the bundle (every author's head,
    4096 per frame): a node that imports it later writes bundles for the creator
    without what it already has (``bundle export --for``)."""

    heads: Annotated[tuple[AuthorHead, ...], MaxLen(4096)]


@frame(FrameKind.BUNDLE_SEAL)
@dataclass(frozen=True, slots=True)
class BundleSeal:
    """Last frame of a bundle file: the creator's Ed25519 signature over the SHA-256
    of every byte before this frame's length prefix."""

    sig: Annotated[bytes, MaxLen(128)]


#: Every frame class; ``match`` on it and mypy checks that all kinds are handled.
Frame: TypeAlias = (
    Hello
    | Ping
    | Pong
    | Goodbye
    | PeerExchange
    | ErrorFrame
    | Revocations
    | Certificates
    | SyncHeads
    | SyncDelta
    | SyncCredit
    | SyncEvents
    | SyncReject
    | SyncResync
    | CallOffer
    | CallAnswer
    | CallDecline
    | CallLeave
    | CallRoster
    | CallMute
    | CallDegrade
    | CallStanding
    | CallHost
    | CallGuestStandby
    | CallGuestReady
    | BundleHeader
    | BundleHeads
    | BundleSeal
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
