"""Heartbeat, flood and backoff rules, driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from meshdesk.net.channel import PeerAddress
from meshdesk.net.liveness import Backoff, Heartbeat, Quarantine, TokenBucket
from meshdesk.net.peers import PeerRecord, is_dialable


def test_heartbeat_pings_on_interval_and_measures_rtt() -> None:
    hb = Heartbeat(interval=1.0, dead_after=5.0, last_rx=0.0)
    first = hb.ping_due(0.0)
    assert first is not None
    assert hb.ping_due(0.5) is None
    assert hb.pong(first, 0.02) == pytest.approx(0.02)
    assert hb.rtt == pytest.approx(0.02)
    assert hb.pong(first, 0.03) is None  # a pong is counted once
    assert hb.pong(999, 0.03) is None  # unknown nonce
    second = hb.ping_due(1.0)
    assert second is not None
    assert second != first


def test_heartbeat_declares_death_after_silence_only() -> None:
    hb = Heartbeat(interval=1.0, dead_after=5.0, last_rx=0.0)
    assert not hb.dead(5.0)
    assert hb.dead(5.01)
    hb.received(4.0)  # any frame proves life
    assert not hb.dead(8.9)
    assert hb.dead(9.1)


def test_heartbeat_wakes_for_the_nearest_deadline() -> None:
    hb = Heartbeat(interval=1.0, dead_after=5.0, last_rx=0.0)
    hb.ping_due(0.0)
    assert hb.next_wakeup(0.2) == pytest.approx(0.8)
    hb.next_ping = 100.0
    assert hb.next_wakeup(0.0) == pytest.approx(5.0)


def test_unanswered_pings_do_not_pile_up() -> None:
    hb = Heartbeat(interval=1.0, dead_after=5.0, last_rx=0.0)
    for t in range(100):
        hb.ping_due(float(t))
    assert len(hb._sent) <= 6


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=5.0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)  # one token refilled
    assert not bucket.take(0.1)
    assert all(bucket.take(10.0) for _ in range(5))  # never more than the burst


def test_backoff_is_fast_after_a_loss_then_exponential() -> None:
    rng = random.Random(7)
    backoff = Backoff(minimum=0.5, maximum=30.0, fast_window=60.0)
    fast = [backoff.failed(t, rng) for t in (0.0, 1.0, 2.0, 59.0)]
    assert all(0.25 <= d <= 0.75 for d in fast)
    slow = [backoff.failed(60.0 + i, rng) for i in range(12)]
    assert slow[0] <= 1.5  # starts again from the minimum, doubling
    assert max(slow) <= 45.0  # capped at maximum (+50 % jitter)
    assert slow[-1] >= 15.0
    backoff.reset()
    assert backoff.failed(1000.0, rng) <= 0.75


def test_backoff_is_jittered() -> None:
    a = Backoff(0.5, 30.0, 60.0).failed(0.0, random.Random(1))
    b = Backoff(0.5, 30.0, 60.0).failed(0.0, random.Random(2))
    assert a != b


@pytest.mark.parametrize(
    ("host", "port", "ok"),
    [
        ("10.0.0.2", 7420, True),
        ("fd00::2", 7420, True),
        ("example.org", 7420, False),
        ("10.0.0.2", 0, False),
        ("224.0.0.251", 5353, False),
        ("0.0.0.0", 7420, False),
    ],
)
def test_only_ip_literals_from_peers_are_dialled(host: str, port: int, ok: bool) -> None:
    assert is_dialable(host, port) is ok


def test_peer_record_remembers_every_way_it_was_found() -> None:
    record = PeerRecord(node_id="X")
    assert record.learn(PeerAddress("10.0.0.2", 7420, "exchange"))
    assert record.learn(PeerAddress("10.0.0.2", 7420, "inbound"))
    assert not record.learn(PeerAddress("10.0.0.2", 7420, "exchange"))
    assert record.sources() == ["inbound", "exchange"]
    assert record.best_source("10.0.0.2", 7420) == "inbound"
    data = record.to_json()
    assert data["addresses"] == ["10.0.0.2:7420"]
    assert data["state"] == "down"


def test_refusal_waits_the_maximum() -> None:
    backoff = Backoff(minimum=0.5, maximum=30.0, fast_window=60.0)
    delays = [backoff.refused(random.Random(i)) for i in range(20)]
    assert all(15.0 <= d <= 45.0 for d in delays)


def test_quarantine_grows_within_an_episode_and_is_forgiven_after_good_behaviour() -> None:
    q = Quarantine(first=5.0, maximum=40.0, forgive_after=600.0)
    assert not q.active(0.0)
    assert q.offence(0.0) == (5.0, True)
    assert q.active(4.9)
    assert not q.active(5.0)
    assert q.offence(6.0) == (10.0, False)
    assert q.offence(17.0) == (20.0, False)
    assert q.offence(40.0) == (40.0, False)
    assert q.offence(81.0) == (40.0, False)  # capped
    # Behaving for longer than forgive_after starts a new episode at the first length.
    assert q.offence(81.0 + 40.0 + 601.0) == (5.0, True)


def test_an_offence_while_shut_out_never_shortens_the_quarantine() -> None:
    q = Quarantine(first=100.0, maximum=100.0, forgive_after=1.0)
    q.offence(0.0)
    q.offence(50.0)
    assert q.active(149.0)
