"""The hybrid logical clock: monotonic, merges on receive, refuses absurd peers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.cases.hlc import (
    HLC_MAX,
    MAX_AHEAD_MS,
    Clock,
    check_hlc,
    format_hlc,
    hlc_counter,
    hlc_wall_ms,
    make_hlc,
    split_hlc,
    to_datetime,
)
from meshdesk.errors import SyncError

NOW = 1_700_000_000_000
walls = st.integers(NOW - 10_000, NOW + 10_000)


def test_pack_and_split() -> None:
    hlc = make_hlc(NOW, 7)
    assert hlc == (NOW << 16) | 7
    assert split_hlc(hlc) == (NOW, 7) == (hlc_wall_ms(hlc), hlc_counter(hlc))
    with pytest.raises(ValueError, match="counter"):
        make_hlc(NOW, 1 << 16)
    with pytest.raises(ValueError, match="wall_ms"):
        make_hlc(-1)


def test_check_hlc_refuses_non_hlc_values() -> None:
    assert check_hlc(HLC_MAX) == HLC_MAX
    for bad in (-1, HLC_MAX + 1, True, 1.0, "1", None):
        with pytest.raises(ValueError, match="not an HLC"):
            check_hlc(bad)


def test_datetime_and_text_forms() -> None:
    hlc = make_hlc(NOW + 5, 0)
    assert to_datetime(hlc) == datetime(2023, 11, 14, 22, 13, 20, 5000, tzinfo=UTC)
    assert format_hlc(hlc) == "2023-11-14T22:13:20.005Z"
    assert format_hlc(hlc + 3) == "2023-11-14T22:13:20.005Z+3"


def test_now_follows_the_wall_clock() -> None:
    clock = Clock()
    assert clock.now(NOW) == make_hlc(NOW)
    assert clock.now(NOW + 1) == make_hlc(NOW + 1)
    assert clock.now(NOW + 1) == make_hlc(NOW + 1, 1)  # same ms: the counter grows
    assert clock.last == make_hlc(NOW + 1, 1)


def test_now_is_monotonic_when_the_wall_clock_steps_back() -> None:
    clock = Clock()
    first = clock.now(NOW)
    assert clock.now(NOW - 60_000) == first + 1


def test_counter_overflow_carries_into_the_millisecond() -> None:
    clock = Clock(make_hlc(NOW, 0xFFFF))
    assert clock.now(NOW) == make_hlc(NOW + 1, 0)


def test_now_after_sorts_after_the_given_value() -> None:
    clock = Clock()
    seen = make_hlc(NOW + 500, 3)
    assert clock.now(NOW, after=seen) == seen + 1


def test_restart_from_last_never_reuses_a_value() -> None:
    before = Clock()
    value = before.now(NOW)
    assert Clock(before.last).now(NOW) > value


@given(st.lists(st.tuples(st.booleans(), walls, walls), max_size=40))
def test_every_value_is_larger_than_everything_before(ops: list[tuple[bool, int, int]]) -> None:
    clock = Clock()
    highest = 0
    for receive, wall, remote_wall in ops:
        if receive:
            remote = make_hlc(remote_wall, 5)
            value = clock.observe(remote, wall)
            assert value > remote
        else:
            value = clock.now(wall)
        assert value > highest
        assert hlc_wall_ms(value) >= wall
        highest = value


def test_observe_merges_like_the_paper() -> None:
    clock = Clock(make_hlc(NOW, 4))
    # Remote ahead of both: take its millisecond, counter + 1.
    assert clock.observe(make_hlc(NOW + 10, 2), NOW + 5) == make_hlc(NOW + 10, 3)
    # Wall clock ahead of both: the wall wins with counter 0.
    assert clock.observe(make_hlc(NOW, 9), NOW + 20) == make_hlc(NOW + 20, 0)
    # Same millisecond everywhere: the larger counter + 1.
    assert clock.observe(make_hlc(NOW + 20, 7), NOW + 20) == make_hlc(NOW + 20, 8)


def test_observe_refuses_a_peer_clock_a_day_ahead() -> None:
    clock = Clock()
    clock.now(NOW)
    before = clock.last
    assert clock.observe(make_hlc(NOW + MAX_AHEAD_MS), NOW) > before  # exactly a day: fine
    last = clock.last
    with pytest.raises(SyncError, match=r"peer clock is 24\.0 h ahead"):
        clock.observe(make_hlc(NOW + MAX_AHEAD_MS + 1), NOW)
    assert clock.last == last  # refused input moves nothing


@pytest.mark.parametrize("bad", [-1, HLC_MAX + 1, True, "x"])
def test_observe_refuses_non_hlc_values(bad: object) -> None:
    with pytest.raises(SyncError, match="bad HLC"):
        Clock().observe(bad, NOW)  # type: ignore[arg-type]


def test_local_wall_clock_must_be_sane() -> None:
    with pytest.raises(ValueError, match="wall_ms"):
        Clock().now(-5)
