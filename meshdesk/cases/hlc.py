"""Hybrid logical clock: the time stamp of every case event.

A wall clock alone cannot order events in a mesh: laptops in an evacuation centre
drift, get their clock reset, and are never in touch with an NTP server. A pure
logical clock orders events but says nothing about *when*. An HLC is both: the
high 48 bits are wall milliseconds, the low 16 bits a counter, so the value is a
plain 64-bit integer that sorts causally (an event sorts after everything its
author had seen) and still reads as a date on screen.

With that packing every rule of the HLC paper collapses into one ``max``: the next
value is the largest of "now on the wall", "just after my last value" and "just
after what I received". Counter overflow carries into the millisecond on its own.

Nothing here reads a clock: callers pass ``wall_ms``, so tests are deterministic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meshdesk.errors import SyncError

__all__ = [
    "COUNTER_BITS",
    "HLC_MAX",
    "MAX_AHEAD_MS",
    "Clock",
    "check_hlc",
    "format_hlc",
    "hlc_counter",
    "hlc_wall_ms",
    "make_hlc",
    "split_hlc",
    "to_datetime",
]

#: Bits of the logical counter below the wall milliseconds.
COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Largest HLC: values must fit a signed 64-bit integer (SQLite, msgpack int64).
HLC_MAX = (1 << 63) - 1
_WALL_MAX = HLC_MAX >> COUNTER_BITS

#: A peer's HLC further ahead of our wall clock than this is refused: one node with
#: a clock set years ahead must not drag every clock in the mesh along with it.
MAX_AHEAD_MS = 24 * 60 * 60 * 1000


def make_hlc(wall_ms: int, counter: int = 0) -> int:
    """Pack wall milliseconds and a counter into one HLC value.

    Raises:
        ValueError: either part is out of range.
    """
    if not 0 <= wall_ms <= _WALL_MAX:
        raise ValueError(f"wall_ms out of range: {wall_ms}")
    if not 0 <= counter <= _COUNTER_MASK:
        raise ValueError(f"HLC counter out of range: {counter}")
    return (wall_ms << COUNTER_BITS) | counter


def check_hlc(value: object) -> int:
    """Return ``value`` if it is a valid HLC (an int in ``0..HLC_MAX``, not a bool).

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= HLC_MAX:
        raise ValueError(f"not an HLC value: {value!r}")
    return value


def hlc_wall_ms(hlc: int) -> int:
    """Wall-clock milliseconds since the epoch carried by ``hlc``."""
    return hlc >> COUNTER_BITS


def hlc_counter(hlc: int) -> int:
    """Logical counter of ``hlc`` (events in the same millisecond)."""
    return hlc & _COUNTER_MASK


def split_hlc(hlc: int) -> tuple[int, int]:
    """``(wall_ms, counter)`` of ``hlc``."""
    return hlc_wall_ms(hlc), hlc_counter(hlc)


def to_datetime(hlc: int) -> datetime:
    """The wall part of ``hlc`` as an aware UTC datetime (the counter is dropped)."""
    return _EPOCH + timedelta(milliseconds=hlc >> COUNTER_BITS)


def format_hlc(hlc: int) -> str:
    """Stable text form for logs and reports, e.g. ``2024-05-01T03:04:05.678Z+2``.

    The ``+n`` suffix (the counter) appears only when it is non-zero, so the common
    case reads as a plain ISO 8601 timestamp.
    """
    text = to_datetime(hlc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    counter = hlc_counter(hlc)
    return f"{text}+{counter}" if counter else text


def _check_wall(wall_ms: int) -> int:
    if isinstance(wall_ms, bool) or not isinstance(wall_ms, int) or not 0 <= wall_ms <= _WALL_MAX:
        raise ValueError(f"wall_ms out of range: {wall_ms!r}")
    return wall_ms


class Clock:
    """One node's HLC: every value it hands out is larger than the one before.

    Args:
        last: The largest HLC this node has issued or observed, e.g. restored from
            the store at start-up, so a restart never reuses a value.
        max_ahead_ms: How far ahead of ``wall_ms`` a remote HLC may be before
            :meth:`observe` refuses it.
    """

    __slots__ = ("_last", "_max_ahead_ms")

    def __init__(self, last: int = 0, *, max_ahead_ms: int = MAX_AHEAD_MS) -> None:
        self._last = check_hlc(last)
        self._max_ahead_ms = max_ahead_ms

    @property
    def last(self) -> int:
        """The largest value issued or observed so far."""
        return self._last

    def now(self, wall_ms: int, *, after: int = 0) -> int:
        """A new HLC for a local event at ``wall_ms``.

        Monotonic even when the wall clock steps back: the value is then the last
        one plus one (the counter grows; on overflow it carries into the ms).

        Args:
            wall_ms: The local wall clock, milliseconds since the epoch.
            after: An HLC the new value must exceed as well, e.g. the newest event
                of the case being edited, so an edit sorts after what it answers.
                It comes from our own store (accepted already). If it lies more than
                ``max_ahead_ms`` ahead of ``wall_ms`` (written by a node whose clock
                ran ahead), this value still exceeds it, but the clock does not
                follow: later values for other cases keep to our own time instead
                of being dragged into the future.

        Raises:
            ValueError: ``wall_ms`` or ``after`` is out of range, or the clock is
                exhausted (only possible with absurd inputs).
        """
        own = max(_check_wall(wall_ms) << COUNTER_BITS, self._last + 1)
        check_hlc(after)
        if hlc_wall_ms(after) - wall_ms > self._max_ahead_ms:
            self._last = check_hlc(own)
            return check_hlc(max(own, after + 1))
        value = max(own, after + 1)
        self._last = check_hlc(value)
        return value

    def observe(self, remote: int, wall_ms: int) -> int:
        """Merge a received HLC; returns the value for the receive event.

        Afterwards every :meth:`now` sorts after ``remote``.

        Raises:
            SyncError: ``remote`` is not an HLC, or is more than ``max_ahead_ms``
                ahead of ``wall_ms`` (a peer with a broken clock).
        """
        _check_wall(wall_ms)
        try:
            check_hlc(remote)
        except ValueError as exc:
            raise SyncError(f"peer sent a bad HLC: {exc}") from exc
        ahead = hlc_wall_ms(remote) - wall_ms
        if ahead > self._max_ahead_ms:
            raise SyncError(
                f"peer clock is {ahead / 3_600_000:.1f} h ahead of ours "
                f"({format_hlc(remote)}); refusing it (limit "
                f"{self._max_ahead_ms / 3_600_000:.0f} h)"
            )
        return self.now(wall_ms, after=remote)

    def __repr__(self) -> str:
        return f"Clock(last={format_hlc(self._last)})"
