"""Listing cases from the case index: pages, cursors, filters, orders, search, counts;
and nothing personal in the store file or its WAL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from waits import AsyncWaitUntil

from meshdesk.cases.book import CaseBook
from meshdesk.cases.model import Personal
from meshdesk.cases.summary import case_store
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import UsageError
from meshdesk.identity import NodeInfo, Role
from meshdesk.ops import CASE_OPS, OPS
from meshdesk.store import CaseQuery, Store

NOW = dt.datetime.now(dt.UTC)
SITES = ("第一小学校", "Civic Gym", "南公民館")
URGENCIES = ("immediate", "high", "normal", "low")
NAMES = ("山田 花子", "佐藤 太郎", "Nguyen Van An", "鈴木 一郎", "高橋 美咲")


class Desk:
    """An HQ's book on its own store, and a way to run case operations on it."""

    def __init__(self, store: Store, book: CaseBook) -> None:
        self.store, self.book = store, book
        self.dispatch = OPS.serve(CASE_OPS.bind(book), complete=False)

    async def op(self, op: str, /, **args: Any) -> Any:
        return await self.dispatch.run(op, args)


@pytest.fixture(params=["listed", "probed"])
async def desk(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Desk]:
    """An HQ desk; search words either listed first or tested row by row (as a store
    of a million cases tests the words most cases match)."""
    city = await build_deployment(tmp_path, "秋田市", [HomeSpec("本部", Role.HQ, site="市役所")],
                                  now=NOW)  # fmt: skip
    home = city.homes["本部"]
    kit = home.load_identity(now=NOW)
    clock = iter(range(1_795_300_000_000, 1_795_400_000_000, 1000))

    async def directory() -> list[NodeInfo]:
        return [kit.info]

    async with case_store(home.store_path) as store:
        book = CaseBook(store, kit, directory=directory, wall_ms=lambda: next(clock),
                        rng=random.Random(7))  # fmt: skip
        if request.param == "probed":
            store.index.dense = 1
        yield Desk(store, book)


async def fill(desk: Desk, count: int) -> list[dict[str, Any]]:
    """``count`` cases at three sites, every urgency; every third in progress."""
    made = []
    for i in range(count):
        case = await desk.op(
            "case_new", operator="佐藤", category=("medical", "housing")[i % 2],
            urgency=URGENCIES[i % 4], name=NAMES[i % len(NAMES)], phone=f"090-0000-{i:04d}",
            department="福祉課" if i % 5 == 0 else None,
        )  # fmt: skip
        if i % 3 == 0:
            case = await desk.op(
                "case_status", id=case["id"], operator="佐藤", status="in_progress"
            )
        made.append(case)
    return made


async def every_page(desk: Desk, **args: Any) -> list[dict[str, Any]]:
    seen, after = [], None
    while True:
        page = await desk.op("case_list", **args, after=after)
        seen += page["cases"]
        after = page["next"]
        if after is None:
            return seen


def urgency_order(cases: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for c in sorted(cases, key=lambda c: (URGENCIES.index(c["urgency"]),
                                                          c["created_at"], c["id"]))]  # fmt: skip


async def test_pages_walk_the_whole_list_both_ways_most_urgent_first(desk: Desk) -> None:
    made = await fill(desk, 23)
    forward = await every_page(desk, limit=5)
    assert [c["id"] for c in forward] == urgency_order(made)
    # back from the last page with prev cursors: the same list
    last = await desk.op("case_list", limit=5, after=forward[-6]["id"])
    back, before = list(last["cases"]), last["prev"]
    while before is not None:
        page = await desk.op("case_list", limit=5, before=before)
        back = page["cases"] + back
        before = page["prev"]
    assert [c["id"] for c in back] == [c["id"] for c in forward]
    # the last group of an id is cursor enough (what the CLI prints)
    short = await desk.op("case_list", limit=5, after=forward[4]["id"][24:])
    assert short["cases"][0]["id"] == forward[5]["id"]
    with pytest.raises(UsageError, match="no case"):
        await desk.op("case_list", after="ffffffff")
    with pytest.raises(UsageError, match="not both"):
        await desk.op("case_list", after=forward[0]["id"], before=forward[1]["id"])


async def test_filters_orders_and_counts(desk: Desk) -> None:
    made = await fill(desk, 20)
    by_id = {c["id"]: c for c in made}
    high = await every_page(desk, urgency="high")
    assert {c["id"] for c in high} == {c["id"] for c in made if c["urgency"] == "high"}
    progress = await every_page(desk, status="in_progress", category="medical")
    assert progress
    assert all(
        by_id[c["id"]]["status"] == "in_progress" and c["category"] == "medical" for c in progress
    )
    welfare = await every_page(desk, department="福祉課")
    assert len(welfare) == 4
    page = await desk.op("case_list", status="new", count=True, limit=2)
    assert page["matched"] == sum(1 for c in made if c["status"] == "new")
    newest_first = await every_page(desk, sort="opened", reverse=True)
    assert [c["id"] for c in newest_first] == sorted(by_id, reverse=True)  # UUIDv7: time order
    assert await every_page(desk, since="2999-01-01") == []
    assert len(await every_page(desk, since="2000-01-01")) == 20
    counts = await desk.op("case_counts")
    assert counts["total"] == 20
    assert sum(c["cases"] for c in counts["counts"] if c["status"] == "in_progress") == 7
    with pytest.raises(UsageError, match="since"):
        await desk.op("case_list", since="yesterday")


async def test_search_words_match_names_ids_sites_and_labels(desk: Desk) -> None:
    made = await fill(desk, 10)
    await desk.book.listing.index_search()
    yamada = await every_page(desk, search="山田")
    assert {c["name"] for c in yamada} == {"山田 花子"}
    assert len(yamada) == 2
    assert {c["name"] for c in await every_page(desk, search="やまだ")} == set()  # no reading
    assert {c["name"] for c in await every_page(desk, search="nguyen")} == {"Nguyen Van An"}
    two = await every_page(desk, search="花子 山田")  # two name words: both must match
    assert {c["id"] for c in two} == {c["id"] for c in yamada}
    assert await every_page(desk, search="花子 佐藤") == []
    both = await every_page(desk, search="山田 医療")  # a name and a category label
    assert all(c["category"] == "medical" and c["name"] == "山田 花子" for c in both)
    tail = made[3]["id"][24:31]
    assert [c["id"] for c in await every_page(desk, search=tail)] == [made[3]["id"]]
    assert len(await every_page(desk, search="市役所")) == 10  # the site
    spaced = await every_page(desk, search="山田花子")  # spaces and width do not matter
    assert {c["id"] for c in spaced} == {c["id"] for c in yamada}
    nguyen = {c["id"] for c in made if c["name"] == "Nguyen Van An"}
    assert {c["id"] for c in await every_page(desk, search="ＮＧＵＹＥＮ")} == nguyen
    # a fragment coincidence: 山田 and 田中 share 田; "山田中" is in no name
    assert await every_page(desk, search="山田中") == []


async def test_search_terms_follow_a_changed_personal_block(desk: Desk) -> None:
    case = await desk.op("case_new", operator="佐藤", category="medical", urgency="high",
                         name="木村 一")  # fmt: skip
    assert await desk.book.listing.index_search() == 1
    assert len(await every_page(desk, search="木村")) == 1
    assert await desk.book.listing.index_search() == 0  # nothing left to do
    state = await desk.book.state(case["id"])
    assert state.personal_sealed is not None
    assert await desk.store.index.search_backlog() == 0
    assert (await desk.store.index.summary(case["id"])) is not None


async def test_nothing_personal_reaches_the_store_file_or_its_wal(desk: Desk) -> None:
    secrets = {"name": "秘密 ゆうこ", "phone": "070-9876-5432", "note": "持病の記録メモ"}
    case = await desk.op(
        "case_new", operator="佐藤", category="medical", urgency="high", name=secrets["name"],
        phone=secrets["phone"], summary=secrets["note"], shelter="第九体育館",
    )  # fmt: skip
    await desk.op("case_note", id=case["id"], operator="佐藤", text=secrets["note"] + "2")
    await desk.book.listing.index_search()
    assert (await every_page(desk, search="ゆうこ"))[0]["phone"] == secrets["phone"]
    path = desk.store.path
    files = [path, path.with_name(path.name + "-wal")]
    data = b"".join(f.read_bytes() for f in files if f.exists())
    assert len(data) > 10_000  # the files were read, WAL included
    for text in [*secrets.values(), "第九体育館", "ゆうこ", "秘密"]:
        assert text.encode() not in data, text
        assert text.encode("utf-16-le") not in data, text


async def test_the_index_survives_reopening_and_counts_are_cheap(tmp_path: Path) -> None:
    city = await build_deployment(tmp_path, "秋田市", [HomeSpec("本部", Role.HQ, site="市役所")],
                                  now=NOW)  # fmt: skip
    home = city.homes["本部"]
    kit = home.load_identity(now=NOW)

    async def directory() -> list[NodeInfo]:
        return [kit.info]

    async with case_store(home.store_path) as store:
        book = CaseBook(store, kit, directory=directory, wall_ms=lambda: 1_795_300_000_000)
        await book.open_case(op="a", category="other", urgency="low", personal=Personal(name="X"))
    async with case_store(home.store_path) as store:
        page = await store.index.page(CaseQuery())
        assert page is not None
        assert [r.urgency for r in page.rows] == ["low"]
        assert (await store.counts()).cases == 1
        assert (await store.counts()).events == 1


async def test_search_terms_wait_for_a_catch_up_but_never_for_long(
    desk: Desk, async_wait_until: AsyncWaitUntil
) -> None:
    """Background search yields while runs are being stored (their commits need the
    processor), and works off its backlog once they stop — or after ``yield_for``
    even if they never do."""
    await desk.op("case_new", operator="佐藤", category="medical", urgency="high",
                  name="木村 一")  # fmt: skip
    assert await desk.store.index.search_backlog() == 1
    syncing = True

    async def drained() -> bool:
        return await desk.store.index.search_backlog() == 0

    async def catch_up() -> None:  # a sync storing a run every few milliseconds
        while syncing:
            desk.store.appended_at = time.monotonic()
            await asyncio.sleep(0.005)

    sync = asyncio.create_task(catch_up())
    search = asyncio.create_task(desk.book.listing.run(idle=0.2, pause=0.01, yield_for=60))
    try:
        for _ in range(30):  # many turns of the search loop, each one yielding
            await asyncio.sleep(0.01)
        assert await desk.store.index.search_backlog() == 1
        syncing = False
        await sync
        await async_wait_until(drained, 10)
    finally:
        search.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await search
    # A catch-up that never ends still lets search through after yield_for.
    await desk.op("case_new", operator="佐藤", category="housing", urgency="low",
                  name="森 二郎")  # fmt: skip
    syncing = True
    sync = asyncio.create_task(catch_up())
    search = asyncio.create_task(desk.book.listing.run(idle=0.2, pause=0.01, yield_for=0.1))
    try:
        await async_wait_until(drained, 10)
        assert not sync.done()
    finally:
        syncing = False
        search.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await search
        await sync
