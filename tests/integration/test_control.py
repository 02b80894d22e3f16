"""The control socket: owner-only, one JSON line each way, robust to bad clients."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from meshdesk import control
from meshdesk.errors import HomeError, MeshdeskError, UsageError


async def _echo(args: Mapping[str, Any]) -> object:
    return {"echo": dict(args)}


async def _fail(_: Mapping[str, Any]) -> object:
    raise UsageError("no such case")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[control.ControlServer]:
    async with control.ControlServer(
        tmp_path / "control.sock", {"echo": _echo, "fail": _fail}
    ) as srv:
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
    ],
)
async def test_bad_requests_get_an_error_and_change_nothing(
    server: control.ControlServer, payload: bytes, message: str
) -> None:
    reply = json.loads(await _raw(server.path, payload))
    assert reply["ok"] is False
    assert message in reply["error"]
    assert await control.call(server.path, "echo", {"x": 1}) == {"echo": {"x": 1}}


async def test_over_long_line_drops_only_that_client(server: control.ControlServer) -> None:
    line = await _raw(server.path, b"x" * (control.MAX_LINE + 10))
    assert line == b""
    assert await control.call(server.path, "echo") == {"echo": {}}


async def test_second_server_on_a_live_socket_is_refused(
    server: control.ControlServer,
) -> None:
    with pytest.raises(HomeError, match="already running"):
        async with control.ControlServer(server.path, {}):
            pass


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    async with control.ControlServer(path, {"echo": _echo}) as srv:
        assert await control.call(srv.path, "echo") == {"echo": {}}
    assert not path.exists()


async def test_not_running(tmp_path: Path) -> None:
    with pytest.raises(control.NodeNotRunning, match="no node is running"):
        await control.call(tmp_path / "control.sock", "echo")
    assert await control.try_call(tmp_path / "control.sock", "echo") is None


async def test_close_is_idempotent_and_removes_the_socket(tmp_path: Path) -> None:
    srv = control.ControlServer(tmp_path / "control.sock", {})
    await srv.start()
    await srv.aclose()
    await srv.aclose()
    assert not (tmp_path / "control.sock").exists()
