"""Who hosts a call, and who takes over: pure rules, the time always passed in.

A relayed call (a star, :mod:`meshdesk.calls.relay`) lives on its host. So that a
consultation survives the host's laptop leaving, dropping or struggling, every
member tells the host how fit it is (:class:`Standing`: CPU headroom, its worst
link round trip to the other members, its media loss; ``CallStanding`` every
:data:`STANDING_INTERVAL` s) and the host keeps everyone told who takes over, in
order (:func:`rank`; ``CallHost``). Then:

- **the host leaves** (hang-up, shutdown): it names the first successor the new
  host (``CallHost``, next epoch) before its ``CallLeave``;
- **the host vanishes** (a power cut, a cut cable): a member that has had neither
  media nor any link frame from it for :data:`HOST_SILENCE` s (:func:`host_silent`),
  or whose link to it went down, takes the first successor still in the call as the
  host; that node announces itself (next epoch). Members who have not noticed yet
  follow its announcement;
- **the host degrades**: a host whose own standing stays poor for
  :data:`UNFIT_SAMPLES` s (:class:`HostFitness`) hands over to a healthy successor
  with more headroom and stays on as a member.

The new host re-offers every member a leg (a star) or, when the call is down to
:data:`~meshdesk.calls._core.MESH_MAX` nodes and has no citizen, everyone opens legs
to each other (a full mesh again). A higher epoch always wins: a host that was
wrongly given up follows the new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HOST_SILENCE",
    "STANDING_INTERVAL",
    "UNFIT_SAMPLES",
    "CpuMeter",
    "HostFitness",
    "Standing",
    "better_host",
    "host_silent",
    "rank",
]

#: Seconds without media and without any link frame before a host is given up.
HOST_SILENCE = 1.5
#: Members report their standing this often (seconds).
STANDING_INTERVAL = 2.0
#: Consecutive poor seconds before a host hands over by itself.
UNFIT_SAMPLES = 3
#: A host with less CPU headroom than this (percent) is struggling.
MIN_CPU_FREE = 15
#: Headroom is compared in steps of this many percent (a few points are noise).
CPU_STEP = 10


@dataclass(frozen=True, slots=True)
class Standing:
    """How fit a node is to host: CPU headroom, worst link RTT, media loss."""

    cpu_free_pct: int
    rtt_ms: int
    loss_pct: int

    def healthy(self, max_rtt_ms: float, max_loss_pct: float) -> bool:
        """Its links are good enough to carry everyone's media."""
        return self.rtt_ms <= max_rtt_ms and self.loss_pct <= max_loss_pct


#: What the host assumes of a member that has not reported yet.
UNKNOWN = Standing(cpu_free_pct=0, rtt_ms=0, loss_pct=0)


def rank(standings: Mapping[str, Standing], *, max_rtt_ms: float, max_loss_pct: float) -> list[str]:
    """Node ids, best host first: healthy links first, then the most CPU headroom
    (in :data:`CPU_STEP` steps), then the shortest round trip, then the id (so every
    node that ranks the same facts gets the same order)."""

    def key(node_id: str) -> tuple[bool, int, int, str]:
        s = standings[node_id]
        return (
            not s.healthy(max_rtt_ms, max_loss_pct),
            -(s.cpu_free_pct // CPU_STEP),
            s.rtt_ms,
            node_id,
        )

    return sorted(standings, key=key)


def host_silent(
    *, media_at: float | None, link_at: float | None, now: float, after: float = HOST_SILENCE
) -> bool:
    """Has the host gone quiet on both paths (media and link) for ``after`` seconds?

    Either path alone may pause (everyone muted; a busy link): only both together
    mean the host is gone. ``None`` is "never heard", which counts as quiet.
    """
    media_quiet = media_at is None or now - media_at > after
    link_quiet = link_at is None or now - link_at > after
    return media_quiet and link_quiet


@dataclass(slots=True)
class HostFitness:
    """Feed the host's own standing once a second; :meth:`observe` says when it is
    unfit to go on hosting (told once until it recovers)."""

    max_rtt_ms: float
    max_loss_pct: float
    samples: int = UNFIT_SAMPLES
    _poor: int = 0

    def observe(self, own: Standing) -> str | None:
        reasons = []
        if own.cpu_free_pct < MIN_CPU_FREE:
            reasons.append(f"CPU headroom {own.cpu_free_pct} % < {MIN_CPU_FREE} %")
        if not own.healthy(self.max_rtt_ms, self.max_loss_pct):
            reasons.append(f"its links are poor (RTT {own.rtt_ms} ms, loss {own.loss_pct} %)")
        if not reasons:
            self._poor = 0
            return None
        self._poor += 1
        if self._poor != self.samples:
            return None
        return f"{' and '.join(reasons)} for {self.samples} s"


def better_host(own: Standing, other: Standing, *, max_rtt_ms: float, max_loss_pct: float) -> bool:
    """Would ``other`` host better than a struggling ``own``?"""
    if not other.healthy(max_rtt_ms, max_loss_pct):
        return False
    if not own.healthy(max_rtt_ms, max_loss_pct):
        return True
    return other.cpu_free_pct // CPU_STEP > own.cpu_free_pct // CPU_STEP


class CpuMeter:
    """This machine's idle CPU share between two readings of ``/proc/stat``."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self._stat = stat
        self._last: tuple[int, int] | None = None

    def _read(self) -> tuple[int, int] | None:
        try:
            fields = self._stat.read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        values = [int(v) for v in fields[1:9] if v.isdigit()]
        if len(values) < 5:
            return None
        idle = values[3] + values[4]  # idle + iowait
        return idle, sum(values)

    def free_pct(self) -> int:
        """Percent idle since the previous call (100 on the first, or without /proc)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return 100
        return max(0, min(100, round(100 * (now[0] - last[0]) / (now[1] - last[1]))))
