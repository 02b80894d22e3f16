"""When a call falls back to audio only: a pure policy over per-second samples.

Video is dropped when loss or round-trip time stays above its threshold for
``samples`` consecutive readings (one bad second is a blip, not a trend). Once
degraded a call stays audio-only: flapping video is worse for a conversation
than none.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QualityPolicy", "Sample"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of one leg: packet loss in percent, round-trip time if known."""

    loss_pct: float
    rtt_ms: float | None


@dataclass(slots=True)
class QualityPolicy:
    """Feed it samples; :meth:`observe` says why to degrade, once, or None."""

    max_loss_pct: float = 10.0
    max_rtt_ms: float = 500.0
    samples: int = 3
    _bad: int = 0
    degraded: bool = False

    def observe(self, sample: Sample) -> str | None:
        """The reason to fall back to audio only, the first time it is due; else None."""
        if self.degraded:
            return None
        reasons = []
        if sample.loss_pct > self.max_loss_pct:
            reasons.append(f"loss {sample.loss_pct:.0f} % > {self.max_loss_pct:g} %")
        if sample.rtt_ms is not None and sample.rtt_ms > self.max_rtt_ms:
            reasons.append(f"RTT {sample.rtt_ms:.0f} ms > {self.max_rtt_ms:g} ms")
        if not reasons:
            self._bad = 0
            return None
        self._bad += 1
        if self._bad < self.samples:
            return None
        self.degraded = True
        return f"{' and '.join(reasons)} for {self.samples} s"
