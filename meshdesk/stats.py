"""Percentiles, with one rule for every figure meshdesk reports.

Benches (latencies, durations) and drills (seconds for a case to reach HQ) both
print p50 and p95; they read the same way because they come from this one
function. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (``q`` from 0 to 100) with linear interpolation.

    The same definition as NumPy's default (``method="linear"``): sort the samples,
    take position ``(n - 1) * q / 100`` and interpolate between its two neighbours.
    So the 50th percentile is the median (:func:`statistics.median` agrees), the
    0th and 100th are the smallest and largest samples, and one sample is every
    percentile of itself.

    Raises:
        ValueError: no samples, or ``q`` outside 0-100.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
