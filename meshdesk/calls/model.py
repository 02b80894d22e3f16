"""A call as the node keeps it, and the call object the control socket reports.

The JSON shape is the contract with the console (docs/ARCHITECTURE.md, "Calls")::

    {"call_id", "case_id", "direction", "state", "audio_only", "degraded",
     "started_ms", "ended_ms", "reason", "host", "participants": [...], "stats": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from meshdesk.calls.hosting import HostFitness, Standing
from meshdesk.calls.media import LocalMedia
from meshdesk.calls.peer import Leg
from meshdesk.calls.policy import QualityPolicy

__all__ = ["LIVE", "Call", "CallState", "PartState", "Participant", "empty_stats"]


class CallState(StrEnum):
    RINGING = "ringing"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDED = "ended"


class PartState(StrEnum):
    INVITED = "invited"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LEFT = "left"
    DROPPED = "dropped"


#: Participant states that keep a call going.
LIVE = frozenset({PartState.INVITED, PartState.CONNECTING, PartState.CONNECTED})


def empty_stats() -> dict[str, float | int | None]:
    return {
        "rtt_ms": None,
        "loss_pct": 0.0,
        "bitrate_kbps": 0.0,
        "fps_sent": 0.0,
        "fps_received": 0.0,
        "video_frames_sent": 0,
        "video_frames_received": 0,
        "audio_frames_received": 0,
        "setup_ms": None,
        "audio_sources": 0,
        "video_sources": 0,
        "handover_gap_ms": None,
    }


@dataclass
class Participant:
    """One other node in a call, with this node's leg to it (if any)."""

    node_id: str
    name: str
    site: str
    state: PartState = PartState.INVITED
    muted_audio: bool = False
    muted_video: bool = False
    leg: Leg | None = None
    policy: QualityPolicy = field(default_factory=QualityPolicy)
    joined_ms: int | None = None
    #: Counters at the previous stats tick, for per-second rates.
    last: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "site": self.site,
            "state": str(self.state),
            "muted_audio": self.muted_audio,
            "muted_video": self.muted_video,
        }


@dataclass
class Call:
    """One call this node takes part in (or took part in, once ended)."""

    call_id: str
    case_id: str | None
    direction: str
    audio_only: bool
    host: str
    me: Participant
    media_spec: str
    started_ms: int
    #: Monotonic time of the dial (caller) or the accept (callee): setup counts from it.
    dialled_at: float
    state: CallState = CallState.RINGING
    degraded: bool = False
    #: A star through ``host`` (more nodes than a full mesh holds), not a mesh.
    relayed: bool = False
    ended_ms: int | None = None
    reason: str | None = None
    participants: dict[str, Participant] = field(default_factory=dict)
    media: LocalMedia | None = None
    pending_offer: str | None = None
    inviter: str | None = None
    #: Wall-clock milliseconds when this node's first leg connected.
    joined_ms: int | None = None
    stats: dict[str, float | int | None] = field(default_factory=empty_stats)
    #: On the host of a relayed call: whose media each participant's slots carry.
    forwarding: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: One line when our media fell short (no camera: audio only), else None.
    notice: str | None = None
    #: With a microphone: ``{"echo_cancel": bool, "note": str}`` (the sound route).
    sound: dict[str, object] | None = None
    #: Host generation: each handover moves it on; a higher one always wins.
    epoch: int = 0
    #: Who takes over from the host, best first (the host's ranking).
    successors: list[str] = field(default_factory=list)
    #: On the host: each member's latest standing (see meshdesk.calls.hosting).
    standings: dict[str, Standing] = field(default_factory=dict)
    #: On the host: its own fitness to go on hosting.
    fitness: HostFitness | None = None
    #: When the old host's media was last heard, until the new host's first frame.
    handover_mark: float | None = None
    #: A member back in a full mesh told the host so (it stops forwarding to it).
    meshed: bool = False
    #: Monotonic time this member last sent the host its standing.
    standing_at: float = 0.0
    #: Host: which successor keeps an invitation ready for each citizen's phone.
    standby_sent: dict[str, str] = field(default_factory=dict)
    #: Successor: citizens' phones this node keeps an invitation ready for.
    standby_guests: set[str] = field(default_factory=set)

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def live(self) -> list[Participant]:
        """Other participants still in the call (invited, connecting or connected)."""
        return [p for p in self.participants.values() if p.state in LIVE]

    def to_json(self) -> dict[str, object]:
        return {
            "call_id": self.call_id,
            "case_id": self.case_id,
            "direction": self.direction,
            "state": str(self.state),
            "audio_only": self.audio_only,
            "degraded": self.degraded,
            "relayed": self.relayed,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "reason": self.reason,
            "host": self.host,
            "participants": [self.me.to_json()] + [p.to_json() for p in self.participants.values()],
            "stats": dict(self.stats),
            "forwarding": {k: dict(v) for k, v in self.forwarding.items()},
            "epoch": self.epoch,
            "successors": list(self.successors),
            "notice": self.notice,
            "sound": dict(self.sound) if self.sound is not None else None,
        }
