"""Consent changes reseal, across five whole nodes over TLS on the loopback.

A relay that is not in the case's audience adds a department to the consent: it
cannot grant the key itself, so an audience member grants it on receipt, and the new
department reads the case without anyone acting. A withdrawn department reads what
it read before, but no note written after the withdrawal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from loopback import loopback_config
from waits import AsyncWaitUntil

from meshdesk import control
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node

NAMES = ("本部", "shelter", "welfare", "housing", "relay")


@pytest.fixture
async def five(tmp_path: Path) -> AsyncIterator[dict[str, NodeHome]]:
    specs = [
        HomeSpec("本部", Role.HQ, "市役所", folder="hq"),
        HomeSpec("shelter", Role.CENTER, "第一小学校"),
        HomeSpec("welfare", Role.DESK, "市役所", ("福祉課",)),
        HomeSpec("housing", Role.DESK, "市役所", ("住宅課",)),
        HomeSpec("relay", Role.CENTER, "第二小学校"),
    ]
    deployment = await build_deployment(tmp_path, "同意市", specs, now=dt.datetime.now(dt.UTC))
    homes = dict(deployment.homes)
    async with AsyncExitStack() as stack:
        hq = await stack.enter_async_context(
            Node(homes["本部"], loopback_config(homes["本部"], []))
        )
        peer = [f"127.0.0.1:{hq.listener.port}"]
        for name in NAMES[1:]:
            await stack.enter_async_context(Node(homes[name], loopback_config(homes[name], peer)))
        yield homes


async def test_consent_changes_reseal_on_receipt(
    five: dict[str, NodeHome], async_wait_until: AsyncWaitUntil
) -> None:
    async def call(name: str, op: str, args: dict[str, Any]) -> Any:
        return await control.call(five[name].control_socket, op, args)

    created = await call(
        "shelter",
        "case_new",
        {"operator": "佐藤", "category": "housing", "urgency": "high", "name": "高橋 ミツ",
         "summary": "屋根が壊れた", "consent": ["福祉課"]},
    )  # fmt: skip
    case_id = created["id"]

    async def view(name: str) -> dict[str, Any] | None:
        try:
            return dict(await call(name, "case_show", {"id": case_id}))
        except MeshdeskError:  # not arrived yet
            return None

    async def reads(name: str, notes: int) -> bool:
        shown = await view(name)
        return bool(shown and shown["readable"] and len(shown["notes"]) == notes
                    and all(n["text"] is not None for n in shown["notes"]))  # fmt: skip

    await async_wait_until(lambda: reads("welfare", 1), 15)
    await async_wait_until(lambda: view("relay"), 15)
    shown = await view("housing")
    assert shown is None or not shown["readable"]

    # The relay is not in the audience: it records the consent but cannot grant.
    await call("relay", "case_consent", {"id": case_id, "operator": "受付", "department": "住宅課"})
    await async_wait_until(lambda: reads("housing", 1), 15)
    trail = await call("本部", "case_history", {"id": case_id})
    grants = [r for r in trail["events"] if r["action"] == "keys granted"]
    assert grants, trail
    assert all(r["op"] == "meshdesk (automatic)" for r in grants)
    assert {r["name"] for r in grants} <= {"本部", "shelter", "welfare"}

    # Withdrawn: welfare keeps what it read, but not what is written afterwards.
    await call("shelter", "case_withdraw", {"id": case_id, "operator": "佐藤",
                                            "department": "福祉課"})  # fmt: skip
    await call("shelter", "case_note", {"id": case_id, "operator": "佐藤", "text": "修理の見積り"})
    await async_wait_until(lambda: reads("housing", 2), 15)
    for name in ("本部", "shelter", "housing"):
        assert await reads(name, 2), name

    async def welfare_has_both() -> bool:
        shown = await view("welfare")
        return bool(shown and len(shown["notes"]) == 2)

    await async_wait_until(welfare_has_both, 15)
    welfare = await view("welfare")
    assert welfare is not None
    assert welfare["consent"] == ["住宅課"]
    assert [n["text"] for n in welfare["notes"]] == ["屋根が壊れた", None]
    assert welfare["readable"]  # the personal block it was granted before stays readable
    kinds = {
        r["action"] for r in (await call("welfare", "case_history", {"id": case_id}))["events"]
    }
    assert {"consent added", "consent withdrawn", "keys granted"} <= kinds

    # An export at a centre (open fields only there) is a signed event that reaches HQ,
    # where the case's trail names it.
    out = five["relay"].path / "cases.csv"
    with pytest.raises(MeshdeskError, match="export_roles"):
        await call("relay", "case_export", {"operator": "受付", "format": "csv",
                                            "out": str(out), "personal": True})  # fmt: skip
    done = await call("relay", "case_export", {"operator": "受付", "format": "csv",
                                               "out": str(out), "site": "第一小学校"})  # fmt: skip
    assert done["rows"] == 1

    async def hq_knows_the_export() -> bool:
        trail = await call("本部", "case_history", {"id": case_id})
        return any(r["action"] == "exported" and r["name"] == "relay" for r in trail["events"])

    await async_wait_until(hq_knows_the_export, 15)
