"""The in-memory channel pair: ordering, backpressure, fault knobs, close and cut."""

from __future__ import annotations

import asyncio
import random

import pytest

from meshdesk.errors import ChannelClosed, WireError
from meshdesk.identity import NodeId, NodeInfo, Role
from meshdesk.net.memory import ChannelKnobs, MemoryChannel, MemoryPair, memory_pair
from meshdesk.wire import Frame, Goodbye, Hello, Ping, WireLimits


def _node(seed: int, name: str) -> NodeInfo:
    return NodeInfo(
        node_id=NodeId.from_public_bytes(bytes([seed]) * 32),
        name=name,
        site="大町",
        role=Role.CENTER,
        departments=("福祉課",),
        deployment="デモ市",
        serial=seed,
    )


A = _node(1, "第一小学校")
B = _node(2, "市役所")


def _ping(n: int) -> Ping:
    return Ping(nonce=n, sent_ms=n)


async def _drain(channel: MemoryChannel) -> list[int]:
    """Receive until the peer's FIN; the nonces of the pings received."""
    got: list[int] = []
    while True:
        try:
            frame = await channel.recv()
        except ChannelClosed:
            return got
        assert isinstance(frame, Ping)
        got.append(frame.nonce)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _send_all(pair: MemoryPair, count: int) -> list[int]:
    a, b = pair
    for n in range(count):
        await a.send(_ping(n))
    await a.aclose()
    return await _drain(b)


# -- plain delivery -----------------------------------------------------------------


async def test_ordered_delivery_both_ways_without_knobs() -> None:
    a, b = memory_pair(A, B)
    assert a.peer == B
    assert b.peer == A
    assert a.remote == f"memory:{B.node_id.short}"
    for n in range(100):
        await a.send(_ping(n))
        await b.send(_ping(1000 + n))
    assert [(await b.recv()) for _ in range(100)] == [_ping(n) for n in range(100)]
    assert [(await a.recv()) for _ in range(100)] == [_ping(1000 + n) for n in range(100)]
    await a.aclose()
    await b.aclose()


async def test_frames_go_through_the_codec_and_are_never_shared() -> None:
    a, b = memory_pair(A, B)
    hello = Hello(
        proto=1,
        node_id=str(A.node_id),
        name="第一小学校",
        site="大町",
        role="center",
        listen_port=7443,
        features=("sync", "call"),
    )
    await a.send(hello)
    got = await b.recv()
    assert got == hello
    assert got is not hello
    # The codec's limits apply: a frame they refuse is refused at send.
    small = memory_pair(A, B, limits=WireLimits(max_str=8))
    with pytest.raises(WireError):
        await small.first.send(Goodbye(reason="とても長いお別れの理由です"))
    assert not small.first.closed  # a bad frame does not break the channel
    await small.aclose()
    await a.aclose()


async def test_backpressure_send_waits_for_room() -> None:
    a, b = memory_pair(A, B, knobs=ChannelKnobs(queue_limit=4))
    for n in range(4):
        await a.send(_ping(n))
    blocked = asyncio.ensure_future(a.send(_ping(4)))
    try:
        await _settle()
        assert not blocked.done()
        assert await b.recv() == _ping(0)
        await asyncio.wait_for(blocked, 1.0)
    finally:
        blocked.cancel()
    assert [(await b.recv()) for _ in range(4)] == [_ping(n) for n in range(1, 5)]
    await a.aclose()
    await b.aclose()


async def test_a_sender_blocked_by_backpressure_is_released_by_close() -> None:
    a, b = memory_pair(A, B, knobs=ChannelKnobs(queue_limit=1))
    await a.send(_ping(0))
    blocked = asyncio.ensure_future(a.send(_ping(1)))
    await _settle()
    await a.aclose()
    with pytest.raises(ChannelClosed, match="closed while sending"):
        await asyncio.wait_for(blocked, 1.0)
    # The peer still gets what was in flight, then the FIN.
    assert await _drain(b) == [0]


def test_knobs_are_validated() -> None:
    for bad in (
        {"loss": 1.5},
        {"duplicate": -0.1},
        {"reorder": 2.0},
        {"latency": -1.0},
        {"jitter": float("nan")},
        {"queue_limit": 0},
    ):
        with pytest.raises(ValueError, match="ChannelKnobs"):
            ChannelKnobs(**bad)
    with pytest.raises(ValueError, match=r"seeded random\.Random"):
        memory_pair(A, B, knobs=ChannelKnobs(loss=0.1))


# -- knobs --------------------------------------------------------------------------


async def test_loss_one_delivers_nothing_but_the_fin() -> None:
    pair = memory_pair(A, B, knobs=ChannelKnobs(loss=1.0), rng=random.Random(1))
    assert await _send_all(pair, 50) == []


async def test_duplicate_one_delivers_every_frame_twice() -> None:
    pair = memory_pair(A, B, knobs=ChannelKnobs(duplicate=1.0), rng=random.Random(1))
    assert await _send_all(pair, 5) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


async def test_reorder_one_swaps_each_frame_with_the_next() -> None:
    pair = memory_pair(A, B, knobs=ChannelKnobs(reorder=1.0), rng=random.Random(1))
    # 4 is held back with nothing after it: it still comes before the FIN.
    assert await _send_all(pair, 5) == [1, 0, 3, 2, 4]


async def test_partial_loss_drops_some_and_keeps_order() -> None:
    pair = memory_pair(A, B, knobs=ChannelKnobs(loss=0.5), rng=random.Random(3))
    got = await _send_all(pair, 200)
    assert 0 < len(got) < 200
    assert got == sorted(got)


async def test_latency_delays_each_frame_without_serialising_them() -> None:
    latency = 0.05
    a, b = memory_pair(A, B, knobs=ChannelKnobs(latency=latency))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(10):
        await a.send(_ping(n))
    arrivals: list[float] = []
    for n in range(10):
        assert await b.recv() == _ping(n)
        arrivals.append(loop.time())
    assert all(t >= start + latency for t in arrivals)
    # Pipelined: ten frames take about one latency, not ten.
    assert arrivals[-1] < start + 5 * latency
    await a.aclose()
    await b.aclose()


async def test_jitter_varies_delay_but_never_reorders() -> None:
    knobs = ChannelKnobs(latency=0.001, jitter=0.02)
    pair = memory_pair(A, B, knobs=knobs, rng=random.Random(5))
    assert await _send_all(pair, 30) == list(range(30))


async def test_same_seed_same_deliveries() -> None:
    knobs = ChannelKnobs(loss=0.2, duplicate=0.2, reorder=0.2, jitter=0.002)

    async def run(seed: int) -> list[int]:
        return await _send_all(memory_pair(A, B, knobs=knobs, rng=random.Random(seed)), 150)

    first = await run(42)
    assert first == await run(42)
    assert first != await run(43)
    assert first != list(range(150))  # the knobs did something


# -- close and cut ------------------------------------------------------------------


async def test_close_is_a_fin_after_frames_in_flight() -> None:
    a, b = memory_pair(A, B, knobs=ChannelKnobs(latency=0.02))
    await a.send(_ping(1))
    await a.send(_ping(2))
    await a.aclose()
    assert [a.closed, b.closed] == [True, False]
    assert await b.recv() == _ping(1)
    assert await b.recv() == _ping(2)
    with pytest.raises(ChannelClosed, match="closed the channel"):
        await b.recv()
    assert b.closed  # the peer's FIN closes this end too
    with pytest.raises(ChannelClosed):
        await b.send(_ping(3))
    with pytest.raises(ChannelClosed):
        await b.recv()


async def test_send_and_recv_on_a_closed_end_raise_and_close_is_idempotent() -> None:
    a, b = memory_pair(A, B)
    await a.aclose()
    await a.aclose()
    with pytest.raises(ChannelClosed):
        await a.send(_ping(1))
    with pytest.raises(ChannelClosed):
        await a.recv()
    await b.aclose()


async def test_a_pending_recv_raises_when_its_own_end_closes() -> None:
    a, b = memory_pair(A, B)
    pending = asyncio.ensure_future(b.recv())
    await _settle()
    await b.aclose()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(pending, 1.0)
    await a.aclose()


async def test_frames_sent_to_a_closed_end_are_dropped_without_blocking() -> None:
    a, b = memory_pair(A, B, knobs=ChannelKnobs(queue_limit=2, latency=0.05))
    await b.aclose()
    for n in range(10):  # would block on the queue limit if they were kept
        await a.send(_ping(n))
    with pytest.raises(ChannelClosed):
        await a.recv()


async def test_cut_loses_undelivered_frames_and_restore_resumes() -> None:
    pair = memory_pair(A, B, knobs=ChannelKnobs(latency=0.02, queue_limit=2))
    a, b = pair
    await a.send(_ping(1))  # in flight when the cable is pulled
    pair.cut()
    cut_state = pair.is_cut
    for n in range(10):  # lost, and never blocked by the queue limit
        await a.send(_ping(100 + n))
    pending = asyncio.ensure_future(b.recv())
    # Something that does not happen: past the 0.02 s latency, nothing arrives.
    await asyncio.sleep(0.05)
    assert not pending.done()  # no FIN either: the peer just hears nothing
    pair.restore()
    assert (cut_state, pair.is_cut) == (True, False)
    await a.send(_ping(2))
    assert await asyncio.wait_for(pending, 1.0) == _ping(2)
    await pair.aclose()


async def test_cut_keeps_frames_that_already_arrived() -> None:
    pair = memory_pair(A, B)
    a, b = pair
    await a.send(_ping(1))  # no latency: delivered at once
    pair.cut()
    assert await b.recv() == _ping(1)
    pair.restore()
    await pair.aclose()


async def test_a_close_during_a_cut_reaches_the_peer_after_restore() -> None:
    pair = memory_pair(A, B)
    a, b = pair
    pair.cut()
    await a.aclose()
    pending = asyncio.ensure_future(b.recv())
    await asyncio.sleep(0.02)  # something that does not happen: the FIN stays behind the cut
    assert not pending.done()
    pair.restore()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(pending, 1.0)


async def test_a_fin_in_flight_lost_by_a_cut_is_sent_again_on_restore() -> None:
    pair = memory_pair(A, B, knobs=ChannelKnobs(latency=0.02))
    a, b = pair
    await a.send(_ping(1))
    await a.aclose()
    pair.cut()  # both the ping and the FIN were still on the wire
    pair.restore()
    assert await _drain(b) == []


async def test_many_pairs_with_concurrent_traffic() -> None:
    knobs = ChannelKnobs(latency=0.001, jitter=0.002, queue_limit=8)
    pairs = [memory_pair(A, B, knobs=knobs, rng=random.Random(n)) for n in range(20)]

    async def run(pair: MemoryPair) -> list[int]:
        a, b = pair
        async with asyncio.TaskGroup() as tg:
            received = tg.create_task(_drain(b))
            for n in range(50):
                await a.send(_ping(n))
            await a.aclose()
        return received.result()

    results = await asyncio.gather(*(run(p) for p in pairs))
    assert all(r == list(range(50)) for r in results)


async def test_async_context_manager_closes() -> None:
    a, b = memory_pair(A, B)
    async with a as entered:
        assert entered is a
    assert a.closed
    with pytest.raises(ChannelClosed):
        await b.recv()


async def test_mixed_frame_kinds_round_trip() -> None:
    a, b = memory_pair(A, B)
    sent: list[Frame] = [_ping(1), Goodbye(reason="さようなら")]
    for frame in sent:
        await a.send(frame)
    got = [await b.recv(), await b.recv()]
    assert got == sent
    await a.aclose()
    await b.aclose()
