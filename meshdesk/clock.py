"""Is this node's clock right? What the peers' clocks say, in plain words.

In a disaster laptop clocks are wrong: a dead RTC battery resets one to a date years
back, another was never set. meshdesk keeps working with wrong clocks — certificates
are not judged by "valid from" (:func:`~meshdesk.identity.pki.verify_node_cert`) and
case events carry hybrid logical clocks that never run backwards — but people must be
told, and new records should carry sensible times.

Every ping a peer sends carries its wall time, so each link knows how far the peer's
clock is from ours (:class:`~meshdesk.net.liveness.ClockOffset`). :func:`judge` turns
the linked peers' offsets into a verdict:

- The **reference** is the HQ: a node linked to HQ nodes takes their clock (the
  median of their offsets) as right. An HQ node is its own reference and never
  corrects itself; it reports the peers whose clocks are off. A node with no HQ in
  reach takes the median of two or more peers; with one peer it cannot tell which
  clock is wrong and only says that they differ.
- Beyond :data:`SKEW_WARN_MS` the verdict carries a warning naming the node and the
  offset, and a **correction**: the node adds it to its wall clock when it stamps new
  records, so a laptop whose clock fell back 400 days still records "now" once it
  has met the HQ. Records it wrote before keep their stamps (an HLC never goes back).

Pure: nothing here reads a clock or does I/O; :class:`ClockWatch` is the node's small
stateful part (what was already logged) around it.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "SKEW_WARN_MS",
    "ClockView",
    "ClockWatch",
    "PeerClock",
    "describe_offset",
    "judge",
    "peer_clocks",
]

log = logging.getLogger(__name__)

#: Clocks further apart than this (2 minutes) are reported and corrected for.
SKEW_WARN_MS = 120_000


@dataclass(frozen=True, slots=True)
class PeerClock:
    """A linked peer and how far its clock is from ours (its clock minus ours)."""

    node_id: str
    name: str
    role: str
    offset_ms: int


@dataclass(frozen=True, slots=True)
class ClockView:
    """The verdict on this node's clock, and on its peers' clocks."""

    #: Our clock minus the reference (positive: ours is ahead); None: no reference.
    skew_ms: int | None
    #: Whose clock the reference is, for people: "HQ 本部", "3 peers".
    reference: str
    #: Milliseconds to add to our wall clock when stamping records (0: none needed).
    correction_ms: int
    #: What the operator should read, or None when the clock is fine.
    warning: str | None
    #: Peers whose clocks differ from ours by more than the threshold.
    peers_off: tuple[PeerClock, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "skew_ms": self.skew_ms,
            "reference": self.reference,
            "correction_ms": self.correction_ms,
            "warning": self.warning,
            "peers_off": [
                {"node_id": p.node_id, "name": p.name, "offset_ms": p.offset_ms}
                for p in self.peers_off
            ],
        }


class _PeerRecord(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def clock_offset_ms(self) -> int | None: ...


def peer_clocks(records: Iterable[_PeerRecord]) -> list[PeerClock]:
    """The linked peers whose clock offset is known (from the link manager's records)."""
    return [
        PeerClock(r.node_id, r.name, r.role, r.clock_offset_ms)
        for r in records
        if r.state == "linked" and r.clock_offset_ms is not None
    ]


def describe_offset(ms: int, than: str) -> str:
    """How a clock ``ms`` off relates to ``than``'s: "400 d 3 h behind HQ's",
    "2 d ahead of HQ's"; for logs and warnings."""
    way = f"ahead of {than}" if ms > 0 else f"behind {than}"
    left = abs(ms) // 1000
    days, left = divmod(left, 86_400)
    hours, left = divmod(left, 3_600)
    minutes = left // 60
    if days:
        amount = f"{days} d {hours} h" if hours else f"{days} d"
    elif hours:
        amount = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    else:
        amount = f"{max(minutes, 1)} min"
    return f"{amount} {way}"


def judge(
    my_name: str, my_role: str, peers: Sequence[PeerClock], threshold_ms: int = SKEW_WARN_MS
) -> ClockView:
    """The verdict for a node named ``my_name`` of role ``my_role`` (see module doc)."""
    off = tuple(p for p in peers if abs(p.offset_ms) > threshold_ms)
    hqs = [p for p in peers if p.role == "hq"]
    if my_role == "hq":
        return ClockView(0, "this HQ", 0, None, off)
    if hqs:
        reference = "HQ " + ", ".join(sorted(p.name for p in hqs))
        offset = int(statistics.median(p.offset_ms for p in hqs))
    elif len(peers) >= 2:
        reference = f"{len(peers)} peers"
        offset = int(statistics.median(p.offset_ms for p in peers))
    else:
        if off:
            peer = off[0]
            warning = (
                f"the clocks of {my_name} and {peer.name} differ: {peer.name}'s is "
                f"{describe_offset(peer.offset_ms, 'this one')}; check the date on both"
            )
            return ClockView(None, "", 0, warning, off)
        return ClockView(None, "", 0, None, off)
    skew = -offset
    if abs(skew) <= threshold_ms:
        return ClockView(skew, reference, 0, None, off)
    warning = (
        f"the clock of {my_name} is {describe_offset(skew, reference + chr(39) + 's')}: set "
        "the date and time; new records are stamped with the corrected time meanwhile"
    )
    return ClockView(skew, reference, offset, warning, off)


class ClockWatch:
    """Keeps the latest verdict; logs each warning once per episode, not every check."""

    def __init__(
        self,
        my_name: str,
        my_role: str,
        peers: Callable[[], Sequence[PeerClock]],
        *,
        on_change: Callable[[ClockView], None] | None = None,
        threshold_ms: int = SKEW_WARN_MS,
    ) -> None:
        self._name = my_name
        self._role = my_role
        self._peers = peers
        self._on_change = on_change
        self._threshold = threshold_ms
        self.view = ClockView(None, "", 0, None, ())
        self._warned_peers: dict[str, int] = {}

    @property
    def correction_ms(self) -> int:
        return self.view.correction_ms

    def check(self) -> ClockView:
        """Judge again; log what is new; returns the verdict."""
        view = judge(self._name, self._role, self._peers(), self._threshold)
        before = self.view
        if view.warning is not None and (
            before.warning is None
            or abs(view.correction_ms - before.correction_ms) > self._threshold
        ):
            log.warning("clock: %s", view.warning)
        elif view.warning is None and before.warning is not None:
            log.info("clock: this node's clock agrees with %s again", view.reference or "its peers")
        for peer in view.peers_off if self._role == "hq" else ():
            logged = self._warned_peers.get(peer.node_id)
            if logged is None or abs(logged - peer.offset_ms) > self._threshold:
                log.warning(
                    "clock of %s (%s) is %s",
                    peer.name,
                    peer.node_id,
                    describe_offset(peer.offset_ms, "this node's"),
                )
                self._warned_peers[peer.node_id] = peer.offset_ms
        still = {p.node_id for p in view.peers_off}
        for node_id in [n for n in self._warned_peers if n not in still]:
            del self._warned_peers[node_id]
        self.view = view
        if view != before and self._on_change is not None:
            self._on_change(view)
        return view
