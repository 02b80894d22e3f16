"""Write a drill's after-action report: ``report.json``, ``report.md``, ``report.html``.

The JSON is the summary dict of :func:`meshdesk.drill.metrics.summarise` (what
tests and tools read); the Markdown and HTML say the same for people, with the
PNG charts of :mod:`meshdesk.drill.charts` beside them in the same folder.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshdesk.drill.charts import draw_charts
from meshdesk.errors import DrillError

__all__ = ["write_report"]

_SITE_COLUMNS = (
    ("site", "Site"),
    ("cases_created", "Cases"),
    ("reach_hq_p50_s", "HQ p50 s"),
    ("reach_hq_p95_s", "HQ p95 s"),
    ("reach_hq_max_s", "HQ max s"),
    ("not_reached", "Not at HQ"),
    ("max_backlog", "Max backlog"),
    ("outage_s", "Unlinked s"),
    ("calls", "Calls placed/done"),
    ("joins", "Joins placed/done"),
    ("conflicts", "Conflicts raised/resolved"),
)


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _site_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, site in report["sites"].items():
        linked = site["linked_to_hq"]
        outage = sum(
            linked[i + 1][0] - t for i, (t, up) in enumerate(linked[:-1]) if not up
        )  # fmt: skip
        rows.append(
            {
                "site": name,
                "cases_created": _fmt(site["cases_created"]),
                "reach_hq_p50_s": _fmt(site["reach_hq_p50_s"]),
                "reach_hq_p95_s": _fmt(site["reach_hq_p95_s"]),
                "reach_hq_max_s": _fmt(site["reach_hq_max_s"]),
                "not_reached": _fmt(site["not_reached"]),
                "max_backlog": _fmt(max((p[1] for p in site["backlog"]), default=0)),
                "outage_s": _fmt(round(outage, 1)),
                "calls": f"{site['calls_placed']}/{site['calls_completed']}",
                "joins": f"{site['joins_placed']}/{site['joins_completed']}",
                "conflicts": f"{site['conflicts_raised']}/{site['conflicts_resolved']}",
            }
        )
    return rows


def _verdict(report: Mapping[str, Any]) -> list[str]:
    lines = []
    lost, converged = report["lost_records"], report["converged"]
    state = "converged" if converged else "did NOT converge"
    lines.append(
        "PASS: no record lost, every store converged."
        if report["ok"]
        else f"FAIL: {lost} records lost; stores {state}."
    )
    if report["missing_by_node"]:
        worst = ", ".join(f"{k}: {v}" for k, v in list(report["missing_by_node"].items())[:10])
        lines.append(f"Records missing per node: {worst}.")
    if report["revoked"]:
        lines.append(
            f"Revoked: {', '.join(report['revoked'])}; {report['refused_writes']} later writes, "
            f"{report['refused_writes_accepted']} of them accepted anywhere (must be 0)."
        )
        for name, states in report.get("revoked_peers", {}).items():
            seen = ", ".join(f"{node}: {state}" for node, state in states.items())
            lines.append(f"How the others see {name} at the end: {seen or 'no node knows it'}.")
    return lines


def _totals(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    keys = (
        "mode", "seed", "nodes", "duration_s", "drained_s", "cases_created", "events_created",
        "expected_records", "lost_records", "converged", "reach_hq_p50_s", "reach_hq_p95_s",
        "reach_hq_max_s", "not_reached", "calls_placed", "calls_completed", "conflicts_raised",
        "conflicts_resolved", "refused_writes", "refused_writes_accepted",
    )  # fmt: skip
    return [(k, _fmt(report[k])) for k in keys]


_COST_TITLES = (
    "nodes",
    "events created",
    "bytes sent per node (mean)",
    "p50",
    "max",
    "events received per node (mean)",
    "bytes sent per event received (p50)",
)
_COST_NOTE = (
    "Sync frames each node sent over all its links (wire codec bytes), beside the events it "
    "stored from others: what a node pays grows with the records it must move (its backlog), "
    "not with how many nodes the mesh has."
)


def _cost_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per mesh size measured (this run and the ``compare`` scenarios)."""
    rows = report.get("sync_cost_by_size") or (
        [report["sync_cost"]] if report.get("sync_cost") else []
    )
    keys = ("nodes", "events_created", "bytes_sent_per_node_mean", "bytes_sent_per_node_p50",
            "bytes_sent_per_node_max", "events_received_per_node_mean",
            "bytes_sent_per_event_received_p50")  # fmt: skip
    return [tuple(_fmt(row.get(k)) for k in keys) for row in rows]


def _cost_markdown(report: Mapping[str, Any]) -> list[str]:
    rows = _cost_rows(report)
    if not rows:
        return []
    out = ["", "## Sync cost by mesh size", "", _COST_NOTE, ""]
    out.append("| " + " | ".join(_COST_TITLES) + " |")
    out.append("|" + "---|" * len(_COST_TITLES))
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _markdown(report: Mapping[str, Any], charts: Sequence[str]) -> str:
    out = [f"# Drill report: {report['scenario']}", ""]
    out += [f"**{line}**" if i == 0 else line for i, line in enumerate(_verdict(report))]
    out += ["", "## Totals", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in _totals(report)]
    out += ["", "## Per site", ""]
    out.append("| " + " | ".join(title for _, title in _SITE_COLUMNS) + " |")
    out.append("|" + "---|" * len(_SITE_COLUMNS))
    for row in _site_rows(report):
        out.append("| " + " | ".join(row[key] for key, _ in _SITE_COLUMNS) + " |")
    out += ["", "## Calls", ""]
    if report["calls"]:
        out += ["| call | kind | site | peer | at s | placed | completed | note |"]
        out += ["|---|---|---|---|---|---|---|---|"]
        for c in report["calls"]:
            cells = (c["call_id"], c["kind"], c["site"], c["peer"], _fmt(c["at_s"]))
            out.append(f"| {' | '.join(cells)} | {c['placed']} | {c['completed']} | {c['note']} |")
    else:
        out.append("No calls in this scenario.")
    out += _cost_markdown(report)
    out += ["", "## Charts", ""] + [f"![{name}]({name})" for name in charts]
    out += ["", "## Notes", ""] + ([f"- {n}" for n in report["notes"]] or ["- none"])
    out += ["", "## Convergence", "", "| node | store digest |", "|---|---|"]
    out += [f"| {k} | `{v[:16]}` |" for k, v in report["digests"].items()]
    return "\n".join(out) + "\n"


def _html(report: Mapping[str, Any], charts: Sequence[str]) -> str:
    e = html.escape
    verdict = _verdict(report)
    colour = "#1b7f3b" if report["ok"] else "#b00020"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Drill report: {e(report['scenario'])}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Drill report: {e(report['scenario'])}</h1>",
        f"<p style='color:{colour};font-weight:bold'>{e(verdict[0])}</p>",
        *[f"<p>{e(line)}</p>" for line in verdict[1:]],
        "<h2>Totals</h2><table>",
        *[f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _totals(report)],
        "</table><h2>Per site</h2><table><tr>",
        *[f"<th>{e(title)}</th>" for _, title in _SITE_COLUMNS],
        "</tr>",
    ]
    for row in _site_rows(report):
        parts.append("<tr>" + "".join(f"<td>{e(row[k])}</td>" for k, _ in _SITE_COLUMNS) + "</tr>")
    parts.append("</table><h2>Calls</h2>")
    if report["calls"]:
        parts.append("<table><tr><th>call</th><th>kind</th><th>site</th><th>peer</th>")
        parts.append("<th>at s</th><th>placed</th><th>completed</th><th>note</th></tr>")
        for c in report["calls"]:
            cells = (c["call_id"], c["kind"], c["site"], c["peer"], _fmt(c["at_s"]),
                     str(c["placed"]), str(c["completed"]), c["note"])  # fmt: skip
            parts.append("<tr>" + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No calls in this scenario.</p>")
    cost = _cost_rows(report)
    if cost:
        parts.append(f"<h2>Sync cost by mesh size</h2><p>{e(_COST_NOTE)}</p><table><tr>")
        parts += [f"<th>{e(title)}</th>" for title in _COST_TITLES]
        parts.append("</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in cost]
        parts.append("</table>")
    parts.append("<h2>Charts</h2>")
    parts += [f"<p><img src='{e(name)}' alt='{e(name)}'></p>" for name in charts]
    parts.append("<h2>Notes</h2><ul>")
    parts += [f"<li>{e(n)}</li>" for n in report["notes"]] or ["<li>none</li>"]
    parts.append("</ul><h2>Convergence</h2><table><tr><th>node</th><th>store digest</th></tr>")
    parts += [f"<tr><td>{e(k)}</td><td><code>{e(v[:16])}</code></td></tr>"
              for k, v in report["digests"].items()]  # fmt: skip
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: Mapping[str, Any], reach_times: Sequence[float], out: Path) -> Path:
    """Write the report files into ``out`` (created if needed); returns ``report.md``.

    Raises:
        DrillError: ``out`` cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        charts = draw_charts(report, reach_times, out)
        (out / "report.json").write_text(
            json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        (out / "report.md").write_text(_markdown(report, charts), encoding="utf-8")
        (out / "report.html").write_text(_html(report, charts), encoding="utf-8")
    except OSError as exc:
        raise DrillError(f"cannot write the report to {out}: {exc}") from exc
    return out / "report.md"
