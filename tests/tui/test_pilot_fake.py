"""Pilot tests of each screen's main actions against the fake node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.command import CommandPalette
from textual.widgets import DataTable, Input, OptionList, RichLog, Select, SelectionList, Static

from meshdesk.tui import MeshdeskApp
from meshdesk.tui.fake import FakeNode
from meshdesk.tui.screens import (
    CallScreen,
    CaseFormScreen,
    DashboardScreen,
    NoticesScreen,
    QueueScreen,
    SyncScreen,
)
from meshdesk.tui.widgets import Banner, CaseTable, VideoPreview
from meshdesk.tui.widgets.conflict import ConflictView

SIZE = (120, 36)

NEW = {"operator": "tanaka", "category": "medical", "urgency": "high"}


def app_for(fake: FakeNode, lang: str = "en") -> MeshdeskApp:
    return MeshdeskApp(
        fake,
        lang=lang,
        operator="suzuki",
        now_ms=fake.now_ms,  # type: ignore[arg-type]
        poll_interval=0.2,
        retry=(0.05, 0.1),
    )


async def settle(pilot: Any, until: Callable[[], object], message: str, tries: int = 100) -> None:
    for _ in range(tries):
        await pilot.pause(0.02)
        if until():
            return
    raise AssertionError(f"never happened: {message}")


def _palette_highlights(app: MeshdeskApp, text: str) -> bool:
    """The command palette is open and its highlighted hit mentions ``text``."""
    if not isinstance(app.screen, CommandPalette):
        return False
    hits = app.screen.query_one(OptionList)
    if hits.highlighted is None:
        return False
    return text in str(hits.get_option_at_index(hits.highlighted).prompt)


async def test_dashboard_shows_peers_counts_and_sync(fake: FakeNode) -> None:
    await fake.case("new", {**NEW, "name": "山田 花子"})
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, DashboardScreen)
        peers = app.screen.query_one("#peers", DataTable)
        await settle(pilot, lambda: peers.row_count == 3, "self and two peers listed")
        rows = [[str(c) for c in peers.get_row_at(i)] for i in range(3)]
        gym = next(r for r in rows if r[1] == "Civic Gym shelter")
        assert gym[2] == "down"
        assert gym[3] == "1 min ago"
        assert gym[4] == "12"
        counts = app.screen.query_one("#counts", DataTable)
        await settle(pilot, lambda: str(counts.get_row_at(1)[-1]) == "1", "the high case counted")
        fake.set_peer_state("Civic Gym shelter", "linked")
        await settle(
            pilot,
            lambda: any(
                str(peers.get_row_at(i)[2]) == "linked"
                and str(peers.get_row_at(i)[1]) == "Civic Gym shelter"
                for i in range(peers.row_count)
            ),
            "peer event repaints the link state",
        )


async def test_clock_warnings_quarantine_and_copies_are_shown(fake: FakeNode) -> None:
    fake.clock.update(
        skew_ms=-400 * 86_400_000 - 3 * 3_600_000,
        reference="HQ 本部",
        correction_ms=400 * 86_400_000,
        warning="the clock of this node is 400 d behind HQ 本部's",
    )
    gym = next(p for p in fake.peer_list if p["name"] == "Civic Gym shelter")
    gym.update(clock_offset_ms=2 * 86_400_000, twin="10.0.0.9:7420")
    fake.set_peer_state("Civic Gym shelter", "quarantined")
    app = app_for(fake, lang="ja")
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one(Banner)
        await settle(pilot, lambda: banner.shown, "the clock banner")
        text = str(banner.render())
        assert "400日 3時間遅れています" in text
        assert "HQ 本部" in text
        peers = app.screen.query_one("#peers", DataTable)

        def gym_link() -> str:
            for i in range(peers.row_count):
                row = [str(c) for c in peers.get_row_at(i)]
                if row[1] == "Civic Gym shelter":
                    return row[2]
            return ""

        await settle(pilot, lambda: "隔離中" in gym_link(), "quarantined peer")
        assert "時計が2日進み" in gym_link()
        assert "10.0.0.9:7420 の複製を拒否" in gym_link()
        fake.clock["warning"] = None
        await settle(pilot, lambda: not banner.shown, "the banner goes with the warning")


async def test_create_a_case_from_the_form(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, CaseFormScreen)
        await pilot.press("ctrl+s")  # empty form: refused with a notification, nothing sent
        await pilot.pause()
        assert not fake.cases
        assert any("name is required" in n.message for n in app._notifications)
        form = app.screen
        form.query_one("#f-name", Input).value = "佐藤 一郎"
        form.query_one("#f-age", Input).value = "72"
        form.query_one("#f-category", Select).value = "welfare_eldercare"
        form.query_one("#f-urgency", Select).value = "immediate"
        form.query_one("#f-consent", SelectionList).select("welfare")
        form.query_one("#f-summary", Input).value = "薬が切れた"
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: len(fake.cases) == 1, "case created")
        case = next(iter(fake.cases.values()))
        assert case["personal"]["age"] == 72
        assert case["consent"] == ["welfare"]
        assert case["urgency"] == "immediate"
        assert case["notes"][0]["text"] == "薬が切れた"
        assert case["history"][0]["op"] == "suzuki"
        await settle(pilot, lambda: not isinstance(app.screen, CaseFormScreen), "form closes")
        await pilot.press("f2")
        table = app.screen.query_one(CaseTable)
        await settle(pilot, lambda: len(table.rows) == 1, "the queue shows the new case")


async def test_refer_note_and_status_from_the_case_form(fake: FakeNode) -> None:
    case = await fake.case("new", {**NEW, "name": "Jane Roe"})
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        table = app.screen.query_one(CaseTable)
        await settle(pilot, lambda: len(table.rows) == 1, "queue filled")
        table.focus()
        await pilot.press("enter")
        await settle(
            pilot,
            lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
            "case form open",
        )
        form = app.screen
        form.query_one("#refer-dept", Select).value = "housing"
        form.query_one("#refer-reason", Input).value = "家屋全壊"
        await pilot.click("#refer")
        await settle(pilot, lambda: fake.cases[case["id"]]["referrals"], "referred")
        assert fake.cases[case["id"]]["referrals"][0]["department"] == "housing"
        form.query_one("#note", Input).focus()
        await pilot.press(*"called back", "enter")
        await settle(pilot, lambda: len(fake.cases[case["id"]]["notes"]) == 1, "note added")
        form.query_one("#e-urgency", Select).value = "immediate"
        await settle(pilot, lambda: fake.cases[case["id"]]["urgency"] == "immediate", "urgency")
        form.query_one("#status", Select).value = "in_progress"
        await settle(pilot, lambda: fake.cases[case["id"]]["status"] == "in_progress", "status")
        # A transition the model refuses is a notification, and the app keeps going.
        form.query_one("#status", Select).value = "new"
        await settle(
            pilot,
            lambda: any("cannot go from" in n.message for n in app._notifications),
            "refusal shown",
        )
        assert fake.cases[case["id"]]["status"] == "in_progress"
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)


async def test_resolve_a_conflict_with_one_key(fake: FakeNode) -> None:
    case = await fake.case("new", {**NEW, "name": "山田 花子"})
    fake.inject_conflict(case["id"], "urgency", [("immediate", "SHELTER1"), ("low", "HQ00001")])
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        app.open_case(case["id"])
        await settle(
            pilot,
            lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
            "case form open",
        )
        view = app.screen.query_one(ConflictView)
        await settle(pilot, lambda: view.has_focus, "the conflict view has the focus")
        assert view.display
        text = str(view.render())
        assert "Immediate" in text
        assert "Low" in text
        await pilot.press("2")
        await settle(pilot, lambda: not fake.cases[case["id"]]["conflicts"], "conflict resolved")
        assert fake.cases[case["id"]]["urgency"] == "low"
        await settle(pilot, lambda: not view.display, "conflict view hidden")


async def test_queue_filters_sorts_and_searches(fake: FakeNode) -> None:
    for name, urgency, category in [
        ("Alice", "low", "housing"),
        ("鈴木 二郎", "immediate", "medical"),
        ("Bob", "normal", "supplies"),
    ]:
        await fake.case("new", {**NEW, "name": name, "urgency": urgency, "category": category})
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        table = app.screen.query_one(CaseTable)
        await settle(pilot, lambda: len(table.rows) == 3, "all cases")
        assert [r.name for r in table.rows] == ["鈴木 二郎", "Bob", "Alice"]  # urgent first
        await pilot.press("slash", *"supp")
        assert [r.name for r in table.rows] == ["Bob"]  # category label matches
        await pilot.press("ctrl+a", "ctrl+k", *"医療")  # Japanese label of medical
        assert [r.name for r in table.rows] == ["鈴木 二郎"]
        await pilot.press("ctrl+a", "ctrl+k", "escape", "u")  # urgency filter: immediate
        assert [r.name for r in table.rows] == ["鈴木 二郎"]
        await pilot.press("u", "u", "u", "u", "o", "o")  # all urgencies; sorted as opened
        await settle(pilot, lambda: len(table.rows) == 3, "every urgency again")
        assert [r.name for r in table.rows] == ["Alice", "鈴木 二郎", "Bob"]
        await pilot.press("r")
        await settle(pilot, lambda: table.rows[0].name == "Bob", "the order reversed")
        assert [r.name for r in table.rows] == ["Bob", "鈴木 二郎", "Alice"]


async def test_start_mute_invite_and_end_a_call(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        assert isinstance(app.screen, CallScreen)
        await settle(pilot, lambda: app.desk.peers, "peers known")
        await pilot.press("c")
        await pilot.press("enter")  # the only linked peer
        await settle(pilot, lambda: fake.calls_by_id, "call started")
        call = next(iter(fake.calls_by_id.values()))
        assert call["participants"][1]["name"] == "第一小学校避難所"
        parts = app.screen.query_one("#participants", DataTable)
        await settle(pilot, lambda: parts.row_count == 2, "participants shown")
        # No echo canceller on the fake's sound server: the console says so and
        # recommends a headset; with one it says it is on.
        sound = app.screen.query_one("#sound", Static)
        assert "Use a headset" in str(sound.render())
        assert "no echo cancelling" in str(sound.render())
        call["sound"] = {"echo_cancel": True, "note": "echo cancelling active"}
        fake.tick_calls()
        await settle(pilot, lambda: str(sound.render()) == "Echo cancelling: on", "ec on")
        fake.tick_calls()
        preview = app.screen.query_one(VideoPreview)
        await settle(pilot, lambda: preview.frame is not None, "video preview drawn", 200)
        await pilot.press("m")
        await settle(pilot, lambda: call["participants"][0]["muted_audio"], "muted")
        await pilot.press("i", "enter")  # invite welfare: the shelter serves it
        await settle(pilot, lambda: len(call["participants"]) == 3, "department invited")
        await pilot.press("h")
        await settle(pilot, lambda: call["state"] == "ended", "hung up")
        await settle(pilot, lambda: preview.frame is None, "preview cleared")


async def test_lost_node_shows_a_banner_and_reconnects(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.screen.query_one(Banner)
        await settle(pilot, lambda: app.desk.connected, "connected")
        assert not banner.shown
        fake.stop()
        await settle(pilot, lambda: banner.shown, "banner shown")
        assert "Not connected" in str(banner.render())
        await pilot.press("ctrl+n", "ctrl+s")  # actions while lost: notifications, no crash
        await pilot.press("escape")
        fake.start()
        await fake.case("new", {**NEW, "name": "after"})
        await settle(pilot, lambda: not banner.shown, "banner gone after reconnect")
        await settle(pilot, lambda: app.desk.counts.get("total") == 1, "cases reloaded")


async def test_node_errors_are_notifications(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3", "h")  # nothing to hang up
        await pilot.pause()
        assert any("no call" in n.message.lower() for n in app._notifications)
        result = await app.act(fake.call("call_start", {"peer": "nobody"}))
        assert result is None
        await pilot.pause()
        assert any("no peer 'nobody'" in n.message for n in app._notifications)
        assert app.is_running


async def test_text_from_people_is_never_markup(fake: FakeNode) -> None:
    case = await fake.case("new", {**NEW, "name": "[/] [bold]x", "summary": "[red]note[/"})
    fake.add_peer("[/]evil", "[b]site")
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.counts.get("total") == 1, "case loaded")
        app.open_case(case["id"])
        await settle(
            pilot,
            lambda: isinstance(app.screen, CaseFormScreen) and app.screen.case,
            "case form open",
        )
        assert "[/] [bold]x" in str(app.screen.query_one("#details").render())
        assert "[red]note[/" in str(app.screen.query_one("#notes").render())
        await pilot.press("escape", "f1")
        assert app.is_running


async def test_sync_log_help_palette_and_mouse(fake: FakeNode) -> None:
    for name in ("A", "B", "C"):
        await fake.case("new", {**NEW, "name": name})
    app = app_for(fake, lang="ja")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        assert isinstance(app.screen, SyncScreen)
        table = app.screen.query_one(DataTable)
        await settle(pilot, lambda: table.row_count == 2, "one row per peer")
        fake.set_backlog("第一小学校避難所", 0)
        await settle(
            pilot,
            lambda: any(
                str(table.get_row_at(i)[2]) == "0" and str(table.get_row_at(i)[-1]) == "待機"
                for i in range(2)
            ),
            "outbox drained, idle",
        )
        await pilot.press("f5")
        fake.publish("log", {"level": "WARNING", "logger": "meshdesk.net", "message": "リンク切断"})
        log = app.screen.query_one(RichLog)
        await settle(
            pilot, lambda: any("リンク切断" in line.text for line in log.lines), "log line"
        )
        await pilot.press("f6")
        helps = app.screen.query_one(DataTable)
        help_rows = [tuple(map(str, helps.get_row_at(i))) for i in range(helps.row_count)]
        whats = {r[2] for r in help_rows}
        assert {"検索", "緊急度で絞込", "値1を採用", "保存", "終話", "新規相談"} <= whats
        await pilot.press("escape", "ctrl+p")
        await pilot.press(*"同期")
        await settle(pilot, lambda: _palette_highlights(app, "同期"), "palette finds sync")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, SyncScreen), "palette → sync screen")
        await pilot.press("f2")
        cases = app.screen.query_one(CaseTable)
        await settle(pilot, lambda: len(cases.rows) == 3, "queue filled")
        await pilot.click(CaseTable, offset=(3, 2))
        assert cases.cursor == 2
        await pilot.click(CaseTable, offset=(3, 2), times=2)
        await settle(pilot, lambda: isinstance(app.screen, CaseFormScreen), "double click opens")


async def test_unknown_backlog_and_odd_shapes_from_the_node_do_not_crash(fake: FakeNode) -> None:
    fake.sync_list[0]["outbox"] = None  # the peer's heads have not arrived yet
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.sync, "sync rows")
        await pilot.press("f4")
        table = app.screen.query_one(DataTable)
        await settle(pilot, lambda: table.row_count == 2, "sync rows shown")
        assert "…" in {str(table.get_row_at(i)[2]) for i in range(2)}
        app.desk.sync["bad"] = {"name": 5}  # not a sync row at all
        fake.publish("sync", {"peers": [{"node_id": "x", "name": None, "outbox": "many"}]})
        await pilot.press("f1", "f4")
        await pilot.pause(0.2)  # something that does not happen: the odd rows crash nothing
        assert app.is_running


async def test_a_severe_announcement_stays_on_every_screen_until_acknowledged(
    fake: FakeNode,
) -> None:
    app = app_for(fake, "ja")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.connected, "connected")
        fake.receive_announcement("給水は14時に体育館で", severity="severe")
        banner = app.screen.query_one(Banner)
        await settle(pilot, lambda: banner.shown, "the announcement banner")
        assert "給水は14時に体育館で" in str(banner.render())
        await pilot.press("f2")  # another screen shows it too
        await settle(pilot, lambda: app.screen.query_one(Banner).shown, "banner on the queue")
        await pilot.press("f7")
        await settle(pilot, lambda: isinstance(app.screen, NoticesScreen), "the notices screen")
        table = app.screen.query_one("#announcements", DataTable)
        await settle(pilot, lambda: table.row_count == 1, "the announcement listed")
        await pilot.press("a")
        await settle(pilot, lambda: not app.screen.query_one(Banner).shown, "banner gone")
        assert [a["acknowledged"] for a in fake.announcements.values()] == [True]


async def test_a_message_arrives_is_read_and_one_is_sent(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.connected, "connected")
        fake.receive_message("佐藤さんの薬が足りません")
        await pilot.press("f7")
        messages = app.screen.query_one("#messages", DataTable)
        await settle(pilot, lambda: messages.row_count == 1, "the message listed")
        messages.focus()
        await pilot.press("r")
        await settle(
            pilot, lambda: all(m["read_here"] for m in fake.messages.values()), "marked read"
        )
        await pilot.press("m")
        await settle(pilot, lambda: app.screen.query("#text"), "the message form")
        app.screen.query_one("#to", Input).value = "本部"
        app.screen.query_one("#text", Input).value = "了解しました"
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: len(fake.messages) == 2, "the message sent")
        sent = [m for m in fake.messages.values() if m["outgoing"]]
        assert [(m["to"], m["text"], m["op"]) for m in sent] == [("本部", "了解しました", "suzuki")]


async def test_a_bundle_is_imported_from_the_notices_screen(fake: FakeNode) -> None:
    app = app_for(fake)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.connected, "connected")
        await pilot.press("f7")
        await settle(pilot, lambda: isinstance(app.screen, NoticesScreen), "the notices screen")
        await pilot.press("i")
        await settle(pilot, lambda: app.screen.query("#file"), "the file form")
        app.screen.query_one("#file", Input).value = "/media/usb/meshdesk.bundle"
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: len(app.desk.announcements) == 1, "what came on the stick")
        assert app.desk.announcements[0]["from"] == "避難所2"


async def test_hq_posts_an_announcement_from_the_notices_screen(fake: FakeNode) -> None:
    app = app_for(fake, "ja")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.connected, "connected")
        await pilot.press("f7")
        await settle(pilot, lambda: isinstance(app.screen, NoticesScreen), "the notices screen")
        await pilot.press("n")
        await settle(pilot, lambda: app.screen.query("#title"), "the announcement form")
        app.screen.query_one("#title", Input).value = "給水は14時に体育館で"
        app.screen.query_one("#severity", Select).value = "severe"
        app.screen.query_one("#to", Input).value = "site:第一小学校"
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: len(app.desk.announcements) == 1, "the announcement listed")
        (posted,) = fake.announcements.values()
        assert (posted["title_ja"], posted["severity"], posted["op"]) == (
            "給水は14時に体育館で",
            "severe",
            "suzuki",
        )
        # Our own severe announcement puts no banner on our own screens.
        assert not app.screen.query_one(Banner).shown


async def test_a_large_bundles_progress_is_shown_by_tenths(fake: FakeNode) -> None:
    app = app_for(fake, "ja")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.desk.connected, "connected")
        for done in (0, 50_000, 51_000, 100_000):
            fake.publish("bundle", {"doing": "storing", "done": done, "total": 100_000})
        await settle(
            pilot,
            lambda: sum("USB運搬: 保存中" in str(n.message) for n in app._notifications) == 3,
            "0 %, 50 % and 100 % (51 % is the same tenth as 50 %)",
        )
