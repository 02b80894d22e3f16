"""PNG charts of a drill report (matplotlib, Agg backend: no display needed).

matplotlib is imported when charts are drawn, not with this module: importing it
takes ≈ 0.4 s, and every ``meshdesk`` command (``meshdesk run`` too) imports the
CLI, which imports the drill command.

Titles and axes are in the report's language (the caller's translator), and site
names are often Japanese: text is drawn with a Japanese-capable font where one is
installed (Debian's ``fonts-noto-cjk``), each glyph falling back from the first
family to the next. Without one, Japanese text would be drawn as empty boxes: that
is said once in the log, and the charts are still written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["CHARTS", "draw_charts"]

#: File names of the charts, in the order the report shows them.
CHARTS = ("backlog.png", "links.png", "reach.png")
_MAX_SITES = 16
#: Families tried in turn for each glyph: Latin from the first, Japanese from the next.
_FAMILIES = ("DejaVu Sans", "Noto Sans CJK JP", "IPAexGothic", "IPAGothic", "TakaoGothic")
#: File names of those Japanese fonts, looked for when matplotlib's cache lacks them.
_FONT_FILES = ("NotoSansCJK", "ipaexg", "ipag", "TakaoGothic", "TakaoPGothic")

log = logging.getLogger(__name__)
#: A translator: ``t(english, **values)`` gives the text in the report's language.
Translate = Callable[..., str]


def _english(text: str, **values: object) -> str:
    return text.format(**values) if values else text


def _minutes(points: Sequence[Sequence[Any]]) -> list[float]:
    return [float(p[0]) / 60 for p in points]


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    from matplotlib import font_manager

    manager = font_manager.fontManager
    have = {f.name for f in manager.ttflist}
    if not have.intersection(_FAMILIES[1:]):
        # matplotlib's font cache predates a Japanese font installed later: add it.
        for found in font_manager.findSystemFonts():
            if any(mark in Path(found).name for mark in _FONT_FILES):
                try:
                    manager.addfont(found)
                except (OSError, RuntimeError, ValueError) as exc:
                    log.warning("drill charts: cannot use the font %s: %s", found, exc)
        have = {f.name for f in manager.ttflist}
    families = [f for f in _FAMILIES if f in have]
    if len(families) < 2 or families[0] != _FAMILIES[0]:
        log.warning("no Japanese font for the drill charts (install fonts-noto-cjk):"
                    " Japanese names are drawn as empty boxes")  # fmt: skip
    matplotlib.rcParams["font.family"] = families or ["sans-serif"]
    return matplotlib.pyplot


def _backlog(plt: ModuleType, sites: Mapping[str, Any], path: Path, t: Translate) -> None:
    ranked = sorted(sites, key=lambda s: -max((p[1] for p in sites[s]["backlog"]), default=0))
    shown = [s for s in ranked[:_MAX_SITES] if any(p[1] for p in sites[s]["backlog"])]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for site in shown:
        points = sites[site]["backlog"]
        ax.step(_minutes(points), [p[1] for p in points], where="post", label=site)
    ax.set_xlabel(t("scenario time (min)"))
    ax.set_ylabel(t("events HQ lacks"))
    ax.set_title(t("Backlog per site (events held at the site that HQ does not hold yet)"))
    if shown:
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    else:
        ax.text(0.5, 0.5, t("no backlog at any sample"), ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _links(plt: ModuleType, sites: Mapping[str, Any], path: Path, t: Translate) -> None:
    def cut(site: str) -> bool:
        return not all(p[1] for p in sites[site]["linked_to_hq"])

    shown = [s for s in sites if cut(s)][: _MAX_SITES * 2] or list(sites)[:_MAX_SITES]
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.32 * len(shown)), dpi=110)
    for row, site in enumerate(shown):
        points = sites[site]["linked_to_hq"]
        spans: list[tuple[float, float]] = []
        for i, (at, up) in enumerate(points):
            if up:
                end = points[i + 1][0] if i + 1 < len(points) else at
                spans.append((float(at) / 60, max(float(end) - float(at), 0.0) / 60))
        ax.broken_barh(spans, (row - 0.35, 0.7), color="tab:green")
    ax.set_yticks(range(len(shown)), shown, fontsize=7)
    ax.set_xlabel(t("scenario time (min)"))
    ax.set_title(t("Linked to HQ (green) — gaps are outages, power loss, or no courier"))
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _reach(
    plt: ModuleType,
    report: Mapping[str, Any],
    reach_times: Sequence[float],
    path: Path,
    t: Translate,
) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=110)
    if reach_times:
        ax.hist(reach_times, bins=min(40, max(5, len(reach_times) // 5)), color="tab:blue")
    p95 = report.get("reach_hq_p95_s")
    if p95 is not None:
        label = t("p95 {value} s", value=f"{float(p95):g}")
        ax.axvline(float(p95), color="tab:red", linestyle="--", label=label)
        ax.legend()
    ax.set_xlabel(t("seconds from creation until the case is stored at HQ"))
    ax.set_ylabel(t("cases"))
    ax.set_title(t("Time until each case reached HQ"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_charts(
    report: Mapping[str, Any],
    reach_times: Sequence[float],
    out: Path,
    t: Translate = _english,
) -> list[str]:
    """Draw the charts into ``out`` with their text through ``t`` (the report's
    language); returns their file names (see :data:`CHARTS`)."""
    sites = report["sites"]
    plt = _pyplot()
    _backlog(plt, sites, out / CHARTS[0], t)
    _links(plt, sites, out / CHARTS[1], t)
    _reach(plt, report, reach_times, out / CHARTS[2], t)
    return list(CHARTS)
