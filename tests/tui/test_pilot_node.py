"""Pilot tests of the console against real in-process nodes over the control socket."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Select
from waits import AsyncWaitUntil

from meshdesk.cases.model import Personal
from meshdesk.cli import main as cli_main
from meshdesk.config import Config, Timings, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.node import Node
from meshdesk.tui import MeshdeskApp, SocketNode
from meshdesk.tui.run import attach_or_start
from meshdesk.tui.screens import CaseFormScreen, QueueScreen
from meshdesk.tui.widgets import Banner, CaseTable
from meshdesk.tui.widgets.conflict import ConflictView

NOW = dt.datetime.now(dt.UTC)
FAST = Timings(heartbeat_interval=0.2, dead_after=1.0, connect_timeout=2.0, reconnect_min=0.1)
SIZE = (120, 36)


def _config(home: NodeHome, peers: list[str]) -> Config:
    base = replace(load_config(home.config_path), timings=FAST)
    return base.with_overrides(
        listen="127.0.0.1:0",
        static_peers=peers,
        mdns=False,
        web_listen="127.0.0.1:0",
        web_redirect="127.0.0.1:0",
    )


@pytest.fixture
async def homes(tmp_path: Path) -> dict[str, NodeHome]:
    specs = [
        HomeSpec("本部", Role.HQ, "市役所", folder="hq"),
        HomeSpec("避難所", Role.CENTER, "大町", ("福祉課",), folder="centre"),
    ]
    city = await build_deployment(tmp_path, "テスト市", specs, now=NOW)
    hq, centre = city.homes["本部"], city.homes["避難所"]
    return {"hq": hq, "centre": centre}


@pytest.fixture
async def hq(homes: dict[str, NodeHome]) -> AsyncIterator[Node]:
    async with Node(homes["hq"], _config(homes["hq"], [])) as node:
        yield node


def centre_node(homes: dict[str, NodeHome], hq: Node) -> Node:
    return Node(homes["centre"], _config(homes["centre"], [f"127.0.0.1:{hq.listener.port}"]))


async def settle(pilot: Any, until: Callable[[], object], message: str, tries: int = 250) -> None:
    for _ in range(tries):
        await pilot.pause(0.04)
        result = until()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
    raise AssertionError(f"never happened: {message}")


def console(node: Node) -> MeshdeskApp:
    api = SocketNode(node.home.control_socket)
    return MeshdeskApp(api, lang="ja", operator="鈴木", poll_interval=0.3, retry=(0.1, 0.3))


async def test_create_and_refer_a_case_on_a_real_node(hq: Node, homes: dict[str, NodeHome]) -> None:
    async with centre_node(homes, hq) as centre:
        app = console(hq)
        async with app.run_test(size=SIZE) as pilot:
            await settle(
                pilot,
                lambda: any(p["state"] == "linked" for p in app.desk.peers.values()),
                "the centre shows as linked",
            )
            await pilot.press("ctrl+n")
            form = app.screen
            assert isinstance(form, CaseFormScreen)
            form.query_one("#f-name", Input).value = "高橋 三郎"
            form.query_one("#f-category", Select).value = "housing"
            form.query_one("#f-urgency", Select).value = "high"
            await pilot.press("ctrl+s")
            await settle(pilot, lambda: app.desk.counts.get("total") == 1, "the case counted")
            await pilot.press("f2")
            await settle(pilot, lambda: len(app.desk.window) == 1, "the case in the queue")
            case_id = app.desk.window.rows[0].id
            state = await hq.cases.state(case_id)
            assert str(state.urgency) == "high"
            assert state.history[0].op == "鈴木"
            # it replicates to the centre
            await settle(pilot, lambda: _has(centre, case_id), "case synced to the centre")

            await pilot.press("f2")
            assert isinstance(app.screen, QueueScreen)
            app.screen.query_one(CaseTable).focus()
            await pilot.press("enter")
            await settle(
                pilot,
                lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
                "case form open",
            )
            app.screen.query_one("#refer-dept", Select).value = "福祉課"
            app.screen.query_one("#refer-reason", Input).value = "介護が必要"
            await pilot.click("#refer")

            async def referred() -> bool:
                return bool((await hq.cases.state(case_id)).referrals)

            await settle(pilot, referred, "referral written on the node")
            assert (await hq.cases.state(case_id)).referrals[0].department == "福祉課"


async def _has(node: Node, case_id: str) -> bool:
    return case_id in await node.store.case_ids()


async def test_resolve_a_real_conflict_with_one_key(
    hq: Node, homes: dict[str, NodeHome], async_wait_until: AsyncWaitUntil
) -> None:
    async with centre_node(homes, hq) as centre:
        case = await hq.cases.open_case(
            op="a",
            category="medical",
            urgency="normal",
            personal=Personal(name="X"),
        )
        await async_wait_until(lambda: _has(centre, case.id), 10, message="the case synced")
    # The centre is offline: both sides change the urgency without seeing each other.
    await hq.cases.set_field(case.id, op="本部の人", field="urgency", value="high")
    code = await asyncio.to_thread(
        cli_main,
        [
            "case",
            "set",
            "--home",
            str(homes["centre"].path),
            "--operator",
            "避難所の人",
            case.id,
            "--field",
            "urgency",
            "--value",
            "immediate",
        ],
    )
    assert code == 0
    async with centre_node(homes, hq):
        app = console(hq)
        async with app.run_test(size=SIZE) as pilot:

            async def conflicted() -> bool:
                return (await hq.cases.state(case.id)).conflict("urgency") is not None

            await settle(pilot, conflicted, "the two writes meet at HQ")
            app.open_case(case.id)
            await settle(
                pilot,
                lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
                "case form open",
            )
            view = app.screen.query_one(ConflictView)
            await settle(pilot, lambda: view.has_focus, "conflict view focused")
            shown = str(view.render())
            assert "緊急" in shown
            assert "高" in shown
            values = [c["value"] for c in view.conflicts[0]["candidates"]]
            await pilot.press("2")

            async def resolved() -> bool:
                return (await hq.cases.state(case.id)).conflict("urgency") is None

            await settle(pilot, resolved, "conflict resolved by one key")
            assert str((await hq.cases.state(case.id)).urgency) == values[1]


async def test_events_from_the_mesh_and_a_node_restart(homes: dict[str, NodeHome]) -> None:
    """A case made at the centre reaches the HQ console by sync events alone; when the
    HQ node stops the banner shows, and when it is back the console reconnects."""
    hq_home = homes["hq"]
    node = await Node(hq_home, _config(hq_home, [])).__aenter__()
    try:
        app = console(node)
        async with app.run_test(size=SIZE) as pilot:
            banner = app.screen.query_one(Banner)
            await settle(pilot, lambda: app.desk.connected, "connected")
            async with centre_node(homes, node) as centre:
                await centre.cases.open_case(
                    op="c", category="supplies", urgency="high", personal=Personal(name="B")
                )
                await settle(
                    pilot,
                    lambda: app.desk.counts.get("total") == 1,
                    "the centre's case reached the HQ console",
                )
            await node.aclose()
            await settle(pilot, lambda: banner.shown, "banner shown while the node is down")
            node = await Node(hq_home, _config(hq_home, [])).__aenter__()
            await settle(pilot, lambda: not banner.shown, "reconnected by itself")
            assert app.is_running
    finally:
        await node.aclose()


async def test_attach_or_start_runs_a_node_when_none_answers(
    homes: dict[str, NodeHome],
) -> None:
    home = homes["hq"]
    config = _config(home, [])
    async with attach_or_start(home, config) as api:
        status = await api.status()
        assert status["name"] == "本部"
        # A second console attaches to the node the first one started.
        async with attach_or_start(home, config) as again:
            assert isinstance(again, SocketNode)
            assert (await again.status())["node_id"] == status["node_id"]
    assert not home.control_socket.exists()  # stopped when the console quit
