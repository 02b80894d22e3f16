"""The node's event bus: fan-out, filters, bounded queues, other threads, log lines."""

from __future__ import annotations

import asyncio
import logging
import threading

from meshdesk.bus import BusLogHandler, EventBus, NodeEvent


async def _take(sub: object, n: int) -> list[NodeEvent]:
    out: list[NodeEvent] = []
    async with asyncio.timeout(5):
        async for event in sub:  # type: ignore[attr-defined]
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_every_subscriber_gets_the_kinds_it_asked_for() -> None:
    bus = EventBus(clock_ms=lambda: 42)
    async with bus.subscribe() as everything, bus.subscribe(["case"]) as cases:
        bus.publish("peer", {"change": "linked"})
        bus.publish("case", {"case_ids": ["c1"], "source": "local"})
        got_all = await _take(everything, 2)
        got_cases = await _take(cases, 1)
    assert [e.kind for e in got_all] == ["peer", "case"]
    assert got_cases == [NodeEvent("case", {"case_ids": ["c1"], "source": "local"}, 42)]
    assert got_cases[0].to_json() == {
        "event": "case",
        "data": {"case_ids": ["c1"], "source": "local"},
        "ts_ms": 42,
    }
    assert bus.subscribers == 0


async def test_a_slow_subscriber_loses_the_oldest_and_is_told() -> None:
    bus = EventBus()
    async with bus.subscribe(limit=3) as sub:
        for i in range(10):
            bus.publish("sync", {"i": i})
        got = await _take(sub, 4)
    assert got[0].kind == "lagged"
    assert got[0].data == {"dropped": 7}
    assert [e.data["i"] for e in got[1:]] == [7, 8, 9]


async def test_close_ends_iteration_after_queued_events() -> None:
    bus = EventBus()
    async with bus.subscribe() as sub:
        bus.publish("log", {"message": "last words"})
        bus.close()
        got = [event async for event in sub]
    assert [e.data for e in got] == [{"message": "last words"}]


async def test_publishing_from_another_thread_lands_on_the_loop() -> None:
    bus = EventBus()
    async with bus.subscribe() as sub:
        worker = threading.Thread(target=bus.publish, args=("log", {"from": "thread"}))
        worker.start()
        worker.join()
        got = await _take(sub, 1)
    assert got[0].data == {"from": "thread"}


async def test_log_records_become_log_events() -> None:
    bus = EventBus()
    logger = logging.getLogger("meshdesk.test_bus")
    handler = BusLogHandler(bus)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        async with bus.subscribe(["log"]) as sub:
            logger.debug("not published (below INFO)")
            logger.warning("peer %s refused", "本部")
            # A broken log call somewhere must not raise out of the handler.
            handler.emit(logging.makeLogRecord({"msg": "bad format %d", "args": ("x",)}))
            got = await _take(sub, 2)
    finally:
        logger.removeHandler(handler)
    assert got[0].data == {
        "level": "WARNING",
        "logger": "meshdesk.test_bus",
        "message": "peer 本部 refused",
    }
    assert got[1].data["message"] == "bad format %d"
