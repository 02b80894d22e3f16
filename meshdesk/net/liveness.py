"""Pure timing logic of a link: heartbeats, dead-peer detection, flood limits, backoff.

No clocks are read here: every method takes ``now`` (monotonic seconds), so the
rules are tested exactly and the async link only moves frames and sleeps.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Backoff", "ClockOffset", "Heartbeat", "Quarantine", "TokenBucket"]


@dataclass(slots=True)
class Heartbeat:
    """When to ping, how long the round trip took, and when the peer is dead.

    Any frame from the peer proves it alive, not only a pong: a busy sync stream
    keeps the link up by itself.
    """

    interval: float
    dead_after: float
    last_rx: float
    next_ping: float = 0.0
    rtt: float | None = None
    _nonce: int = 0
    _sent: dict[int, float] = field(default_factory=dict)

    def received(self, now: float) -> None:
        self.last_rx = now

    def ping_due(self, now: float) -> int | None:
        """Return the nonce of a ping to send now, or None when none is due."""
        if now < self.next_ping:
            return None
        self.next_ping = now + self.interval
        self._nonce += 1
        self._sent[self._nonce] = now
        # Pongs older than the dead limit can never matter: keep the table small.
        for nonce in [n for n, t in self._sent.items() if now - t > self.dead_after]:
            del self._sent[nonce]
        return self._nonce

    def pong(self, nonce: int, now: float) -> float | None:
        """Record a pong; returns the round-trip time, or None for an unknown nonce."""
        sent = self._sent.pop(nonce, None)
        if sent is None:
            return None
        self.rtt = now - sent
        return self.rtt

    def dead(self, now: float) -> bool:
        return now - self.last_rx > self.dead_after

    def next_wakeup(self, now: float) -> float:
        """Seconds until something is due (a ping, or the dead-peer deadline)."""
        return max(0.0, min(self.next_ping, self.last_rx + self.dead_after) - now)


@dataclass(slots=True)
class TokenBucket:
    """Frames a peer may send: ``rate`` per second on average, bursts up to ``burst``."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens; False means the peer is over its limit."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


@dataclass(slots=True)
class Backoff:
    """Delays between dial attempts to one address.

    For ``fast_window`` seconds after a peer was lost (links flap in a disaster),
    retry every ``minimum`` seconds so a restored cable is noticed at once; after
    that, back off exponentially up to ``maximum``. Every delay is jittered by
    ±50 % so two nodes never retry in lockstep.
    """

    minimum: float
    maximum: float
    fast_window: float
    failures: int = 0
    since: float | None = None
    _slow: int = 0

    def reset(self) -> None:
        self.failures = 0
        self.since = None
        self._slow = 0

    def refused(self, rng: random.Random) -> float:
        """The peer refused us (revoked, other deployment): that will not change in
        a second, so wait the maximum before asking again."""
        self.failures += 1
        return self.maximum * rng.uniform(0.5, 1.5)

    def failed(self, now: float, rng: random.Random) -> float:
        """Record a failed attempt; returns the delay before the next one."""
        if self.since is None:
            self.since = now
        self.failures += 1
        if now - self.since < self.fast_window:
            base = self.minimum
        else:
            self._slow += 1
            base = min(self.maximum, self.minimum * 2 ** min(self._slow, 30))
        return base * rng.uniform(0.5, 1.5)


@dataclass(slots=True)
class ClockOffset:
    """How far the peer's wall clock is from ours, from the times in its pings.

    Each ping carries the sender's wall time; ``sample(sent_ms, received_ms)``
    records ``sent_ms - received_ms`` (positive: the peer's clock is ahead). On a
    LAN the transit time is a few milliseconds, far below the skews that matter
    (minutes to years), so it is not corrected for. The median of the last few
    samples ignores one delayed ping.
    """

    keep: int = 9
    _samples: deque[int] = field(default_factory=deque)

    def sample(self, sent_ms: int, received_ms: int) -> None:
        self._samples.append(sent_ms - received_ms)
        while len(self._samples) > self.keep:
            self._samples.popleft()

    @property
    def ms(self) -> int | None:
        """The peer's clock minus ours in milliseconds, or None before any ping."""
        return int(statistics.median(self._samples)) if self._samples else None


@dataclass(slots=True)
class Quarantine:
    """How long to shut out an enrolled peer that sent malformed or forged frames.

    Each offence cuts the link and refuses the peer for a while: ``first`` seconds,
    doubling with every offence of the same *episode*, up to ``maximum``. An episode
    ends when the peer has behaved (no offence) for ``forgive_after`` seconds, so a
    peer with one bad moment comes back quickly, and one that keeps misbehaving is
    kept out longer and longer, never in a reconnect loop. Staff decide whether to
    revoke it; quarantine is not revocation.
    """

    first: float = 5.0
    maximum: float = 3600.0
    forgive_after: float = 600.0
    strikes: int = 0
    until: float = 0.0
    last_offence: float | None = None

    def offence(self, now: float) -> tuple[float, bool]:
        """Record an offence at ``now``; returns (seconds shut out, new episode?)."""
        new_episode = self.last_offence is None or (
            now >= self.until and now - self.last_offence > self.forgive_after
        )
        if new_episode:
            self.strikes = 0
        duration = min(self.first * 2**self.strikes, self.maximum)
        self.strikes += 1
        self.last_offence = now
        self.until = max(self.until, now + duration)
        return duration, new_episode

    def active(self, now: float) -> bool:
        return now < self.until
