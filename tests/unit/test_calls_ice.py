"""ICE adjustments for calls: gather on the link's address only, no idle pacing wait."""

from __future__ import annotations

from dataclasses import dataclass

import aioice.ice as aioice_ice
import pytest

from meshdesk.calls import ice

State = aioice_ice.CandidatePair.State


def test_the_local_address_towards_a_peer_is_found_without_sending() -> None:
    assert ice.local_address_towards("127.0.0.1:7420") == "127.0.0.1"
    assert ice.local_address_towards("127.0.0.1") == "127.0.0.1"
    assert ice.local_address_towards("desk-3.local:7420") is None
    assert ice.local_address_towards("?") is None


def test_gathering_is_narrowed_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    ice.install()
    monkeypatch.setattr(ice, "_original_host_addresses", lambda v4, v6: ["10.0.0.5", "172.17.0.1"])
    assert aioice_ice.get_host_addresses(True, True) == ["10.0.0.5", "172.17.0.1"]
    with ice.only_addresses(["10.0.0.5"]):
        assert aioice_ice.get_host_addresses(True, True) == ["10.0.0.5"]
    with ice.only_addresses(["192.168.9.9"]):  # not ours: offer everything rather than nothing
        assert aioice_ice.get_host_addresses(True, True) == ["10.0.0.5", "172.17.0.1"]
    with ice.only_addresses(None):
        assert len(aioice_ice.get_host_addresses(True, True)) == 2


@dataclass
class _Pair:
    state: State


class _Connection:
    """What the pacing loop looks at: the check list and whether more candidates come."""

    def __init__(self, states: list[State], expected: bool = False) -> None:
        self._check_list = [_Pair(s) for s in states]
        self._check_list_done = False
        self._expected = expected
        self.started: list[_Pair] = []

    def check_start_task(self, pair: _Pair) -> None:
        pair.state = State.IN_PROGRESS
        self.started.append(pair)

    def _remote_candidates_expected(self) -> bool:
        return self._expected


def test_pacing_stops_once_the_last_pair_is_started() -> None:
    ice.install()
    periodic = aioice_ice.Connection._check_periodic
    one = _Connection([State.WAITING])
    assert periodic(one) is False  # started it, and nothing is left: no 20 ms wait
    assert len(one.started) == 1
    two = _Connection([State.WAITING, State.FROZEN])
    assert periodic(two) is True  # still pacing between pairs
    assert periodic(two) is False
    assert len(two.started) == 2
    trickling = _Connection([State.WAITING], expected=True)
    assert periodic(trickling) is True  # more candidates may come: keep the loop
