"""PNG charts of a drill report (matplotlib, Agg backend: no display needed).

matplotlib is imported when charts are drawn, not with this module: importing it
takes ≈ 0.4 s, and every ``meshdesk`` command (``meshdesk run`` too) imports the
CLI, which imports the drill command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["CHARTS", "draw_charts"]

#: File names of the charts, in the order the report shows them.
CHARTS = ("backlog.png", "links.png", "reach.png")
_MAX_SITES = 16


def _minutes(points: Sequence[Sequence[Any]]) -> list[float]:
    return [float(p[0]) / 60 for p in points]


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def _backlog(plt: ModuleType, sites: Mapping[str, Any], path: Path) -> None:
    ranked = sorted(sites, key=lambda s: -max((p[1] for p in sites[s]["backlog"]), default=0))
    shown = [s for s in ranked[:_MAX_SITES] if any(p[1] for p in sites[s]["backlog"])]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for site in shown:
        points = sites[site]["backlog"]
        ax.step(_minutes(points), [p[1] for p in points], where="post", label=site)
    ax.set_xlabel("scenario time (min)")
    ax.set_ylabel("events HQ lacks")
    ax.set_title("Backlog per site (events held at the site that HQ does not hold yet)")
    if shown:
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no backlog at any sample", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _links(plt: ModuleType, sites: Mapping[str, Any], path: Path) -> None:
    def cut(site: str) -> bool:
        return not all(p[1] for p in sites[site]["linked_to_hq"])

    shown = [s for s in sites if cut(s)][: _MAX_SITES * 2] or list(sites)[:_MAX_SITES]
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.32 * len(shown)), dpi=110)
    for row, site in enumerate(shown):
        points = sites[site]["linked_to_hq"]
        spans: list[tuple[float, float]] = []
        for i, (t, up) in enumerate(points):
            if up:
                end = points[i + 1][0] if i + 1 < len(points) else t
                spans.append((float(t) / 60, max(float(end) - float(t), 0.0) / 60))
        ax.broken_barh(spans, (row - 0.35, 0.7), color="tab:green")
    ax.set_yticks(range(len(shown)), shown, fontsize=7)
    ax.set_xlabel("scenario time (min)")
    ax.set_title("Linked to HQ (green) — gaps are outages, power loss, or no courier")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _reach(
    plt: ModuleType, report: Mapping[str, Any], reach_times: Sequence[float], path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=110)
    if reach_times:
        ax.hist(reach_times, bins=min(40, max(5, len(reach_times) // 5)), color="tab:blue")
    p95 = report.get("reach_hq_p95_s")
    if p95 is not None:
        ax.axvline(float(p95), color="tab:red", linestyle="--", label=f"p95 {float(p95):g} s")
        ax.legend()
    ax.set_xlabel("seconds from creation until the case is stored at HQ")
    ax.set_ylabel("cases")
    ax.set_title("Time until each case reached HQ")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_charts(report: Mapping[str, Any], reach_times: Sequence[float], out: Path) -> list[str]:
    """Draw the charts into ``out``; returns their file names (see :data:`CHARTS`)."""
    sites = report["sites"]
    plt = _pyplot()
    _backlog(plt, sites, out / CHARTS[0])
    _links(plt, sites, out / CHARTS[1])
    _reach(plt, report, reach_times, out / CHARTS[2])
    return list(CHARTS)
