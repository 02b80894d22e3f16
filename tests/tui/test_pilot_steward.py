"""The console's stewardship: erasing in two deliberate steps, and a case's history."""

from __future__ import annotations

from pathlib import Path

from test_pilot_fake import NEW, SIZE, app_for, settle
from textual.widgets import Button, Checkbox, Input, Select, Static

from meshdesk.tui.fake import FakeNode
from meshdesk.tui.screens import CaseFormScreen, QueueScreen
from meshdesk.tui.screens.steward import EraseScreen, ExportScreen, HistoryScreen


async def test_erase_needs_a_reason_and_the_button_and_history_lists_it(fake: FakeNode) -> None:
    case = await fake.case("new", {**NEW, "name": "山田 花子"})
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        app.open_case(case["id"])
        await settle(
            pilot,
            lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
            "case form open",
        )
        await pilot.press("ctrl+e")
        await settle(pilot, lambda: isinstance(app.screen, EraseScreen), "confirmation shown")
        await pilot.press("escape")  # cancelled: nothing happens
        await settle(pilot, lambda: isinstance(app.screen, CaseFormScreen), "back on the form")
        assert fake.cases[case["id"]]["name"] == "山田 花子"

        await pilot.press("ctrl+e")
        await settle(pilot, lambda: isinstance(app.screen, EraseScreen), "confirmation again")
        await pilot.click("#erase-confirm")  # no reason yet: refused
        await settle(
            pilot,
            lambda: any("reason" in n.message for n in app._notifications),
            "reason asked for",
        )
        assert isinstance(app.screen, EraseScreen)
        app.screen.query_one("#erase-reason", Input).value = "本人の申出"
        app.screen.query_one("#erase-confirm", Button).press()
        await settle(pilot, lambda: fake.cases[case["id"]]["name"] is None, "erased")
        form = app.screen
        assert isinstance(form, CaseFormScreen)
        await settle(
            pilot,
            lambda: "Erased" in str(form.query_one("#details", Static).render()),
            "the form says so",
        )

        await pilot.press("ctrl+t")
        await settle(pilot, lambda: isinstance(app.screen, HistoryScreen), "history shown")
        lines = str(app.screen.query_one("#history-lines", Static).render())
        assert "suzuki" in lines
        assert "kind 30" in lines
        await pilot.press("escape")
        await settle(pilot, lambda: isinstance(app.screen, CaseFormScreen), "history closed")


async def test_export_from_the_queue_with_its_filters(fake: FakeNode, tmp_path: Path) -> None:
    await fake.case("new", {**NEW, "name": "山田 花子"})
    await fake.case("new", {**NEW, "urgency": "low", "name": "佐藤 一郎"})
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        queue = app.screen
        assert isinstance(queue, QueueScreen)
        await settle(pilot, lambda: len(queue.table.rows) == 2, "queue filled")
        queue.urgency = "high"
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(app.screen, ExportScreen), "export dialog")
        dialog = app.screen
        out = dialog.query_one("#export-out", Input)
        assert out.value.endswith(".csv")
        dialog.query_one("#export-format", Select).value = "xlsx"
        await settle(pilot, lambda: out.value.endswith(".xlsx"), "suffix follows the format")
        out.value = str(tmp_path / "高.xlsx")
        dialog.query_one("#export-personal", Checkbox).value = True
        dialog.query_one("#export-confirm", Button).press()
        await settle(pilot, lambda: fake.exports, "export asked of the node")
        assert fake.exports[0] == {
            **fake.exports[0],
            "format": "xlsx",
            "urgency": "high",
            "personal": True,
            "out": str(tmp_path / "高.xlsx"),
            "operator": "suzuki",
        }
        await settle(
            pilot,
            lambda: any("Exported 1 cases" in n.message for n in app._notifications),
            "result shown",
        )
