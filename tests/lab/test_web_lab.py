"""A citizen joins from a real browser on the lab's LAN (issue 13, point 7).

Three lab hosts: the desk (``meshdesk run``, HQ role, hosts the consultation), a
department node, and a phone: Debian's chromium driven by Playwright inside the
third host's namespace (:mod:`meshdesk.lab.phone`), fake camera and microphone.
Invitation → lobby (the same 4-digit code on both sides) → admitted → frames both
ways → the desk invites the department → the department receives the citizen's
video through the desk and the phone the department's → hang-up → the call on the
case's log. Then an expired and a used link are refused, and plain HTTP is
redirected to HTTPS.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _nodes import LabFactory, RunningNode, all_linked, deployment, hq_spec, member, start_node
from tiers import require

from meshdesk.config import CallSettings, Config, WebSettings
from meshdesk.identity import Role
from meshdesk.lab.phone import MEDIA_STATS, browser_problems, goto, new_phone, phone_browser

if TYPE_CHECKING:
    from waits import WaitUntil

pytestmark = pytest.mark.lab

#: Start-up, mDNS and dialling (no stated product limit).
LINKED_WITHIN = 15.0
#: Generous bounds for a 2-core machine; the bench measures the real figures.
MEDIA_WITHIN = 20.0
#: Every page action (click, text appearing).
UI_WITHIN_MS = 15_000
#: Short enough that the test sees an invitation expire, long enough for the flow.
TTL = 20.0


@pytest.fixture(autouse=True)
def _browser_required() -> None:
    require(browser_problems(), tier="browser")


def _config() -> Config:
    return Config(
        calls=CallSettings(auto_accept=True, media="synthetic", playback="off"),
        web=WebSettings(invite_ttl=TTL),
    )


def _only_call(node: RunningNode) -> dict[str, Any]:
    calls: list[dict[str, Any]] = node.call("calls")
    live = [c for c in calls if c["state"] != "ended"] or calls
    assert live, "no call"
    return live[-1]


def test_citizen_joins_from_a_browser_and_a_department_is_pulled_in(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(3)
    city = deployment(
        tmp_path / "city",
        "Citizen City",
        hq_spec("desk", config=_config()),
        member("福祉課", role=Role.DESK, depts=["福祉課"], config=_config()),
    )
    desk = start_node(lab, "h1", "desk", city.homes["desk"], wait_until=wait_until)
    dept = start_node(lab, "h2", "福祉課", city.homes["福祉課"], wait_until=wait_until)
    wait_until(all_linked([desk, dept]), timeout=LINKED_WITHIN, message="desk and dept linked")
    case = desk.case("new", category="welfare_eldercare", urgency="high", name="山田 花子")
    invite = desk.call("invite_new", {"case": case["id"]})
    stale = desk.call("invite_new")  # left unopened: it expires meanwhile
    url: str = invite["url"]
    assert url.startswith(f"https://{lab.host('h1').addr}:7443/j/")
    phone_ns = lab.host("h3").netns

    with phone_browser(tmp_path, phone_ns) as browser:
        phone = new_phone(browser)
        response = goto(phone, url)
        assert response is not None
        assert response.status == 200
        assert phone.evaluate("window.isSecureContext") is True
        phone.get_by_role("button", name="相談をはじめる").click(timeout=UI_WITHIN_MS)
        phone.locator("#code").wait_for(state="visible", timeout=UI_WITHIN_MS)
        code = phone.locator("#code").inner_text()
        # The console's view: the same code waits; nothing flows before admission.
        waiting = [i for i in desk.call("invite_list") if i["state"] == "waiting"]
        assert [i["code"] for i in waiting] == [code]
        assert desk.call("calls") == []
        desk.call("invite_admit", {"code": code})

        def phone_media() -> dict[str, Any]:
            stats: dict[str, Any] = phone.evaluate(MEDIA_STATS)
            return stats

        wait_until(
            lambda: (
                (s := phone_media())["state"] == "connected"
                and max(s["videoIn"], default=0) > 20
                and s["framesSent"] > 20
            ),
            timeout=MEDIA_WITHIN,
            message="phone receives the desk's video and sends its own",
        )
        wait_until(
            lambda: _only_call(desk)["stats"]["video_frames_received"] > 20,
            timeout=MEDIA_WITHIN,
            message="the desk receives the phone's video",
        )
        # The phone sends within the same caps as calls between nodes.
        caps = phone.evaluate(
            "window.meshdesk.pc.getSenders().filter((s) => s.track)"
            ".map((s) => [s.track.kind, s.getParameters().encodings[0].maxBitrate])"
        )
        assert sorted(caps) == [["audio", 28_000], ["video", 600_000]]
        # Large controls that fit a 360 px wide phone.
        assert phone.evaluate("document.documentElement.scrollWidth") <= 360
        for button in ("#mute", "#camera", "#flip", "#hangup"):
            box = phone.locator(button).bounding_box()
            assert box is not None
            assert box["height"] >= 44
            assert box["width"] >= 44
        call = _only_call(desk)
        citizen = next(p for p in call["participants"] if p["node_id"].startswith("citizen:"))
        assert citizen["state"] == "connected"
        assert citizen["name"].endswith(code)

        # The desk pulls the department in; media goes through the desk both ways.
        desk.call("call_invite", {"call_id": call["call_id"], "peer": "福祉課"})
        wait_until(
            lambda: _only_call(dept)["stats"]["video_sources"] == 2,
            timeout=MEDIA_WITHIN,
            message="the department receives the desk's video and the citizen's",
        )
        forwarding = _only_call(desk)["forwarding"]
        dept_id = dept.call("status")["node_id"]
        assert "video6" in forwarding[dept_id]
        assert forwarding[dept_id]["video6"] == citizen["node_id"]
        assert forwarding[citizen["node_id"]]["video6"] == dept_id
        dept_view = _only_call(dept)
        assert citizen["node_id"] in [p["node_id"] for p in dept_view["participants"]]
        wait_until(
            lambda: len([n for n in phone_media()["videoIn"] if n > 10]) == 2,
            timeout=MEDIA_WITHIN,
            message="the phone receives the department's video through the desk",
        )

        # The department leaves first: had the desk left first, the phone would go on
        # through the department's laptop (tests/lab/test_handover_lab.py).
        dept.call("call_hangup", {"call_id": call["call_id"]})
        wait_until(
            lambda: [p["state"] for p in _only_call(desk)["participants"]
                     if p["node_id"] == dept_id] == ["left"],
            timeout=10.0,
            message="the department left the desk's call",
        )  # fmt: skip
        desk.call("call_hangup", {"call_id": call["call_id"]})
        phone.locator("#notice-text[data-key='ended']").wait_for(timeout=UI_WITHIN_MS)
        assert "終わりました" in phone.locator("#notice-text").inner_text()
        wait_until(
            lambda: (
                [i["state"] for i in desk.call("invite_list") if i["code"] == code] == ["ended"]
            ),
            timeout=10.0,
            message="the invitation died at hang-up",
        )

        def logged() -> list[dict[str, Any]]:
            calls: list[dict[str, Any]] = desk.show(case["id"]).get("calls", [])
            return calls

        wait_until(lambda: logged(), timeout=10.0, message="the call is on the case's log")
        (entry,) = [c for c in logged() if citizen["node_id"] in c["participants"]]
        assert dept_id in entry["participants"]

        # A used link is refused on any phone, and so is an expired one.
        other = new_phone(browser)
        used = goto(other, url)
        assert used is not None
        assert used.status == 410
        wait_until(
            lambda: any(
                i["invite_id"] == stale["invite_id"] and i["state"] == "expired"
                for i in desk.call("invite_list")
            ),
            timeout=TTL + 5.0,
            message="the unopened invitation expired",
        )
        late = goto(other, stale["url"])
        assert late is not None
        assert late.status == 410
        assert "有効期限" in other.locator("#message").inner_text()
        assert desk.call("calls")[-1]["state"] == "ended"

        # Plain http:// is redirected to the HTTPS page (English by Accept-Language).
        fresh = desk.call("invite_new")
        english = new_phone(browser, locale="en-US")
        plain = fresh["url"].replace("https://", "http://").replace(":7443/", ":7080/")
        goto(english, plain)
        assert english.url == fresh["url"]
        assert english.get_by_role("button", name="Start consultation").is_visible()

    # A citizen who blocks the camera and microphone gets a clear screen, a way to try
    # again, and never reaches the lobby.
    with phone_browser(tmp_path, phone_ns, allow_media=False) as browser:
        blocked = new_phone(browser, allow_media=False)
        invite = desk.call("invite_new")
        goto(blocked, invite["url"])
        blocked.get_by_role("button", name="相談をはじめる").click(timeout=UI_WITHIN_MS)
        blocked.locator("#notice-text[data-key='denied']").wait_for(timeout=UI_WITHIN_MS)
        assert "許可" in blocked.locator("#notice-text").inner_text()
        assert blocked.locator("#retry").is_visible()
        states = {i["invite_id"]: i["state"] for i in desk.call("invite_list")}
        assert states[invite["invite_id"]] == "opened"


def test_a_citizen_joins_a_running_call_from_the_call_screen(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    """The other order: desk and department talk (a mesh), then the desk brings the
    citizen in; the call becomes a star through the desk and media reaches everyone."""
    lab = lab_factory(3)
    city = deployment(
        tmp_path / "city",
        "Citizen City",
        hq_spec("desk", config=_config()),
        member("福祉課", role=Role.DESK, depts=["福祉課"], config=_config()),
    )
    desk = start_node(lab, "h1", "desk", city.homes["desk"], wait_until=wait_until)
    dept = start_node(lab, "h2", "福祉課", city.homes["福祉課"], wait_until=wait_until)
    wait_until(all_linked([desk, dept]), timeout=LINKED_WITHIN, message="desk and dept linked")
    call = desk.call("call_start", {"peer": "福祉課", "media": "synthetic"})
    wait_until(lambda: _only_call(dept)["state"] == "active", timeout=MEDIA_WITHIN,
               message="desk and department in a call")  # fmt: skip
    assert _only_call(desk)["relayed"] is False
    invite = desk.call("invite_new", {"call_id": call["call_id"]})
    with phone_browser(tmp_path, lab.host("h3").netns) as browser:
        phone = new_phone(browser)
        goto(phone, invite["url"])
        phone.get_by_role("button", name="相談をはじめる").click(timeout=UI_WITHIN_MS)
        phone.locator("#code").wait_for(state="visible", timeout=UI_WITHIN_MS)
        desk.call("invite_admit", {"code": phone.locator("#code").inner_text()})
        wait_until(
            lambda: _only_call(dept)["relayed"] and _only_call(dept)["stats"]["video_sources"] == 2,
            timeout=MEDIA_WITHIN,
            message="the department receives the desk's video and the citizen's",
        )
        wait_until(
            lambda: len([n for n in phone.evaluate(MEDIA_STATS)["videoIn"] if n > 10]) == 2,
            timeout=MEDIA_WITHIN,
            message="the phone receives the desk's and the department's video",
        )
        assert _only_call(desk)["call_id"] == call["call_id"]
        phone.get_by_role("button", name="相談を終える").click(timeout=UI_WITHIN_MS)
        wait_until(
            lambda: all(
                p["state"] == "left"
                for p in _only_call(desk)["participants"]
                if p["node_id"].startswith("citizen:")
            ),
            timeout=10.0,
            message="the citizen left; the desk and the department go on",
        )
        assert _only_call(dept)["state"] == "active"
