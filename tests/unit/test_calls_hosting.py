"""Who hosts a call, without a network: the ranking of successors, when a host is
gone or unfit, the CPU meter, and how a node takes a host's announcement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.calls.hosting import (
    CpuMeter,
    HostFitness,
    Standing,
    better_host,
    host_silent,
    rank,
)
from meshdesk.calls.manager import CallManager
from meshdesk.calls.relay import Forwarder
from meshdesk.config import CallSettings
from meshdesk.net.peers import PeerRecord, PeerState
from meshdesk.wire import CallHost, CallMember, CallRoster

LIMITS = {"max_rtt_ms": 500.0, "max_loss_pct": 10.0}


def test_rank_puts_healthy_links_first_then_headroom_then_rtt_then_id() -> None:
    standings = {
        "busy": Standing(cpu_free_pct=20, rtt_ms=2, loss_pct=0),
        "idle": Standing(cpu_free_pct=80, rtt_ms=9, loss_pct=0),
        "idle-near": Standing(cpu_free_pct=84, rtt_ms=3, loss_pct=0),  # same 10 % step
        "lossy": Standing(cpu_free_pct=99, rtt_ms=2, loss_pct=30),
        "far": Standing(cpu_free_pct=99, rtt_ms=900, loss_pct=0),
    }
    assert rank(standings, **LIMITS) == ["idle-near", "idle", "busy", "lossy", "far"]


_standing = st.builds(
    Standing,
    cpu_free_pct=st.integers(0, 100),
    rtt_ms=st.integers(0, 2000),
    loss_pct=st.integers(0, 100),
)


@given(st.dictionaries(st.text(min_size=1, max_size=8), _standing, max_size=8))
def test_every_node_ranking_the_same_facts_gets_the_same_order(
    standings: dict[str, Standing],
) -> None:
    order = rank(standings, **LIMITS)
    assert sorted(order) == sorted(standings)
    shuffled = dict(reversed(list(standings.items())))
    assert rank(shuffled, **LIMITS) == order
    healthy = [n for n in order if standings[n].healthy(500.0, 10.0)]
    assert order[: len(healthy)] == healthy  # a poor link never outranks a good one


def test_a_host_is_gone_only_when_media_and_link_are_both_quiet() -> None:
    assert not host_silent(media_at=10.0, link_at=10.0, now=11.0)
    assert not host_silent(media_at=None, link_at=10.0, now=11.0)  # everyone muted
    assert not host_silent(media_at=10.0, link_at=None, now=11.0)  # a busy link
    assert host_silent(media_at=10.0, link_at=9.8, now=11.6)
    assert host_silent(media_at=None, link_at=None, now=0.0)


def test_a_host_is_unfit_after_three_poor_seconds_and_told_once() -> None:
    fitness = HostFitness(**LIMITS)
    busy = Standing(cpu_free_pct=5, rtt_ms=3, loss_pct=0)
    fine = Standing(cpu_free_pct=60, rtt_ms=3, loss_pct=0)
    assert [fitness.observe(s) for s in (busy, busy, fine, busy, busy)] == [None] * 5
    reason = fitness.observe(busy)
    assert reason == "CPU headroom 5 % < 15 % for 3 s"
    assert fitness.observe(busy) is None  # told once
    lossy = HostFitness(**LIMITS)
    for _ in range(2):
        lossy.observe(Standing(50, 3, 40))
    assert "links are poor" in str(lossy.observe(Standing(50, 3, 40)))


def test_a_successor_must_be_healthy_and_better() -> None:
    struggling = Standing(cpu_free_pct=5, rtt_ms=3, loss_pct=0)
    assert better_host(struggling, Standing(60, 3, 0), **LIMITS)
    assert not better_host(struggling, Standing(9, 3, 0), **LIMITS)  # the same 10 % step
    assert not better_host(struggling, Standing(90, 3, 50), **LIMITS)  # a poor link
    assert better_host(Standing(90, 3, 50), Standing(20, 3, 0), **LIMITS)


def test_the_cpu_meter_reads_idle_time_between_two_readings(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    meter = CpuMeter(stat)
    assert meter.free_pct() == 100  # nothing to compare with yet
    stat.write_text("cpu  150 0 150 750 100 0 0 0 0 0\n")  # 50 idle of 150
    assert meter.free_pct() == 33
    stat.write_text("garbage\n")
    assert meter.free_pct() == 100
    assert CpuMeter(tmp_path / "missing").free_pct() == 100


# -- announcements -----------------------------------------------------------------------


@dataclass
class Star:
    calls: CallManager
    ids: dict[str, str]
    links: dict[str, Any]
    me: str


@pytest.fixture
async def star() -> AsyncIterator[Star]:
    """This node (``me``) in a relayed call hosted by ``host``, as a member."""
    from test_calls import FakeLink, _info, _offer  # the same fixtures as the call tests

    me, host, x, y, z = (_info(i, n) for i, n in enumerate(("me", "host", "x", "y", "z"), 1))
    ids = {n.name: str(n.node_id) for n in (host, x, y, z)}
    links = {node_id: FakeLink(node_id) for node_id in ids.values()}
    records = [
        PeerRecord(node_id=node_id, name=name, site="s", state=PeerState.LINKED)
        for name, node_id in ids.items()
    ]
    settings = CallSettings(auto_accept=False, media="synthetic")
    async with CallManager(me, settings, link_of=links.get, peers=lambda: records) as calls:
        members = tuple(ids.values())
        await calls.on_frame(links[ids["host"]], _offer(host, members=members))
        yield Star(calls, ids, dict(links), str(me.node_id))


async def test_a_stale_or_foreign_host_announcement_changes_nothing(
    star: Star,
) -> None:
    from test_calls import CALL_ID

    calls, ids, links = star.calls, star.ids, star.links
    before = calls.calls()[0]
    # Same epoch from a member that is not the host: ignored.
    fake = CallHost(CALL_ID, ids["x"], 0, True, (ids["y"],), "x says so")
    await calls.on_frame(links[ids["x"]], fake)
    assert calls.calls()[0]["host"] == before["host"]
    # The host's own update of the order (same epoch) is taken.
    order = CallHost(CALL_ID, ids["host"], 0, True, (ids["y"], star.me, ids["x"]), "order")
    await calls.on_frame(links[ids["host"]], order)
    assert calls.calls()[0]["successors"] == [ids["y"], star.me, ids["x"]]
    # A host nobody in the call knows is ignored, whatever its epoch.
    stranger = CallHost(CALL_ID, "ZZZZZZZ-ZZZZZZZ-ZZZZZZZ-ZZZZZZZ", 5, True, (), "a stranger")
    await calls.on_frame(links[ids["x"]], stranger)
    assert calls.calls()[0]["host"] == ids["host"]
    assert calls.calls()[0]["epoch"] == 0


async def test_a_higher_epoch_names_the_new_host_and_a_lower_one_is_ignored(
    star: Star,
) -> None:
    from test_calls import CALL_ID

    calls, ids, links = star.calls, star.ids, star.links
    roster = CallRoster(
        CALL_ID, ids["host"], tuple(CallMember(n, "connected") for n in ids.values())
    )
    await calls.on_frame(links[ids["host"]], roster)
    await calls.on_frame(
        links[ids["y"]], CallHost(CALL_ID, ids["y"], 1, True, (ids["x"],), "h left")
    )
    view = calls.calls()[0]
    assert (view["host"], view["epoch"], view["successors"]) == (ids["y"], 1, [ids["x"]])
    await calls.on_frame(links[ids["host"]], CallHost(CALL_ID, ids["host"], 0, True, (), "old"))
    assert calls.calls()[0]["host"] == ids["y"]


def _state_of(calls: CallManager, name: str) -> str:
    parts = {p["name"]: p["state"] for p in calls.calls()[0]["participants"]}
    return str(parts[name])


async def test_a_host_taken_over_from_is_gone_here_too_but_one_that_hands_over_stays(
    star: Star,
) -> None:
    from test_calls import CALL_ID

    calls, ids, links = star.calls, star.ids, star.links
    roster = CallRoster(
        CALL_ID, ids["host"], tuple(CallMember(n, "connected") for n in ids.values())
    )
    await calls.on_frame(links[ids["host"]], roster)
    # The host handed over by itself: it names itself among the successors and stays.
    handed = CallHost(CALL_ID, ids["x"], 1, True, (ids["y"], ids["host"]), "struggling")
    await calls.on_frame(links[ids["host"]], handed)
    assert calls.calls()[0]["host"] == ids["x"]
    assert _state_of(calls, "host") != "dropped"
    # y takes over from x, which vanished before this node noticed: no leg to x any more.
    took = CallHost(CALL_ID, ids["y"], 2, True, (ids["host"],), "x vanished")
    await calls.on_frame(links[ids["y"]], took)
    assert calls.calls()[0]["host"] == ids["y"]
    assert _state_of(calls, "x") == "dropped"
    assert _state_of(calls, "host") != "dropped"


def test_a_host_that_falls_back_to_audio_only_forwards_no_video() -> None:
    from aiortc.contrib.media import MediaRelay

    forwarder = Forwarder(MediaRelay(), audio_only=False)
    slots = forwarder.slots_for("b")
    assert "video" in {s.kind for s in slots}
    forwarder.stop_video()
    forwarder.rewire({"c": {}}, ["c"])
    assert all(s.source_id is None for s in slots if s.kind == "video")
    assert forwarder.targets == ["b"]
    forwarder.close()
    assert forwarder.targets == []
