"""A relayed call outlives its host and shrinks back to a mesh (issue 18, points 4-6).

Five real ``meshdesk run`` nodes in a lab, audio only (five nodes of video on a 2-core
machine starve it). The caller ``a`` hosts: once ``e`` joins the call is a star
through it. Then:

- the host hangs up, or its cable is cut: the successor it announced takes over
  within 3 s, and the four left go back to a full mesh (everyone hears the three
  others directly);
- a member leaves a star of five: the four left go back to a full mesh, and the
  listening node — with a sound server of its own, each other node sending a tone
  of its own pitch — never misses anyone for more than 1 s.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from _nodes import LabFactory, RunningNode, all_linked, deployment, hq_spec, member, start_node
from _sound import PulseServer, sound_problems
from tiers import require
from tones import samples_of

from meshdesk.config import CallSettings, Config
from meshdesk.lab import Lab

if TYPE_CHECKING:
    from waits import WaitUntil

pytestmark = pytest.mark.lab

LINKED_WITHIN = 20.0
#: Generous bound for a five-node star to form on a busy 2-core machine.
STAR_WITHIN = 40.0
#: The issue's bound: the best remaining member takes over this soon.
TAKEOVER_WITHIN = 3.0
#: The issue's bound: nobody's audio stops longer than this while shrinking.
MAX_SILENCE_S = 1.0
NAMES = ["a", "b", "c", "d", "e"]
#: Each node's tone (Hz), so the listener can tell who it hears.
TONES = {"a": 500, "b": 440, "c": 620, "d": 740, "e": 860}


def _config(name: str) -> Config:
    return Config(
        calls=CallSettings(auto_accept=True, media="synthetic", playback="off", tone_hz=TONES[name])
    )


def _start(
    tmp_path: Path, lab: Lab, wait_until: WaitUntil, envs: dict[str, dict[str, str]] | None = None
) -> list[RunningNode]:
    envs = envs or {}
    specs = [hq_spec("a", config=_config("a"))]
    for name in NAMES[1:]:
        config = _config(name)
        if name in envs:  # a listener plays what it hears
            config = Config(calls=CallSettings(auto_accept=True, media="synthetic",
                                               tone_hz=TONES[name]))  # fmt: skip
        specs.append(member(name, config=config))
    city = deployment(tmp_path / "city", "Handover City", *specs)
    nodes = [
        start_node(
            lab, f"h{i + 1}", name, city.homes[name], wait_until=wait_until, env=envs.get(name)
        )
        for i, name in enumerate(NAMES)
    ]
    wait_until(all_linked(nodes), timeout=LINKED_WITHIN, message="every node linked")
    return nodes


def _call(node: RunningNode) -> dict[str, Any]:
    calls: list[dict[str, Any]] = node.call("calls")
    assert calls, f"{node.name} has no call"
    return calls[-1]


def _states(node: RunningNode) -> dict[str, str]:
    return {p["name"]: p["state"] for p in _call(node)["participants"]}


def _star(nodes: list[RunningNode], wait_until: WaitUntil) -> str:
    """``a`` calls everyone into one audio-only call; the call id once it is a star."""
    a = nodes[0]
    call_id: str = a.call("call_start", {"peer": "b", "audio_only": True})["call_id"]
    wait_until(lambda: _call(a)["state"] == "active", timeout=15, message="a-b active")
    for guest in nodes[2:]:
        a.call("call_invite", {"call_id": call_id, "peer": guest.name})
        wait_until(lambda g=guest: _call(g)["state"] == "active", timeout=20,
                   message=f"{guest.name} joined")  # fmt: skip

    def star() -> bool:
        return all(
            _call(n)["relayed"] and set(_states(n).values()) == {"connected"}
            and _call(n)["stats"]["audio_sources"] == 4
            for n in nodes
        )  # fmt: skip

    wait_until(star, timeout=STAR_WITHIN, message="a star of five, everyone hears four")
    return call_id


def _by_id(nodes: list[RunningNode]) -> dict[str, RunningNode]:
    return {n.call("status")["node_id"]: n for n in nodes}


def _mesh_of(nodes: list[RunningNode], host: str) -> Any:
    """Every node names ``host``, is a full mesh, and hears the others directly."""
    others = len(nodes) - 1

    def check() -> bool:
        for node in nodes:
            view = _call(node)
            if view["state"] != "active" or view["host"] != host or view["relayed"]:
                return False
            if view["stats"]["audio_sources"] != others:
                return False
        return True

    return check


@pytest.mark.parametrize("how", ["leaves", "vanishes"])
def test_the_best_member_takes_over_when_the_host_goes(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil, how: str
) -> None:
    lab = lab_factory(5)
    nodes = _start(tmp_path, lab, wait_until)
    a, rest = nodes[0], nodes[1:]
    call_id = _star(nodes, wait_until)
    ids = _by_id(nodes)
    # Everyone was told who comes next, best first (the host's ranking of standings).
    wait_until(lambda: len(_call(a)["successors"]) == 4, timeout=10, message="ranked")
    successors = _call(a)["successors"]
    for node in rest:
        wait_until(lambda n=node: _call(n)["successors"][:1] == successors[:1], timeout=10,
                   message=f"{node.name} knows the successor")  # fmt: skip
    heir = ids[successors[0]]

    if how == "leaves":
        a.call("call_hangup", {"call_id": call_id})
    else:
        lab.cut("h1")  # a power cut as the members see it: no goodbye, no FIN

    wait_until(lambda: all(_call(n)["host"] == successors[0] for n in rest),
               timeout=TAKEOVER_WITHIN, message=f"{heir.name} took over")  # fmt: skip
    # Four left: a full mesh again, each hearing the three others directly.
    wait_until(_mesh_of(rest, successors[0]), timeout=15, message="a mesh of four")
    for node in rest:
        view = _call(node)
        assert view["epoch"] == 1, view
        assert _states(node)["a"] in ("left", "dropped")
        if node is not heir:
            gap = view["stats"]["handover_gap_ms"]
            assert gap is not None, f"{node.name} recorded no handover gap"
            assert gap > 0
    heard = {n.name: _call(n)["stats"]["audio_frames_received"] for n in rest}
    wait_until(lambda: all(_call(n)["stats"]["audio_frames_received"] > heard[n.name] + 150
                           for n in rest), timeout=10, message="the call goes on")  # fmt: skip
    heir.call("call_hangup", {"call_id": call_id})


def _tone_levels(raw: bytes, tones: dict[str, int], window_s: float = 0.1) -> dict[str, Any]:
    """Each tone's level (dBFS) in every ``window_s`` window of the recording."""
    samples = samples_of(raw)
    rate = 48000
    size = int(rate * window_s)
    count = len(samples) // size
    frames = samples[: count * size].reshape(count, size) * np.hanning(size)
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) * 2 / np.sum(np.hanning(size))
    freqs = np.fft.rfftfreq(size, 1 / rate)
    levels = {}
    for name, hz in tones.items():
        band = (freqs > hz - 15) & (freqs < hz + 15)
        levels[name] = 20 * np.log10(spectrum[:, band].max(axis=1) + 1e-12)
    return levels


def _longest_quiet_s(levels: Any, floor_db: float, window_s: float = 0.1) -> float:
    longest = run = 0
    for level in levels:
        run = run + 1 if level < floor_db else 0
        longest = max(longest, run)
    return longest * window_s


def test_a_star_that_falls_to_four_goes_back_to_a_mesh_without_losing_anyone(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    require(sound_problems(), tier="sound")
    lab = lab_factory(5)
    with PulseServer(tmp_path / "pulse-b") as pulse:
        nodes = _start(tmp_path, lab, wait_until, envs={"b": pulse.env})
        a, b, c, d, e = nodes
        call_id = _star(nodes, wait_until)
        hosts_id = _call(a)["host"]

        with concurrent.futures.ThreadPoolExecutor(1) as worker:
            recording = worker.submit(pulse.record, "speaker.monitor", 12.0)
            wait_until(lambda: _call(b)["stats"]["audio_frames_received"] > 0, timeout=5)
            start_frames = _call(b)["stats"]["audio_frames_received"]
            # ~2 s of the star first, measured by what b receives (50 frames a second
            # from each of the four it hears).
            wait_until(lambda: _call(b)["stats"]["audio_frames_received"] > start_frames + 400,
                       timeout=10, message="b hears the star")  # fmt: skip
            c.call("call_hangup", {"call_id": call_id})
            wait_until(_mesh_of([a, b, d, e], hosts_id), timeout=15, message="a mesh of four")
            wait_until(lambda: _call(a)["forwarding"] == {}, timeout=10,
                       message="the host forwards nothing any more")  # fmt: skip
            raw = recording.result(timeout=30)

    levels = _tone_levels(raw, {n: TONES[n] for n in ("a", "c", "d", "e")})
    # Over the whole recording — the star, the switch, the mesh — b never lost a, d
    # or e for more than a second. c was heard, then gone.
    for name in ("a", "d", "e"):
        quiet = _longest_quiet_s(levels[name], floor_db=-45.0)
        assert quiet <= MAX_SILENCE_S, f"b did not hear {name} for {quiet:.1f} s"
    assert max(levels["c"][:10]) > -30.0, "b heard c in the star"
    assert max(levels["c"][-20:]) < -45.0, "c is gone"
    for node in (a, b, d, e):
        assert _states(node)["c"] == "left"
    a.call("call_hangup", {"call_id": call_id})


# -- a citizen's phone when its desk goes ------------------------------------------------


def here(page: Any) -> str:
    """The page's address as the page sees it (``page.url`` is only refreshed when
    Playwright's sync API dispatches, which a polling wait does not do); "" while it
    navigates."""
    from playwright.sync_api import Error

    try:
        return str(page.evaluate("location.href"))
    except Error:
        return ""


@pytest.mark.parametrize("how", ["leaves", "vanishes"])
def test_a_citizens_phone_goes_on_through_the_new_host(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil, how: str
) -> None:
    """The desk hosts a citizen's phone and a department. When the desk leaves, the
    phone is moved to the department's laptop by itself; when the desk vanishes, the
    page says so and the citizen taps "reconnect" — the invitation is ready there."""
    from meshdesk.config import WebSettings
    from meshdesk.identity import Role
    from meshdesk.lab.phone import MEDIA_STATS, browser_problems, goto, new_phone, phone_browser

    require(browser_problems(), tier="browser")
    lab = lab_factory(3)
    config = Config(calls=CallSettings(auto_accept=True, media="synthetic", playback="off"),
                    web=WebSettings(invite_ttl=60.0))  # fmt: skip
    city = deployment(tmp_path / "city", "Citizen City", hq_spec("desk", config=config),
                      member("dept", role=Role.DESK, depts=["福祉課"], config=config))  # fmt: skip
    desk = start_node(lab, "h1", "desk", city.homes["desk"], wait_until=wait_until)
    dept = start_node(lab, "h2", "dept", city.homes["dept"], wait_until=wait_until)
    wait_until(all_linked([desk, dept]), timeout=LINKED_WITHIN, message="linked")
    invite = desk.call("invite_new")
    dept_url = f"https://{lab.host('h2').addr}:7443/j/"
    with phone_browser(tmp_path, lab.host("h3").netns) as browser:
        phone = new_phone(browser)
        goto(phone, invite["url"])
        phone.get_by_role("button", name="相談をはじめる").click(timeout=15_000)
        phone.locator("#code").wait_for(state="visible", timeout=15_000)
        code = phone.locator("#code").inner_text()
        desk.call("invite_admit", {"code": code})
        wait_until(lambda: (desk.call("calls") or [{}])[-1].get("state") == "active", timeout=20,
                   message="the phone is in")  # fmt: skip
        call_id = _call(desk)["call_id"]
        desk.call("call_invite", {"call_id": call_id, "peer": "dept"})
        wait_until(lambda: _call(dept)["stats"]["video_sources"] == 2, timeout=30,
                   message="the department sees the desk and the citizen")  # fmt: skip
        # The department keeps an invitation ready; the page knows where it is.
        wait_until(lambda: str(phone.evaluate("window.meshdesk.standby || ''")).startswith(
            dept_url), timeout=10, message="the page knows its way to the department")  # fmt: skip

        if how == "leaves":
            desk.call("call_hangup", {"call_id": call_id})
            wait_until(lambda: here(phone).startswith(dept_url), timeout=15,
                       message="the page moved to the department's laptop")  # fmt: skip
        else:
            lab.cut("h1")
            phone.locator("#notice-text[data-key='lost_desk']").wait_for(timeout=30_000)
            assert "つなぎ直す" in phone.locator("#notice-text").inner_text()
            phone.locator("#reconnect").click(timeout=15_000)
            wait_until(lambda: here(phone).startswith(dept_url), timeout=15,
                       message="the page went to the department's laptop")  # fmt: skip

        def citizen_back() -> bool:
            view = _call(dept)
            citizen = [p for p in view["participants"] if p["node_id"].startswith("citizen:")]
            return (
                view["call_id"] == call_id
                and view["host"] == view["participants"][0]["node_id"]
                and [p["state"] for p in citizen] == ["connected"]
            )

        wait_until(citizen_back, timeout=30, message="the citizen is back in the same call")
        assert code in next(p["name"] for p in _call(dept)["participants"]
                            if p["node_id"].startswith("citizen:"))  # fmt: skip
        wait_until(lambda: (s := phone.evaluate(MEDIA_STATS))["state"] == "connected"
                   and max(s["videoIn"], default=0) > 20, timeout=20,
                   message="the phone sees the department")  # fmt: skip
        frames = _call(dept)["stats"]["video_frames_received"]
        wait_until(lambda: _call(dept)["stats"]["video_frames_received"] > frames + 30,
                   timeout=15, message="the department sees the citizen again")  # fmt: skip
