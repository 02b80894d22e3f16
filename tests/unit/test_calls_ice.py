"""ICE adjustment for calls: gather on the link's address only."""

from __future__ import annotations

import aioice.ice as aioice_ice
import pytest

from meshdesk.calls import ice


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
