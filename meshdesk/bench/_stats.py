"""Numbers shared by every bench: summaries of repeated runs and the result table.

A bench measures meshdesk and a baseline in the same run, several times each, and
prints both side by side. This module holds the parts that do not depend on what is
measured: a :class:`Summary` of samples (its p95 from :func:`meshdesk.stats.percentile`),
rates, ratios, the options and argument checks every bench shares, and the plain-text
table. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from meshdesk.errors import UsageError
from meshdesk.stats import percentile

__all__ = [
    "Row",
    "Summary",
    "add_run_arguments",
    "format_table",
    "rate",
    "ratio",
    "require_at_least",
]

#: Shortest duration a rate or ratio divides by, so a run too fast for the clock
#: gives a large finite number instead of a division by zero (JSON has no infinity).
_TINY = 1e-9


@dataclass(frozen=True, slots=True)
class Summary:
    """Repeated measurements of one quantity (durations in seconds, latencies, ...).

    Attributes:
        count: How many samples.
        min: The smallest sample: for a duration, the best run.
        median: The middle sample: the figure a bench reports first.
        p95: 95th percentile, for latency benches with many samples.
        max: The largest sample.
        samples: The samples in the order they were measured.
    """

    count: int
    min: float
    median: float
    p95: float
    max: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        """Summarise ``samples``.

        Raises:
            ValueError: no samples.
        """
        if not samples:
            raise ValueError("summary of no samples")
        return cls(
            count=len(samples),
            min=min(samples),
            median=statistics.median(samples),
            p95=percentile(samples, 95),
            max=max(samples),
            samples=tuple(samples),
        )


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / max(seconds, _TINY)


def ratio(ours: float, baseline: float) -> float:
    """``ours / baseline``, the number printed in a table's ratio column."""
    return ours / max(baseline, _TINY)


def require_at_least(name: str, value: int, minimum: int = 1) -> None:
    """Refuse a bench argument below ``minimum`` with one clear line.

    Raises:
        UsageError: ``value`` is below ``minimum``.
    """
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")


def add_run_arguments(parser: argparse.ArgumentParser, *, repeat: int) -> None:
    """Add the options every bench takes: ``--repeat R`` and ``--json``."""
    parser.add_argument(
        "--repeat",
        type=int,
        default=repeat,
        metavar="R",
        help=f"times each measurement runs; the median and the best are reported"
        f" (default: {repeat})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a result table: a quantity for meshdesk and for the baseline.

    Attributes:
        label: What was measured, with its unit, e.g. ``append (events/s)``.
        ours: meshdesk's figure.
        baseline: The baseline's figure, measured in the same run.
        digits: Decimal places to print the two figures with.
    """

    label: str
    ours: float
    baseline: float
    digits: int = 0


def format_table(
    title: str,
    rows: Sequence[Row],
    *,
    headers: tuple[str, str] = ("meshdesk", "baseline"),
    notes: Sequence[str] = (),
) -> str:
    """Render rows as an aligned plain-text table: label | ours | baseline | ratio.

    The ratio column is ``ours / baseline`` of the two printed figures.
    """
    cells = [
        (
            row.label,
            f"{row.ours:,.{row.digits}f}",
            f"{row.baseline:,.{row.digits}f}",
            f"{ratio(row.ours, row.baseline):.2f}x",
        )
        for row in rows
    ]
    head = ("", *headers, "ratio")
    widths = [max(len(line[col]) for line in [head, *cells]) for col in range(4)]
    lines = [title, ""]
    for line in [head, *cells]:
        label, *figures = line
        padded = [label.ljust(widths[0])]
        padded += [text.rjust(width) for text, width in zip(figures, widths[1:], strict=True)]
        lines.append("  " + "   ".join(padded).rstrip())
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)
