"""The control socket: owner-only, one JSON line each way, robust to bad clients."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from waits import AsyncWaitUntil

from meshdesk import control
from meshdesk.bus import EventBus
from meshdesk.errors import HomeError, MeshdeskError, UsageError
from meshdesk.ops import NODE_OPS, Args, Dispatcher, Registry, Topic, integer, text

#: A registry of test operations, plus the node's (for ``subscribe``).
TEST = Topic[None]("test", "operations of these tests")


@TEST.op("echo", "say the arguments back", text("name"), integer("x"), integer("a"))
async def _echo(_: None, args: Args) -> object:
    return {"echo": {k: v for k, v in args.items() if v is not None}}


@TEST.op("fail", "always refuse")
async def _fail(_: None, args: Args) -> object:
    raise UsageError("no such case")


REGISTRY = Registry(TEST, NODE_OPS)


def ops() -> Dispatcher:
    return REGISTRY.serve(TEST.bind(None), complete=False)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[control.ControlServer]:
    async with control.ControlServer(tmp_path / "control.sock", ops()) as srv:
        yield srv


async def _raw(path: Path, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line


async def test_call_round_trip_with_japanese(server: control.ControlServer) -> None:
    result = await control.call(server.path, "echo", {"name": "第一小学校"})
    assert result == {"echo": {"name": "第一小学校"}}


async def test_socket_is_owner_only(server: control.ControlServer) -> None:
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600


async def test_errors_come_back_as_meshdesk_errors(server: control.ControlServer) -> None:
    with pytest.raises(MeshdeskError, match="no such case"):
        await control.call(server.path, "fail")
    with pytest.raises(MeshdeskError, match="unknown operation 'nope'"):
        await control.call(server.path, "nope")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "'op' string"),
        (b'{"op": 3}\n', "'op' string"),
        (b'{"op": "echo", "args": []}\n', "'args' must be an object"),
        (b"\xff\xfe\n", "not JSON"),
        (b'{"op": "echo", "args": {"name": "\xff"}}\n', "not JSON"),
        (b"[" * 200_000 + b"\n", "nested too deeply"),
        (b'{"op": "echo", "args": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001 + b"\n", "nested"),
        (b'{"op": "\\ud800"}\n', "unknown operation"),
    ],
)
async def test_bad_requests_get_an_error_and_change_nothing(
    server: control.ControlServer, payload: bytes, message: str
) -> None:
    reply = json.loads(await _raw(server.path, payload))
    assert reply["ok"] is False
    assert message in reply["error"]
    assert await control.call(server.path, "echo", {"x": 1}) == {"echo": {"x": 1}}


async def test_over_long_line_is_refused_and_drops_only_that_client(
    server: control.ControlServer,
) -> None:
    reply = json.loads(await _raw(server.path, b"x" * (control.MAX_LINE + 10)))
    assert reply["ok"] is False
    assert "longer than" in reply["error"]
    assert await control.call(server.path, "echo") == {"echo": {}}


async def test_a_failing_operation_is_answered_logged_and_the_server_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Topic[None]("broken", "an op with a bug")

    @broken.op("crash", "raises what no op should")
    async def _crash(_: None, args: Args) -> object:
        raise ZeroDivisionError("a bug")

    dispatcher = Registry(broken).serve(broken.bind(None))
    async with control.ControlServer(tmp_path / "control.sock", dispatcher) as srv:
        with pytest.raises(MeshdeskError, match="internal error in 'crash'"):
            await control.call(srv.path, "crash")
        assert "ZeroDivisionError" in caplog.text
        with pytest.raises(MeshdeskError, match="internal error"):
            await control.call(srv.path, "crash")  # still serving


async def test_second_server_on_a_live_socket_is_refused(
    server: control.ControlServer,
) -> None:
    with pytest.raises(HomeError, match="already running"):
        async with control.ControlServer(server.path, ops()):
            pass


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    async with control.ControlServer(path, ops()) as srv:
        assert await control.call(srv.path, "echo") == {"echo": {}}
    assert not path.exists()


async def test_not_running(tmp_path: Path) -> None:
    with pytest.raises(control.NodeNotRunning, match="no node is running"):
        await control.call(tmp_path / "control.sock", "echo")
    assert await control.try_call(tmp_path / "control.sock", "echo") is None


async def test_close_is_idempotent_and_removes_the_socket(tmp_path: Path) -> None:
    srv = control.ControlServer(tmp_path / "control.sock", ops())
    await srv.start()
    await srv.aclose()
    await srv.aclose()
    assert not (tmp_path / "control.sock").exists()


@pytest.mark.parametrize("turns", range(1, 6))
async def test_clients_connected_as_the_node_stops_are_hung_up(tmp_path: Path, turns: int) -> None:
    """Whenever a client was accepted (its handler not started yet, or waiting for a
    line), stopping the server hangs it up at once and leaves no socket open. (One
    still in the kernel's backlog, never accepted, waits for its own timeout.)"""
    srv = control.ControlServer(tmp_path / "control.sock", ops())
    await srv.start()
    clients = [await asyncio.open_unix_connection(str(srv.path)) for _ in range(8)]
    for _ in range(turns):
        await asyncio.sleep(0)
    await srv.aclose()
    for reader, writer in clients:
        async with asyncio.timeout(5):  # not the server's idle timeout
            assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def bus_server(tmp_path: Path) -> AsyncIterator[tuple[control.ControlServer, EventBus]]:
    bus = EventBus()
    async with control.ControlServer(tmp_path / "control.sock", ops(), bus=bus) as srv:
        yield srv, bus


async def test_subscribe_streams_published_events(
    bus_server: tuple[control.ControlServer, EventBus], async_wait_until: AsyncWaitUntil
) -> None:
    srv, bus = bus_server
    async with control.subscribe(srv.path, ["case"]) as events:
        await async_wait_until(lambda: bus.subscribers == 1, 5)
        bus.publish("peer", {"change": "linked"})  # not asked for
        bus.publish("case", {"case_ids": ["甲"], "source": "sync"})
        async with asyncio.timeout(5):
            event = await anext(events)
    assert (event.kind, event.data) == ("case", {"case_ids": ["甲"], "source": "sync"})
    # The client hung up: its subscription is gone, and other requests still work.
    await async_wait_until(lambda: bus.subscribers == 0, 5)
    assert await control.call(srv.path, "echo", {"a": 1}) == {"echo": {"a": 1}}


async def test_a_stopping_node_ends_the_stream(tmp_path: Path) -> None:
    bus = EventBus()
    srv = control.ControlServer(tmp_path / "control.sock", ops(), bus=bus)
    await srv.start()
    async with control.subscribe(srv.path) as events:
        await srv.aclose()
        with pytest.raises(control.NodeNotRunning, match="stopped"):
            async with asyncio.timeout(5):
                await anext(events)


@pytest.mark.parametrize(
    "args",
    [{"kinds": "case"}, {"kinds": []}, {"kinds": [1]}, {"kinds": ["x" * 100]}, {"kinds": {}}],
)
async def test_bad_subscriptions_get_an_error(
    bus_server: tuple[control.ControlServer, EventBus], args: dict[str, Any]
) -> None:
    srv, bus = bus_server
    with pytest.raises(MeshdeskError, match=r"^kinds "):
        await control.call(srv.path, "subscribe", args)
    assert bus.subscribers == 0


async def test_subscribe_without_a_bus_is_refused(server: control.ControlServer) -> None:
    with pytest.raises(MeshdeskError, match="publishes no events"):
        async with control.subscribe(server.path):
            pass


async def test_adding_an_operation_is_one_entry(tmp_path: Path) -> None:
    """One declaration: served by the socket, its arguments checked, listed when unknown."""
    topic = Topic[dict[str, int]]("counter", "a counter")

    @topic.op("bump", "add to the counter", integer("by", low=1, high=10, required=True))
    async def bump(counter: dict[str, int], args: Args) -> object:
        counter["n"] += args.maybe("by", int) or 0
        return counter["n"]

    counter = {"n": 0}
    registry = Registry(topic)
    async with control.ControlServer(
        tmp_path / "control.sock", registry.serve(topic.bind(counter))
    ) as srv:
        assert await control.call(srv.path, "bump", {"by": 3}) == 3
        for bad, message in [
            ({}, "by is required"),
            ({"by": "3"}, "by must be a whole number"),
            ({"by": 11}, "by must be at most 10"),
            ({"by": 2, "bye": 1}, "unknown argument 'bye' for bump"),
        ]:
            with pytest.raises(MeshdeskError) as refused:
                await control.call(srv.path, "bump", bad)
            assert str(refused.value).startswith(message)
            assert "\n" not in str(refused.value)
        assert counter == {"n": 3}  # nothing ran for a bad argument
        with pytest.raises(MeshdeskError, match=r"unknown operation 'bum' \(known: bump\)$"):
            await control.call(srv.path, "bum")


async def test_every_operation_needs_a_handler() -> None:
    alone = Registry(TEST)
    with pytest.raises(ValueError, match=r"without a handler: echo, fail$"):
        alone.serve()
    assert alone.serve(TEST.bind(None)).handled() == ["echo", "fail"]
    with pytest.raises(ValueError, match=r"not in the registry: echo, fail$"):
        Registry(NODE_OPS).serve(TEST.bind(None), complete=False)


async def test_a_streaming_operation_is_checked_before_it_streams(
    bus_server: tuple[control.ControlServer, EventBus],
) -> None:
    srv, bus = bus_server
    with pytest.raises(MeshdeskError, match="unknown argument 'kind' for subscribe"):
        await control.call(srv.path, "subscribe", {"kind": ["case"]})
    assert bus.subscribers == 0
