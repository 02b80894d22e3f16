"""Snapshots of the main layouts in both languages (fixed clock, ids and size).

Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
and look at the SVGs in ``__snapshots__``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from meshdesk.tui import MeshdeskApp
from meshdesk.tui.fake import FakeNode

SIZE = (120, 36)
Compare = Callable[..., bool]

CASES = [
    ("山田 花子", "immediate", "medical", "大町地区"),
    ("John Smith", "high", "housing", "Minami ward"),
    ("佐藤 一郎", "normal", "welfare_eldercare", "大町地区"),
    ("Maria Garcia", "low", "supplies", "Minami ward"),
]


def deployment() -> FakeNode:
    fake = FakeNode()
    fake.add_peer("第一小学校避難所", "大町地区", departments=("welfare",), outbox=4, inbox=1)
    fake.add_peer("Civic Gym shelter", "Minami ward", state="down", outbox=12)
    fake.peer_list[1]["last_seen_ms"] = fake.now_ms() - 95_000

    async def fill() -> None:
        for name, urgency, category, shelter in CASES:
            await fake.case(
                "new",
                {
                    "operator": "op",
                    "name": name,
                    "urgency": urgency,
                    "category": category,
                    "shelter": shelter,
                },
            )

    asyncio.run(fill())
    return fake


def app(fake: FakeNode, lang: str) -> MeshdeskApp:
    return MeshdeskApp(fake, lang=lang, operator="op", now_ms=fake.now_ms, poll_interval=60)  # type: ignore[arg-type]


async def _loaded(pilot: Pilot[Any]) -> None:
    for _ in range(100):
        await pilot.pause(0.02)
        desk = pilot.app.desk  # type: ignore[attr-defined]
        if desk.counts.get("total") == len(CASES) and desk.peers and desk.sync:
            break
    await pilot.pause(0.1)


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_dashboard(snap_compare: Compare, lang: str) -> None:
    assert snap_compare(app(deployment(), lang), terminal_size=SIZE, run_before=_loaded)


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_case_queue(snap_compare: Compare, lang: str) -> None:
    async def queue(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        await pilot.press("f2")
        for _ in range(100):
            await pilot.pause(0.02)
            window = pilot.app.desk.window  # type: ignore[attr-defined]
            if len(window) == len(CASES) and window.matched is not None:
                break
        await pilot.pause(0.1)

    assert snap_compare(app(deployment(), lang), terminal_size=SIZE, run_before=queue)


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_case_form_with_a_conflict(snap_compare: Compare, lang: str) -> None:
    fake = deployment()
    case_id = next(iter(fake.cases))
    fake.inject_conflict(case_id, "urgency", [("immediate", "SHELTER1"), ("high", "HQ00001")])

    async def form(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        pilot.app.open_case(case_id)  # type: ignore[attr-defined]
        for _ in range(100):
            await pilot.pause(0.02)
            if getattr(pilot.app.screen, "case", None):
                break
        await pilot.pause(0.1)

    assert snap_compare(app(fake, lang), terminal_size=SIZE, run_before=form)


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_call(snap_compare: Compare, lang: str) -> None:
    fake = deployment()

    async def call(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        await pilot.press("f3", "c", "enter")
        for _ in range(100):
            await pilot.pause(0.02)
            if fake.calls_by_id:
                break
        fake.tick_calls()
        await pilot.pause(1.3)  # one preview poll

    assert snap_compare(app(fake, lang), terminal_size=SIZE, run_before=call)
