"""Announcements and messages between running nodes (issue 16, points 1 and 2).

HQ posts; the shelter's node stores it, writes a signed delivery receipt by itself,
shows a banner for a severe one until its operator acknowledges; the read receipt
travels back and HQ sees per site who has it, who read it, and who not yet (a node
that never linked). Messages are sealed to their recipients and come back with
delivered and read states.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from loopback import loopback_config
from waits import AsyncWaitUntil

from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.notices import NoticeKind


async def _ask(node: Node, op: str, **args: Any) -> Any:
    return await node.serve_ops().run(op, args)


async def test_an_announcement_reaches_a_shelter_and_its_receipts_come_back(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    city = await build_deployment(
        tmp_path,
        "告知市",
        [
            HomeSpec("本部", Role.HQ, site="市役所"),
            HomeSpec("避難所1", Role.CENTER, site="第一小学校", departments=("福祉",)),
            HomeSpec("避難所4", Role.CENTER, site="第四中学校"),  # never links
        ],
        now=dt.datetime.now(dt.UTC),
    )
    hq, shelter = city.homes["本部"], city.homes["避難所1"]
    async with Node(hq, loopback_config(hq, [])) as hq_node:
        peer = f"127.0.0.1:{hq_node.listener.port}"
        async with Node(shelter, loopback_config(shelter, [peer])) as node:
            posted = await _ask(
                hq_node, "announce_new", operator="山田", title="給水は14時に体育館で",
                body="ポリタンクをお持ちください。", title_en="Water at 14:00 at the gym",
                severity="severe", expires="6h",
            )  # fmt: skip
            notice = posted["id"]
            assert {s for s in posted["sites"]} == {"第一小学校", "第四中学校"}

            async def banner() -> list[str]:
                shown = await _ask(node, "announce_banner")
                return [a["id"] for a in shown["announcements"]]

            await async_wait_until(lambda: _has(banner(), notice), 15)
            shown = (await _ask(node, "announce_list"))["announcements"]
            assert [a["title_en"] for a in shown] == ["Water at 14:00 at the gym"]

            async def reach() -> dict[str, Any]:
                view: dict[str, Any] = await _ask(hq_node, "announce_show", id=notice)
                return view

            async def delivered() -> bool:
                row = (await reach())["sites"]["第一小学校"][0]
                return row["delivered_at"] is not None

            await async_wait_until(delivered, 15)
            await _ask(node, "announce_ack", id=notice[24:], operator="田中")
            assert await banner() == []  # acknowledged: the banner goes

            async def read_by() -> str | None:
                by: str | None = (await reach())["sites"]["第一小学校"][0]["read_by"]
                return by

            await async_wait_until(lambda: _equals(read_by(), "田中"), 15)
            view = await reach()
            assert [w["name"] for w in view["not_delivered"]] == ["避難所4"]
            assert view["not_delivered"][0]["last_seen"] is None

            # A sealed message from the shelter to HQ, naming a citizen.
            sent = await _ask(
                node,
                "message_send",
                operator="田中",
                to="本部",
                text="佐藤花子さんの薬が足りません",
            )
            hq_id = str(hq_node.kit.node_id)

            async def hq_inbox() -> list[dict[str, Any]]:
                msgs: list[dict[str, Any]] = (await _ask(hq_node, "message_list"))["messages"]
                return msgs

            await async_wait_until(lambda: _count(hq_inbox(), 1), 15)
            (received,) = await hq_inbox()
            assert received["text"] == "佐藤花子さんの薬が足りません"
            assert received["from"] == "避難所1"
            assert not received["outgoing"]
            await _ask(hq_node, "message_read", id=sent["id"], operator="山田")

            async def state() -> tuple[object, object]:
                (m,) = (await _ask(node, "message_list"))["messages"]
                (r,) = m["recipients"]
                assert r["node"] == hq_id
                return r["delivered_at"] is not None, r["read_by"]

            await async_wait_until(lambda: _equals(state(), (True, "山田")), 15)
            # Sealed at rest: the text is nowhere in the stored bodies.
            stored = await node.store.events_of_kinds([int(NoticeKind.MESSAGE)])
            assert stored
            assert all("佐藤花子".encode() not in e.body for e in stored)


async def _has(items: Any, wanted: str) -> bool:
    return wanted in await items


async def _equals(value: Any, wanted: object) -> bool:
    return bool(await value == wanted)


async def _count(items: Any, n: int) -> bool:
    return len(await items) == n
