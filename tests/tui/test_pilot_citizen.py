"""Pilot tests of the citizen flow in the console, against the fake node (issue 13).

Staff invite a citizen's phone from the case form and from the call screen (a QR
code to show), the console rings with the 4-digit code when the citizen waits, and
``y`` admits (the citizen joins the call) or ``n`` declines.
"""

from __future__ import annotations

from test_pilot_fake import NEW, SIZE, app_for, settle
from textual.widgets import DataTable, Static

from meshdesk.tui.fake import FakeNode
from meshdesk.tui.screens import CallScreen, CaseFormScreen, QrScreen
from meshdesk.tui.screens.citizen import qr_text


def _text(widget: Static) -> str:
    return str(widget.render())


async def test_invite_from_the_case_form_shows_the_qr_code(fake: FakeNode) -> None:
    case = await fake.case("new", {**NEW, "name": "山田 花子"})
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        app.open_case(case["id"])
        await settle(
            pilot,
            lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
            "case form open",
        )
        await pilot.press("ctrl+o")
        await settle(pilot, lambda: isinstance(app.screen, QrScreen), "QR code shown")
        (invite,) = fake.invites.values()
        assert invite["case_id"] == case["id"]
        assert isinstance(app.screen, QrScreen)
        assert _text(app.screen.query_one("#qr-url", Static)) == invite["url"]
        code = app.screen.query_one("#qr-code", Static)
        assert "█" in _text(code)
        await pilot.press("escape")
        await settle(pilot, lambda: isinstance(app.screen, CaseFormScreen), "back on the form")


async def test_citizen_waiting_rings_and_y_admits_into_a_call(fake: FakeNode) -> None:
    app = app_for(fake, lang="ja")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        assert isinstance(app.screen, CallScreen)
        await pilot.press("q")
        await settle(pilot, lambda: isinstance(app.screen, QrScreen), "QR code shown")
        await pilot.press("escape")
        (invite,) = fake.invites.values()
        assert invite["call_id"] is None  # no call yet: the admission starts one
        fake.citizen_waits(invite["invite_id"], code="4821")
        await settle(
            pilot,
            lambda: any("4821" in str(n.message) for n in app._notifications),
            "the console rings with the code",
        )
        screen = app.screen
        assert isinstance(screen, CallScreen)
        await settle(
            pilot, lambda: "4821" in _text(screen.query_one("#citizens", Static)), "listed"
        )
        assert "受付番号 4821" in _text(screen.query_one("#citizens", Static))
        await pilot.press("y")
        await settle(pilot, lambda: invite["state"] == "admitted", "admitted")
        parts = screen.query_one("#participants", DataTable)
        await settle(
            pilot,
            lambda: any("市民 4821" in str(parts.get_row_at(i)[0]) for i in range(parts.row_count)),
            "the citizen is in the call screen",
        )
        await settle(
            pilot, lambda: _text(screen.query_one("#citizens", Static)) == "", "nobody waits"
        )


async def test_n_declines_and_nothing_waiting_is_a_notice(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.press("y")
        await settle(
            pilot,
            lambda: any("No citizen is waiting" in str(n.message) for n in app._notifications),
            "told that nobody waits",
        )
        invite = await fake.request("invite_new", {"case": None, "call_id": None})
        fake.citizen_waits(invite["invite_id"], code="0042")
        await settle(pilot, lambda: "0042" in str(app.desk.citizens), "the console knows")
        await pilot.press("n")
        await settle(
            pilot,
            lambda: fake.invites[invite["invite_id"]]["state"] == "declined",
            "declined",
        )
        assert fake.calls_by_id == {}


def test_the_qr_code_is_dark_on_light_half_blocks() -> None:
    text = qr_text("https://192.168.10.5:7443/j/TOKEN")
    lines = text.plain.splitlines()
    assert len({len(line) for line in lines}) == 1  # a square grid, row by row
    assert set(text.plain) <= {"█", "▀", "▄", " ", "\n"}
    assert str(text.style) == "black on white"
