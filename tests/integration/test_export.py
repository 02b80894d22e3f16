"""Exports: CSV for Excel, XLSX, JSON lines and HXL, read back with openpyxl and libhxl;
personal fields only when asked, on allowed roles; every export a signed event."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hxl
import openpyxl
import pytest

from meshdesk.cases.book import CaseBook
from meshdesk.cases.events import EventKind, Exported, decode_body
from meshdesk.cases.model import Personal
from meshdesk.cases.summary import case_store
from meshdesk.config import RecordSettings
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import AuthError, UsageError
from meshdesk.identity import NodeInfo, Role
from meshdesk.ops import CASE_OPS, OPS
from meshdesk.store import CaseQuery, Store

T0 = 1_795_300_000_000
NAMES = ["山田 花子", "佐藤 一郎", "Nguyễn Văn An"]


@dataclass
class Desk:
    book: CaseBook
    store: Store
    tmp: Path

    async def export(self, fmt: str, **args: Any) -> dict[str, Any]:
        dispatcher = OPS.serve(CASE_OPS.bind(self.book), complete=False)
        out = self.tmp / f"cases.{fmt}"
        request = {"operator": "本部 鈴木", "format": fmt, "out": str(out), **args}
        return dict(await dispatcher.run("case_export", request))


async def _desk(tmp_path: Path, role: Role) -> AsyncIterator[Desk]:
    specs = [HomeSpec("本部", Role.HQ, "市役所"), HomeSpec("shelter", Role.CENTER, "第一小学校")]
    homes = (await build_deployment(tmp_path, "出力市", specs, now=dt.datetime.now(dt.UTC))).homes
    kits = {n: h.load_identity(now=dt.datetime.now(dt.UTC)) for n, h in homes.items()}

    async def known() -> list[NodeInfo]:
        return [k.info for k in kits.values()]

    name = "本部" if role is Role.HQ else "shelter"
    clock = iter(range(T0, T0 + 10**9, 1000))
    async with case_store(homes[name].store_path) as store:
        book = CaseBook(store, kits[name], directory=known, wall_ms=lambda: next(clock),
                        records=RecordSettings())  # fmt: skip
        for i, citizen in enumerate(NAMES):
            await book.open_case(
                op="佐藤",
                category=["medical", "housing", "supplies"][i],
                urgency=["immediate", "normal", "low"][i],
                personal=Personal(name=citizen, phone=f"090-0000-000{i}", age=70 + i),
                consent=["福祉課"] if i == 0 else [],
            )
        yield Desk(book, store, tmp_path)


@pytest.fixture
async def hq(tmp_path: Path) -> AsyncIterator[Desk]:
    async for desk in _desk(tmp_path, Role.HQ):
        yield desk


async def test_csv_opens_in_excel_and_keeps_personal_fields_out(hq: Desk) -> None:
    result = await hq.export("csv")
    assert result["rows"] == 3
    data = await asyncio.to_thread(Path(result["path"]).read_bytes)
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for UTF-8
    rows = list(csv.reader(data.decode("utf-8-sig").splitlines()))
    assert rows[0][:7] == ["相談ID", "受付日時", "最終更新", "拠点", "分類", "緊急度", "状況"]
    assert "氏名" not in rows[0]
    assert len(rows) == 4
    assert {r[5] for r in rows[1:]} == {"緊急", "通常", "低"}
    assert all(name.encode() not in data for name in NAMES)


async def test_xlsx_has_japanese_headers_widths_a_frozen_row_and_personal_fields(
    hq: Desk,
) -> None:
    result = await hq.export("xlsx", personal=True)
    assert result == {**result, "rows": 3, "readable": 3, "personal": True}
    book = openpyxl.load_workbook(result["path"])
    sheet = book.active
    assert sheet is not None
    assert sheet.freeze_panes == "A2"
    header = [c.value for c in sheet[1]]
    assert header[:2] == ["相談ID", "受付日時"]
    assert "氏名" in header
    assert sheet.column_dimensions["A"].width == pytest.approx(38, abs=1)
    names = {row[header.index("氏名")] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert names == set(NAMES)


async def test_json_lines_and_hxl_read_back(hq: Desk) -> None:
    result = await hq.export("json", personal=True, urgency="immediate")
    text = await asyncio.to_thread(Path(result["path"]).read_text, encoding="utf-8")
    lines = text.splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["山田 花子"]
    assert json.loads(lines[0])["urgency"] == "immediate"
    result = await hq.export("hxl")
    with hxl.data(result["path"], hxl.InputOptions(allow_local=True)) as source:
        tags = [column.display_tag for column in source.columns]
        rows = list(source)
    assert tags[:7] == ["#meta+id", "#date+reported", "#date+updated", "#loc+name",
                        "#sector", "#severity", "#status"]  # fmt: skip
    assert len(rows) == 3
    assert {row.get("#loc+name") for row in rows} == {"市役所"}


async def test_every_export_is_a_signed_event_and_roles_are_checked(
    hq: Desk, tmp_path: Path
) -> None:
    await hq.export("csv", site="市役所", status="new", personal=True)
    heads = await hq.store.heads()
    events = [e for author in heads for e in await hq.store.events_after(author, 0, 1000)]
    facts = [e for e in events if e.kind == EventKind.EXPORTED]
    assert len(facts) == 1
    assert facts[0].case_id is None
    fact = decode_body(facts[0].kind, facts[0].body)
    assert isinstance(fact, Exported)
    assert (fact.op, fact.format, fact.rows, fact.file) == ("本部 鈴木", "csv", 3, "cases.csv")
    assert "name" in fact.personal
    assert json.loads(fact.scope) == {"site": "市役所", "status": "new"}
    # Each case's trail names the exports that took it (their filters matched it then).
    await hq.export("json", urgency="immediate")
    page = await hq.store.index.page(CaseQuery(sort="opened"))
    assert page is not None
    trails = [await hq.book.steward.history(row.case_id) for row in page.rows]
    exported = [[r for r in trail if r["action"] == "exported"] for trail in trails]
    assert sorted(len(rows) for rows in exported) == [1, 1, 2]
    assert all(rows[0]["op"] == "本部 鈴木" for rows in exported)
    assert "3 cases to cases.csv (csv, personal: name" in str(exported[0][0]["detail"])
    with pytest.raises(UsageError, match="absolute"):
        await hq.book.steward.export(
            op="x", fmt="csv", out=Path("rel.csv"), query=CaseQuery(), personal=False, scope={}
        )


async def test_a_centre_may_export_open_fields_only(tmp_path: Path) -> None:
    async for centre in _desk(tmp_path, Role.CENTER):
        with pytest.raises(AuthError, match=r"export_roles"):
            await centre.export("csv", personal=True)
        assert not (tmp_path / "cases.csv").exists()
        assert (await centre.export("csv"))["rows"] == 3
