"""The verdict on a node's clock from its peers' offsets (meshdesk.clock), pure."""

from __future__ import annotations

import pytest

from meshdesk.cases.hlc import MAX_AHEAD_MS, Clock, hlc_wall_ms, make_hlc
from meshdesk.clock import SKEW_WARN_MS, PeerClock, describe_offset, judge
from meshdesk.net.liveness import ClockOffset

DAY = 86_400_000


def hq(offset: int, name: str = "本部") -> PeerClock:
    return PeerClock(f"id-{name}", name, "hq", offset)


def centre(offset: int, name: str) -> PeerClock:
    return PeerClock(f"id-{name}", name, "center", offset)


def test_a_node_behind_hq_is_told_and_corrected() -> None:
    view = judge("c4", "center", [hq(400 * DAY)])
    assert view.skew_ms == -400 * DAY
    assert view.correction_ms == 400 * DAY
    assert view.warning is not None
    assert "c4" in view.warning
    assert "400 d behind HQ 本部's" in view.warning


def test_within_the_threshold_nothing_is_said_or_corrected() -> None:
    view = judge("c4", "center", [hq(SKEW_WARN_MS - 1)])
    assert (view.warning, view.correction_ms) == (None, 0)


def test_hq_is_the_reference_even_against_a_majority() -> None:
    peers = [hq(0), centre(5 * DAY, "c1"), centre(5 * DAY, "c2")]
    assert judge("c3", "center", peers).correction_ms == 0


def test_without_hq_the_median_of_two_or_more_peers_decides() -> None:
    view = judge("c3", "center", [centre(DAY, "c1"), centre(DAY, "c2"), centre(0, "c5")])
    assert view.correction_ms == DAY
    assert view.reference == "3 peers"


def test_with_one_peer_it_cannot_tell_who_is_wrong() -> None:
    view = judge("c3", "center", [centre(-2 * DAY, "c1")])
    assert view.correction_ms == 0
    assert view.warning is not None
    assert "c1" in view.warning
    assert "differ" in view.warning


def test_hq_never_corrects_itself_and_names_the_peers_that_are_off() -> None:
    view = judge("本部", "hq", [centre(-400 * DAY, "c4"), centre(1000, "c1")])
    assert (view.correction_ms, view.warning) == (0, None)
    assert [p.name for p in view.peers_off] == ["c4"]


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-400 * DAY - 3 * 3_600_000, "400 d 3 h behind X"),
        (2 * DAY, "2 d ahead of X"),
        (-90 * 60_000, "1 h 30 min behind X"),
        (150_000, "2 min ahead of X"),
    ],
)
def test_offsets_read_as_people_say_them(ms: int, text: str) -> None:
    assert describe_offset(ms, "X") == text


def test_the_offset_is_the_median_of_recent_pings() -> None:
    offset = ClockOffset(keep=3)
    assert offset.ms is None
    for sent, received in ((1_000, 0), (1_010, 0), (9_999_999, 0), (1_005, 0)):
        offset.sample(sent, received)
    assert offset.ms == 1_010  # the last three: 1010, 9999999, 1005 -> median 1010


def test_a_case_stamped_far_ahead_is_answered_after_it_without_dragging_the_clock() -> None:
    wall = 1_700_000_000_000
    clock = Clock(make_hlc(wall))
    ahead = make_hlc(wall + MAX_AHEAD_MS + 365 * DAY)
    edit = clock.now(wall, after=ahead)
    assert edit > ahead  # the edit sorts after what it answers
    later = clock.now(wall + 1)
    assert hlc_wall_ms(later) == wall + 1  # other records keep our own time
    near = make_hlc(wall + 1000)
    assert clock.now(wall + 2, after=near) > near  # a near "after" still moves the clock
    assert clock.last > near
