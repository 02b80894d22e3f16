"""Calls between real ``meshdesk run`` processes on a namespaced LAN (issue 5, point 7).

aioice ignores loopback, so calls need the lab: each node runs in its own network
namespace with a veth on the lab bridge. Calls are placed with ``meshdesk call``
(the CLI, through the caller's control socket) or straight through control ops.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _nodes import (
    MESHDESK,
    LabFactory,
    RunningNode,
    all_linked,
    deployment,
    hq_spec,
    member,
    start_node,
)

from meshdesk import control
from meshdesk.config import CallSettings, Config
from meshdesk.errors import MeshdeskError
from meshdesk.lab import Lab

if TYPE_CHECKING:
    from waits import WaitUntil

pytestmark = pytest.mark.lab

#: Linking, mDNS and dialling (no stated product limit).
LINKED_WITHIN = 15.0
#: The product's limit: a cut link ends the call on both sides this soon.
CUT_ENDS_CALL_WITHIN = 6.0


#: Every node answers at once, with synthetic media.
CALLS = Config(calls=CallSettings(auto_accept=True, media="synthetic"))


def _nodes(tmp_path: Path, lab: Lab, names: list[str], wait_until: WaitUntil) -> list[RunningNode]:
    specs = [hq_spec(names[0], config=CALLS), *(member(n, config=CALLS) for n in names[1:])]
    city = deployment(tmp_path / "city", "City", *specs)
    nodes = [
        start_node(lab, f"h{index + 1}", name, city.homes[name], wait_until=wait_until)
        for index, name in enumerate(names)
    ]
    wait_until(all_linked(nodes), timeout=LINKED_WITHIN, message="every node linked")
    return nodes


def meshdesk_call(node: RunningNode, *args: str) -> dict[str, Any]:
    """``meshdesk call ... --json`` against ``node``'s control socket; the printed object."""
    argv = [
        MESHDESK,
        "call",
        "--home",
        str(node.home.path),
        "--media",
        "synthetic",
        "--json",
        *args,
    ]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL, check=False
    )
    assert proc.returncode == 0, f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def only_call(node: RunningNode) -> dict[str, Any]:
    calls: list[dict[str, Any]] = node.call("calls")
    assert len(calls) == 1, calls
    return calls[0]


def silent_while_flowing(
    node: RunningNode, silent: str, flowing: str, frames: int
) -> Callable[[], bool]:
    """A wait: ``node`` received ``frames`` more ``flowing`` frames (``audio`` or
    ``video``) and at most 2 ``silent`` ones meanwhile.

    The frames that arrive are the clock, not a sleep. A stretch that still holds
    frames in flight (or a stats tick from before a mute) does not count: the next
    stretch starts where it ended, so the wait fails only if ``silent`` never stops.
    """
    start: list[tuple[int, int]] = []

    def check() -> bool:
        stats = only_call(node)["stats"]
        now = (stats[f"{silent}_frames_received"], stats[f"{flowing}_frames_received"])
        if not start:
            start.append(now)
            return False
        silent_before, flowing_before = start[0]
        if now[1] < flowing_before + frames:
            return False  # the stretch goes on
        if now[0] - silent_before <= 2:
            return True
        start[0] = now  # silent frames arrived in this stretch: watch the next one
        return False

    return check


def _netns(node: RunningNode, *argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", node.host.netns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return proc.stdout


def _watch_egress(node: RunningNode) -> str:
    """Count what ``node``'s namespace sends: off the lab subnet (mDNS's own group
    aside), to STUN/TURN ports, and UDP to the lab (the media: proof the counting works)."""
    cidr = _netns(node, "ip", "-o", "-4", "addr", "show", "dev", node.host.iface).split()[3]
    table = "mdcallwatch"
    _netns(
        node,
        "nft",
        "-f",
        "-",
        stdin=f"""
table inet {table} {{
    chain out {{
        type filter hook output priority 0; policy accept;
        oifname != "lo" ip daddr != {{ {cidr}, 224.0.0.251 }} counter comment "offlab"
        udp dport {{ 3478, 5349, 19302 }} counter comment "stun"
        tcp dport {{ 3478, 5349 }} counter comment "turn"
        oifname != "lo" ip daddr {cidr} meta l4proto udp counter comment "labudp"
    }}
}}
""",
    )
    return table


def _counters(node: RunningNode, table: str) -> dict[str, int]:
    rules = json.loads(_netns(node, "nft", "-j", "list", "table", "inet", table))["nftables"]
    counts: dict[str, int] = {}
    for item in rules:
        rule = item.get("rule")
        if rule is None:
            continue
        packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        counts[rule["comment"]] = packets
    return counts


def test_one_to_one_call_carries_frames_both_ways_and_nothing_leaves_the_lab(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    a, b = _nodes(tmp_path, lab, ["a", "b"], wait_until)
    watches = {node.name: _watch_egress(node) for node in (a, b)}

    result = meshdesk_call(a, "b", "--duration", "3")

    assert result["state"] == "ended"
    assert result["direction"] == "outgoing"
    assert result["video_frames_sent"] > 30
    assert result["video_frames_received"] > 30
    assert result["audio_frames_received"] > 50
    assert result["setup_ms"] is not None
    assert result["setup_ms"] > 0
    names = {p["name"]: p["state"] for p in result["participants"]}
    assert set(names) == {"a", "b"}
    # The callee saw the same call and received our frames.
    wait_until(lambda: only_call(b)["state"] == "ended", timeout=5, message="b's call ended")
    theirs = only_call(b)
    assert theirs["call_id"] == result["call_id"]
    assert theirs["direction"] == "incoming"
    assert theirs["stats"]["video_frames_received"] > 30
    assert theirs["stats"]["audio_frames_received"] > 50
    # No STUN or TURN, nothing off the lab subnet; the media itself was counted.
    for node in (a, b):
        counts = _counters(node, watches[node.name])
        assert counts["stun"] == 0, counts
        assert counts["turn"] == 0, counts
        assert counts["offlab"] == 0, counts
        assert counts["labudp"] > 100, counts


def test_audio_only_call_survives_five_percent_loss(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    a, b = _nodes(tmp_path, lab, ["a", "b"], wait_until)
    lab.netem("h1", loss_pct=5)
    lab.netem("h2", loss_pct=5)

    result = meshdesk_call(a, "b", "--duration", "8", "--audio-only")

    assert result["audio_only"] is True
    assert result["video_frames_sent"] == 0
    assert result["degraded"] is False  # 5 % is below the fallback threshold
    # 8 s of 20 ms frames is 400. The bound leaves room for a starved 2-core CI box
    # (frames are generated in real time); what matters is that audio kept flowing.
    assert result["audio_frames_received"] > 120
    assert result["reason"] == "hung up"
    wait_until(lambda: only_call(b)["state"] == "ended", timeout=5, message="b's call ended")
    assert only_call(b)["stats"]["audio_frames_received"] > 120


def test_three_way_call_meshes_and_survives_one_leaving(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(3)
    a, b, c = _nodes(tmp_path, lab, ["a", "b", "c"], wait_until)
    call = a.call("call_start", {"peer": "b", "media": "synthetic", "audio_only": False})
    call_id = call["call_id"]
    wait_until(lambda: only_call(a)["state"] == "active", timeout=10, message="a-b active")
    a.call("call_invite", {"call_id": call_id, "peer": "c"})

    def everyone_connected() -> bool:
        for node in (a, b, c):
            parts = {p["name"]: p["state"] for p in only_call(node)["participants"]}
            if parts != {"a": "connected", "b": "connected", "c": "connected"}:
                return False
        return True

    wait_until(everyone_connected, timeout=15, message="a, b and c all connected to each other")
    # c receives video from both a and b over its own legs (a full mesh).
    before = only_call(c)["stats"]["video_frames_received"]
    wait_until(
        lambda: only_call(c)["stats"]["video_frames_received"] > before + 60,
        timeout=10,
        message="c keeps receiving video",
    )
    b.call("call_hangup", {"call_id": call_id})

    def b_left_others_stay() -> bool:
        for node in (a, c):
            view = only_call(node)
            parts = {p["name"]: p["state"] for p in view["participants"]}
            if view["state"] != "active" or parts.get("b") != "left":
                return False
        return True

    wait_until(b_left_others_stay, timeout=10, message="b left; a and c still in the call")
    received = only_call(c)["stats"]["audio_frames_received"]
    wait_until(
        lambda: only_call(c)["stats"]["audio_frames_received"] > received + 50,
        timeout=10,
        message="a and c still talk",
    )
    a.call("call_hangup", {"call_id": call_id})
    wait_until(lambda: only_call(c)["state"] == "ended", timeout=10, message="c's call ended")


def test_link_cut_ends_the_call_on_both_sides_and_logs_it_on_the_case(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    a, b = _nodes(tmp_path, lab, ["a", "b"], wait_until)
    case = a.case("new", category="medical", urgency="high", name="市民 太郎")
    wait_until(lambda: any(c["id"] == case["id"] for c in b.cases()), timeout=10,
               message="the case reached b")  # fmt: skip
    call = a.call("call_start", {"peer": "b", "case": case["id"], "media": "synthetic"})
    wait_until(lambda: only_call(b)["state"] == "active", timeout=10, message="call active")
    wait_until(lambda: only_call(b)["stats"]["video_frames_received"] > 30, timeout=10,
               message="media flows")  # fmt: skip

    lab.cut("h2")

    def ended_both() -> bool:
        return all(only_call(node)["state"] == "ended" for node in (a, b))

    wait_until(ended_both, timeout=CUT_ENDS_CALL_WITHIN, message="the call ended on both sides")
    for node in (a, b):
        ended = only_call(node)
        assert ended["call_id"] == call["call_id"]
        assert any(p["state"] == "dropped" for p in ended["participants"]), ended

    def logged(node: RunningNode) -> bool:
        return any(c["id"] == call["call_id"] for c in node.show(case["id"]).get("calls", []))

    wait_until(lambda: logged(a) and logged(b), timeout=5, message="the call is on the case")
    entry = next(c for c in a.show(case["id"])["calls"] if c["id"] == call["call_id"])
    assert len(entry["participants"]) == 2
    assert entry["duration_s"] >= 0


PROBE = Path(__file__).with_name("call_probe.py")


def test_a_tampered_dtls_fingerprint_fails_the_call(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)

    def probe(mode: str) -> dict[str, Any]:
        proc = lab.run("h1", [sys.executable, str(PROBE), mode], timeout=60)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    intact = probe("intact")
    assert intact["state"] == "connected", intact
    assert intact["a_video_received"] > 10, intact

    tampered = probe("tampered")
    assert tampered["state"] == "failed", tampered
    assert tampered["a_video_received"] == 0, tampered
    assert tampered["a_audio_received"] == 0, tampered
    assert tampered["b_video_received"] == 0, tampered


def _parts(node: RunningNode) -> dict[str, str]:
    return {p["name"]: p["state"] for p in only_call(node)["participants"]}


def test_five_nodes_relay_through_the_host_and_survive_one_leaving_and_the_host(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(5)
    nodes = _nodes(tmp_path, lab, ["a", "b", "c", "d", "e"], wait_until)
    a, b, c, d, e = nodes
    call = a.call("call_start", {"peer": "b", "media": "synthetic", "audio_only": True})
    call_id = call["call_id"]
    wait_until(lambda: only_call(a)["state"] == "active", timeout=10, message="a-b active")
    for guest in (c, d):
        a.call("call_invite", {"call_id": call_id, "peer": guest.name})
        wait_until(lambda g=guest: only_call(g)["state"] == "active", timeout=15,
                   message=f"{guest.name} joined")  # fmt: skip
    assert only_call(a)["relayed"] is False  # four nodes: still a full mesh
    # Only the host may grow the call past the mesh.
    with pytest.raises(MeshdeskError, match="relayed by its host a"):
        b.call("call_invite", {"call_id": call_id, "peer": "e"})

    a.call("call_invite", {"call_id": call_id, "peer": "e"})

    everyone = {"a", "b", "c", "d", "e"}

    def star() -> bool:
        for node in nodes:
            view = only_call(node)
            if not view["relayed"] or view["host"] != call["host"]:
                return False
            if set(_parts(node).items()) != {(n, "connected") for n in everyone}:
                return False
        return True

    wait_until(star, timeout=30, message="all five connected through the host")
    # Each participant hears the host and the three others, forwarded as separate tracks.
    for node in (b, c, d, e):
        wait_until(lambda n=node: only_call(n)["stats"]["audio_sources"] == 4, timeout=10,
                   message=f"{node.name} hears four others")  # fmt: skip
    wait_until(lambda: only_call(a)["stats"]["audio_sources"] == 4, timeout=10,
               message="the host hears four participants")  # fmt: skip

    c.call("call_hangup", {"call_id": call_id})

    def c_left_others_stay() -> bool:
        for node in (a, b, d, e):
            view = only_call(node)
            if view["state"] != "active" or _parts(node).get("c") != "left":
                return False
        return True

    wait_until(c_left_others_stay, timeout=10, message="c left; the others stay")
    for node in (b, d, e):
        wait_until(lambda n=node: only_call(n)["stats"]["audio_sources"] == 3, timeout=10,
                   message=f"{node.name} hears the three left")  # fmt: skip
        heard = only_call(node)["stats"]["audio_frames_received"]
        wait_until(lambda n=node, h=heard: only_call(n)["stats"]["audio_frames_received"] > h + 100,
                   timeout=10, message=f"{node.name} keeps hearing the others")  # fmt: skip

    # Four left: a full mesh again (tests/lab/test_handover_lab.py checks it closely).
    wait_until(lambda: not any(only_call(n)["relayed"] for n in (a, b, d, e)), timeout=10,
               message="back to a mesh of four")  # fmt: skip
    # The host leaving no longer ends the call: the next one takes over.
    a.call("call_hangup", {"call_id": call_id})
    wait_until(lambda: all(only_call(n)["host"] != call["host"] for n in (b, d, e)), timeout=5,
               message="a new host")  # fmt: skip
    for node in (b, d, e):
        assert only_call(node)["state"] == "active"
        # Its own leave may come after the new host said it was gone: then it is
        # shown as left once that word arrives.
        wait_until(lambda n=node: _parts(n)["a"] == "left", timeout=5,
                   message=f"{node.name} shows a as left")  # fmt: skip


def test_mute_stops_that_sides_frames_at_the_peer(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    a, b = _nodes(tmp_path, lab, ["a", "b"], wait_until)
    call_id = a.call("call_start", {"peer": "b", "media": "synthetic"})["call_id"]
    wait_until(lambda: only_call(b)["stats"]["video_frames_received"] > 30, timeout=10,
               message="media flows")  # fmt: skip

    a.call("call_mute", {"call_id": call_id, "video": True})
    wait_until(lambda: only_call(b)["participants"][1]["muted_video"], timeout=5,
               message="b sees a's video muted")  # fmt: skip
    wait_until(silent_while_flowing(b, "video", "audio", 100), timeout=10,
               message="b hears a (100 audio frames) and gets no video from it")  # fmt: skip

    a.call("call_mute", {"call_id": call_id, "audio": True, "video": False})
    wait_until(silent_while_flowing(b, "audio", "video", 40), timeout=10,
               message="b sees a (40 video frames) and gets no audio from it")  # fmt: skip
    view = only_call(b)
    a_seen = next(p for p in view["participants"] if p["name"] == "a")
    assert a_seen["muted_audio"] is True
    assert a_seen["muted_video"] is False
    assert view["state"] == "active"
    a.call("call_hangup", {"call_id": call_id})


def test_call_events_reach_a_subscriber(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    a, _b = _nodes(tmp_path, lab, ["a", "b"], wait_until)

    async def watch() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with control.subscribe(a.control_socket, ["call"]) as events:
            call = await control.call(a.control_socket, "call_start",
                                      {"peer": "b", "media": "synthetic"})  # fmt: skip
            async with asyncio.timeout(20):
                async for event in events:
                    assert event.kind == "call"
                    seen.append(dict(event.data))
                    data = event.data
                    frames = data["stats"]["video_frames_received"]  # type: ignore[index]
                    if data["call_id"] == call["call_id"] and frames > 30:
                        break
            await control.call(a.control_socket, "call_hangup", {"call_id": call["call_id"]})
        return seen

    seen = asyncio.run(watch())
    states = [event["state"] for event in seen]
    assert states[0] == "ringing"
    assert "active" in states
    assert seen[-1]["stats"]["video_frames_received"] > 30


def test_heavy_loss_falls_back_to_audio_only_on_both_sides(
    lab_factory: LabFactory, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lab = lab_factory(2)
    a, b = _nodes(tmp_path, lab, ["a", "b"], wait_until)
    call_id = a.call("call_start", {"peer": "b", "media": "synthetic"})["call_id"]
    wait_until(lambda: only_call(b)["stats"]["video_frames_received"] > 30, timeout=10,
               message="media flows")  # fmt: skip
    assert not only_call(a)["degraded"]
    lab.netem("h2", loss_pct=30)

    wait_until(lambda: only_call(a)["degraded"] and only_call(b)["degraded"], timeout=20,
               message="both sides fell back to audio only")  # fmt: skip
    for node in (a, b):
        assert "falls back to audio only" in node.log_text()
    lab.clear_netem("h2")
    wait_until(silent_while_flowing(b, "video", "audio", 100), timeout=10,
               message="video stays off while audio flows")  # fmt: skip
    a.call("call_hangup", {"call_id": call_id})


def test_bench_call_measures_a_real_call_end_to_end() -> None:
    script = Path(__file__).resolve().parents[2] / "field-kit" / "lab"
    argv = [MESHDESK, "bench", "call", "--rounds", "2", "--seconds", "1", "--lab", str(script),
            "--json"]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["setup_ms"]) == 2
    assert len(report["node_setup_ms"]) == 2
    # The end-to-end figure contains the node's own one (dial → first frame).
    for total, inside in zip(report["setup_ms"], report["node_setup_ms"], strict=True):
        assert 0 < inside <= total
    for key in ("raw_setup_ms_p50", "legs_setup_ms_p50", "cpu_pct_per_endpoint"):
        assert report[key] > 0, key
    assert report["fps_received"] > 0
