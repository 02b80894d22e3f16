"""The console places a real call: nodes run ``meshdesk run`` in lab namespaces (aioice
ignores loopback), the console runs here and talks to the caller's control socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _nodes import LabFactory, RunningNode, all_linked, deployment, hq_spec, member, start_node
from textual.widgets import OptionList

from meshdesk.config import CallSettings, Config
from meshdesk.identity import Role
from meshdesk.lab import Lab
from meshdesk.tui import MeshdeskApp, SocketNode
from meshdesk.tui.screens import CallScreen, PickScreen
from meshdesk.tui.widgets import VideoPreview

if TYPE_CHECKING:
    from waits import WaitUntil

pytestmark = pytest.mark.lab

LINKED_WITHIN = 15.0


async def settle(pilot: Any, until: Callable[[], object], message: str, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if until():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"never happened within {seconds} s: {message}")


def _pick(app: MeshdeskApp, node_id_or_value: str) -> None:
    options = app.screen.query_one(OptionList)
    for index in range(options.option_count):
        if options.get_option_at_index(index).id == node_id_or_value:
            options.highlighted = index
            return
    raise AssertionError(f"{node_id_or_value} is not offered")


def _deployment(lab: Lab, tmp_path: Path, wait_until: WaitUntil) -> list[RunningNode]:
    calls = Config(calls=CallSettings(auto_accept=True, media="synthetic"))
    city = deployment(
        tmp_path / "city",
        "City",
        hq_spec("hq", config=calls),
        member("centre", config=calls),
        member("welfare", role=Role.DESK, depts=["福祉課"], config=calls),
    )
    nodes = [
        start_node(lab, f"h{index + 1}", name, city.homes[name], wait_until=wait_until)
        for index, name in enumerate(["hq", "centre", "welfare"])
    ]
    wait_until(all_linked(nodes), timeout=LINKED_WITHIN, message="every node linked")
    return nodes


async def test_console_starts_mutes_invites_and_ends_a_real_call(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(3)
    # The lab helpers run their own event loops: set up in a thread.
    nodes = await asyncio.to_thread(_deployment, lab, tmp_path, wait_until)
    hq, centre, _ = nodes

    app = MeshdeskApp(SocketNode(hq.control_socket), lang="en", operator="op", poll_interval=0.5)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f3")
        assert isinstance(app.screen, CallScreen)
        await settle(pilot, lambda: len(app.desk.peers) == 2 and app.desk.directory, "peers", 10)
        await pilot.press("c")
        assert isinstance(app.screen, PickScreen)
        centre_id = next(p["node_id"] for p in app.desk.peers.values() if p["name"] == "centre")
        _pick(app, centre_id)
        await pilot.press("enter")

        def call() -> dict[str, Any]:
            return next(iter(app.desk.calls.values()), {})

        await settle(pilot, lambda: call().get("state") == "active", "call active", 30)
        preview = app.screen.query_one(VideoPreview)
        await settle(pilot, lambda: preview.frame is not None, "video preview drawn", 20)

        await pilot.press("m")
        await settle(pilot, lambda: call()["participants"][0]["muted_audio"], "muted", 10)

        await pilot.press("i")
        assert isinstance(app.screen, PickScreen)
        _pick(app, "福祉課")
        await pilot.press("enter")
        await settle(
            pilot,
            lambda: any(
                p["name"] == "welfare" and p["state"] == "connected" for p in call()["participants"]
            ),
            "the welfare desk joined",
            30,
        )

        await pilot.press("h")
        await settle(pilot, lambda: call().get("state") == "ended", "hung up", 15)
    ended = await asyncio.to_thread(hq.call, "calls")
    assert ended[0]["state"] == "ended"
    assert {p["name"] for p in ended[0]["participants"]} == {"hq", "centre", "welfare"}
    # The callee saw the same call, placed from the console.
    theirs = await asyncio.to_thread(centre.call, "calls")
    assert [c["call_id"] for c in theirs] == [ended[0]["call_id"]]
    assert theirs[0]["direction"] == "incoming"
