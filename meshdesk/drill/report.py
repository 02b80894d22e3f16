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

__all__ = ["LANGS", "write_report"]

#: Languages the Markdown and HTML are written in; ``report.json`` keeps its keys.
LANGS = ("ja", "en")

#: English text of the report -> Japanese (drill organisers in a city office read it).
_JA: dict[str, str] = {
    "Drill report: {name}": "訓練報告: {name}",
    "Site": "拠点",
    "Cases": "相談件数",
    "HQ p50 s": "本部到達 中央値(秒)",
    "HQ p95 s": "本部到達 95%(秒)",
    "HQ max s": "本部到達 最大(秒)",
    "Not at HQ": "本部未着",
    "Max backlog": "最大未送信",
    "Unlinked s": "本部と不通(秒)",
    "Calls placed/done": "通話 発信/完了",
    "Joins placed/done": "参加 依頼/完了",
    "Conflicts raised/resolved": "競合 発生/解消",
    "PASS: no record lost, every store converged.": "合格: 記録の消失なし、全端末のデータが一致しました。",  # noqa: E501
    "FAIL: {lost} records lost; stores {state}.": "不合格: 記録 {lost} 件が消失、端末のデータは{state}。",  # noqa: E501
    "converged": "一致しました",
    "did NOT converge": "一致しませんでした",
    "Records missing per node: {worst}.": "端末ごとの欠落記録: {worst}。",
    "Revoked: {names}; {refused} later writes, {accepted} of them accepted anywhere (must be 0).": (
        "失効: {names}。失効後の書き込み {refused} 件のうち、受け入れられたもの {accepted} 件"
        "（0 件であること）。"
    ),
    "How the others see {name} at the end: {seen}.": "終了時に他の端末から見た {name}: {seen}。",
    "no node knows it": "知っている端末なし",
    "Totals": "全体",
    "Per site": "拠点ごと",
    "Calls": "通話",
    "No calls in this scenario.": "この想定に通話はありません。",
    "call": "通話",
    "kind": "種類",
    "site": "拠点",
    "peer": "相手",
    "at s": "時刻(秒)",
    "placed": "発信",
    "completed": "完了",
    "note": "備考",
    "Charts": "グラフ",
    "Notes": "注記",
    "none": "なし",
    "Convergence": "データの一致",
    "node": "端末",
    "store digest": "保存データの要約値",
    "Sync cost by mesh size": "網の規模ごとの同期量",
    "yes": "はい",
    "no": "いいえ",
    # totals
    "Mode": "方式",
    "Random seed": "乱数の種",
    "Nodes": "端末数",
    "Scenario length (s)": "想定時間(秒)",
    "Drained after the end (s)": "終了後の収束待ち(秒)",
    "Cases recorded": "記録した相談",
    "Events recorded": "記録した操作",
    "Records expected everywhere": "全端末に届くべき記録",
    "Records lost": "消失した記録",
    "All stores equal at the end": "終了時に全端末のデータが一致",
    "Time to reach HQ, median (s)": "本部到達時間 中央値(秒)",
    "Time to reach HQ, 95th percentile (s)": "本部到達時間 95%(秒)",
    "Time to reach HQ, longest (s)": "本部到達時間 最大(秒)",
    "Cases that never reached HQ": "本部に届かなかった相談",
    "Calls placed": "発信した通話",
    "Calls completed": "完了した通話",
    "Conflicts raised": "発生した競合",
    "Conflicts resolved": "解消した競合",
    "Writes by revoked nodes": "失効端末による書き込み",
    "Writes by revoked nodes accepted anywhere (must be 0)": "失効端末の書き込みで受け入れられたもの（0であること）",  # noqa: E501
    # sync cost
    "nodes": "端末数",
    "events created": "作成した操作",
    "bytes sent per node (mean)": "端末あたり送信量(平均, バイト)",
    "p50": "中央値",
    "max": "最大",
    "events received per node (mean)": "端末あたり受信操作(平均)",
    "bytes sent per event received (p50)": "受信操作あたり送信量(中央値)",
    (
        "Sync frames each node sent over all its links (wire codec bytes), beside the events it "
        "stored from others: what a node pays grows with the records it must move (its backlog), "
        "not with how many nodes the mesh has."
    ): (
        "各端末がすべての接続で送った同期データ量（バイト）と、他の端末から受け取って保存した"
        "操作の数。端末の負担は運ぶべき記録の量に比例し、網の端末数には比例しません。"
    ),
    # announcements and bundles
    "Announcements": "お知らせ",
    "No announcements in this scenario.": "この想定にお知らせはありません。",
    "announcement": "お知らせ",
    "posted at s": "発信(秒)",
    "delivered after s": "配達まで(秒)",
    "read after s": "既読まで(秒)",
    "HQ knew of the reading after s": "本部が既読を知るまで(秒)",
    "not delivered": "未配達",
    "not read": "未読",
    "USB bundle trips": "USB運搬",
    "No bundle trips in this scenario.": "この想定にUSB運搬はありません。",
    "courier": "運搬者",
    "from": "出発",
    "to": "到着",
    "left at s": "出発(秒)",
    "arrived at s": "到着(秒)",
    "records carried": "運んだ記録",
    "new at arrival": "到着先で新規",
    # charts
    "scenario time (min)": "想定時刻（分）",
    "events HQ lacks": "本部に未着の操作",
    "Backlog per site (events held at the site that HQ does not hold yet)": (
        "拠点ごとの未送信（拠点にあって本部にまだない操作）"
    ),
    "no backlog at any sample": "どの時点にも未送信はありません",
    "Linked to HQ (green) — gaps are outages, power loss, or no courier": (
        "本部との接続（緑）— 切れ目は回線断・停電・運搬者なし"
    ),
    "seconds from creation until the case is stored at HQ": "受付から本部に保存されるまで（秒）",
    "cases": "相談件数",
    "Time until each case reached HQ": "各相談が本部に届くまでの時間",
    "p95 {value} s": "95パーセンタイル {value} 秒",
}


def _translator(lang: str) -> Any:
    if lang not in LANGS:
        raise DrillError(f"report language must be one of {', '.join(LANGS)}, not {lang!r}")

    def t(text: str, **values: object) -> str:
        out = _JA.get(text, text) if lang == "ja" else text
        return out.format(**values) if values else out

    return t


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


def _verdict(report: Mapping[str, Any], t: Any) -> list[str]:
    lines = []
    lost, converged = report["lost_records"], report["converged"]
    state = t("converged") if converged else t("did NOT converge")
    lines.append(
        t("PASS: no record lost, every store converged.")
        if report["ok"]
        else t("FAIL: {lost} records lost; stores {state}.", lost=lost, state=state)
    )
    if report["missing_by_node"]:
        worst = ", ".join(f"{k}: {v}" for k, v in list(report["missing_by_node"].items())[:10])
        lines.append(t("Records missing per node: {worst}.", worst=worst))
    if report["revoked"]:
        lines.append(
            t(
                "Revoked: {names}; {refused} later writes, {accepted} of them accepted anywhere"
                " (must be 0).",
                names=", ".join(report["revoked"]),
                refused=report["refused_writes"],
                accepted=report["refused_writes_accepted"],
            )
        )
        for name, states in report.get("revoked_peers", {}).items():
            seen = ", ".join(f"{node}: {state}" for node, state in states.items())
            lines.append(
                t("How the others see {name} at the end: {seen}.", name=name,
                  seen=seen or t("no node knows it"))
            )  # fmt: skip
    return lines


#: The totals table: ``report.json`` key -> what a person reads.
_TOTALS = (
    ("mode", "Mode"),
    ("seed", "Random seed"),
    ("nodes", "Nodes"),
    ("duration_s", "Scenario length (s)"),
    ("drained_s", "Drained after the end (s)"),
    ("cases_created", "Cases recorded"),
    ("events_created", "Events recorded"),
    ("expected_records", "Records expected everywhere"),
    ("lost_records", "Records lost"),
    ("converged", "All stores equal at the end"),
    ("reach_hq_p50_s", "Time to reach HQ, median (s)"),
    ("reach_hq_p95_s", "Time to reach HQ, 95th percentile (s)"),
    ("reach_hq_max_s", "Time to reach HQ, longest (s)"),
    ("not_reached", "Cases that never reached HQ"),
    ("calls_placed", "Calls placed"),
    ("calls_completed", "Calls completed"),
    ("conflicts_raised", "Conflicts raised"),
    ("conflicts_resolved", "Conflicts resolved"),
    ("refused_writes", "Writes by revoked nodes"),
    ("refused_writes_accepted", "Writes by revoked nodes accepted anywhere (must be 0)"),
)


def _totals(report: Mapping[str, Any], t: Any) -> list[tuple[str, str]]:
    def value(v: object) -> str:
        return t("yes") if v is True else t("no") if v is False else _fmt(v)

    return [(t(label), value(report[key])) for key, label in _TOTALS]


def _announcement_rows(report: Mapping[str, Any], t: Any) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for a in report.get("announcements", []):
        for site, reach in a["sites"].items():
            rows.append(
                (
                    str(a["title"]), _fmt(a["posted_at_s"]), str(site),
                    _fmt(reach["delivered_after_s"]) if reach["delivered_after_s"] is not None
                    else t("not delivered"),
                    _fmt(reach["read_after_s"]) if reach["read_after_s"] is not None
                    else t("not read"),
                    _fmt(reach["read_known_at_hq_after_s"]),
                )
            )  # fmt: skip
    return rows


_ANNOUNCE_TITLES = (
    "announcement", "posted at s", "site", "delivered after s", "read after s",
    "HQ knew of the reading after s",
)  # fmt: skip
_TRIP_TITLES = ("courier", "from", "to", "left at s", "arrived at s", "records carried",
                "new at arrival")  # fmt: skip


def _trip_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    keys = ("courier", "from", "to", "left_s", "arrived_s", "events", "new_events")
    return [tuple(_fmt(trip[k]) for k in keys) for trip in report.get("bundle_trips", [])]


def _extra_sections(
    report: Mapping[str, Any], t: Any
) -> list[tuple[str, tuple[str, ...], list[tuple[str, ...]], str]]:
    """(title, column titles, rows, text when empty) of the announcement and bundle tables."""
    return [
        (t("Announcements"), tuple(t(c) for c in _ANNOUNCE_TITLES),
         _announcement_rows(report, t), t("No announcements in this scenario.")),
        (t("USB bundle trips"), tuple(t(c) for c in _TRIP_TITLES), _trip_rows(report),
         t("No bundle trips in this scenario.")),
    ]  # fmt: skip


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


def _cost_markdown(report: Mapping[str, Any], t: Any) -> list[str]:
    rows = _cost_rows(report)
    if not rows:
        return []
    out = ["", f"## {t('Sync cost by mesh size')}", "", t(_COST_NOTE), ""]
    out.append("| " + " | ".join(t(c) for c in _COST_TITLES) + " |")
    out.append("|" + "---|" * len(_COST_TITLES))
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _md_table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    return out + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
    ]


def _markdown(report: Mapping[str, Any], charts: Sequence[str], t: Any) -> str:
    out = [f"# {t('Drill report: {name}', name=report['scenario'])}", ""]
    out += [f"**{line}**" if i == 0 else line for i, line in enumerate(_verdict(report, t))]
    out += ["", f"## {t('Totals')}", ""]
    out += _md_table(("", ""), _totals(report, t))
    out += ["", f"## {t('Per site')}", ""]
    out += _md_table(
        [t(title) for _, title in _SITE_COLUMNS],
        [[row[key] for key, _ in _SITE_COLUMNS] for row in _site_rows(report)],
    )
    for title, columns, rows, empty in _extra_sections(report, t):
        out += ["", f"## {title}", ""]
        out += _md_table(columns, rows) if rows else [empty]
    out += ["", f"## {t('Calls')}", ""]
    if report["calls"]:
        titles = [
            t(c) for c in ("call", "kind", "site", "peer", "at s", "placed", "completed", "note")
        ]
        out += _md_table(titles, [
            (c["call_id"], c["kind"], c["site"], c["peer"], _fmt(c["at_s"]), str(c["placed"]),
             str(c["completed"]), c["note"]) for c in report["calls"]
        ])  # fmt: skip
    else:
        out.append(t("No calls in this scenario."))
    out += _cost_markdown(report, t)
    out += ["", f"## {t('Charts')}", ""] + [f"![{name}]({name})" for name in charts]
    out += ["", f"## {t('Notes')}", ""] + (
        [f"- {n}" for n in report["notes"]] or [f"- {t('none')}"]
    )
    out += ["", f"## {t('Convergence')}", ""]
    out += _md_table((t("node"), t("store digest")),
                     [(k, f"`{v[:16]}`") for k, v in report["digests"].items()])  # fmt: skip
    return "\n".join(out) + "\n"


def _html_table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(x)}</th>" for x in titles) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>" for row in rows]
    return [*out, "</table>"]


def _html(report: Mapping[str, Any], charts: Sequence[str], t: Any, lang: str) -> str:
    e = html.escape
    verdict = _verdict(report, t)
    colour = "#1b7f3b" if report["ok"] else "#b00020"
    title = t("Drill report: {name}", name=report["scenario"])
    parts = [
        f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p style='color:{colour};font-weight:bold'>{e(verdict[0])}</p>",
        *[f"<p>{e(line)}</p>" for line in verdict[1:]],
        f"<h2>{e(t('Totals'))}</h2><table>",
        *[f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _totals(report, t)],
        f"</table><h2>{e(t('Per site'))}</h2>",
    ]
    parts += _html_table(
        [t(title) for _, title in _SITE_COLUMNS],
        [[row[key] for key, _ in _SITE_COLUMNS] for row in _site_rows(report)],
    )
    for section, columns, rows, empty in _extra_sections(report, t):
        parts.append(f"<h2>{e(section)}</h2>")
        parts += _html_table(columns, rows) if rows else [f"<p>{e(empty)}</p>"]
    parts.append(f"<h2>{e(t('Calls'))}</h2>")
    if report["calls"]:
        titles = [
            t(c) for c in ("call", "kind", "site", "peer", "at s", "placed", "completed", "note")
        ]
        parts += _html_table(titles, [
            (c["call_id"], c["kind"], c["site"], c["peer"], _fmt(c["at_s"]), str(c["placed"]),
             str(c["completed"]), c["note"]) for c in report["calls"]
        ])  # fmt: skip
    else:
        parts.append(f"<p>{e(t('No calls in this scenario.'))}</p>")
    cost = _cost_rows(report)
    if cost:
        parts.append(f"<h2>{e(t('Sync cost by mesh size'))}</h2><p>{e(t(_COST_NOTE))}</p>")
        parts += _html_table([t(c) for c in _COST_TITLES], cost)
    parts.append(f"<h2>{e(t('Charts'))}</h2>")
    parts += [f"<p><img src='{e(name)}' alt='{e(name)}'></p>" for name in charts]
    parts.append(f"<h2>{e(t('Notes'))}</h2><ul>")
    parts += [f"<li>{e(n)}</li>" for n in report["notes"]] or [f"<li>{e(t('none'))}</li>"]
    parts.append(f"</ul><h2>{e(t('Convergence'))}</h2>")
    parts += _html_table((t("node"), t("store digest")),
                         [(k, v[:16]) for k, v in report["digests"].items()])  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    report: Mapping[str, Any], reach_times: Sequence[float], out: Path, *, lang: str = "en"
) -> Path:
    """Write the report files into ``out`` (created if needed); returns ``report.md``.

    ``report.md`` and ``report.html`` are in ``lang`` (``ja`` or ``en``), with human
    labels; ``report.json`` keeps its keys whatever the language.

    Raises:
        DrillError: ``out`` cannot be created or written, or an unknown language.
    """
    t = _translator(lang)
    try:
        out.mkdir(parents=True, exist_ok=True)
        charts = draw_charts(report, reach_times, out, t)
        (out / "report.json").write_text(
            json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        (out / "report.md").write_text(_markdown(report, charts, t), encoding="utf-8")
        (out / "report.html").write_text(_html(report, charts, t, lang), encoding="utf-8")
    except OSError as exc:
        raise DrillError(f"cannot write the report to {out}: {exc}") from exc
    return out / "report.md"
