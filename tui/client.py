""":class:`SocketNode`: the :class:`~meshdesk.tui.api.NodeApi` of a node over its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.errors import MeshdeskError, UsageError
from meshdesk.tui.api import CALL_OPS, ConnectionLost, Event

__all__ = ["SocketNode"]

#: Longest event line accepted from the node.
_MAX_LINE = control.MAX_LINE


class SocketNode:
    """Each request is one short connection; the event stream is one long one."""

    def __init__(self, path: Path, *, wait: float = 10.0) -> None:
        self._path = path
        self._wait = wait

    @property
    def where(self) -> str:
        return str(self._path.parent)

    async def _call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        try:
            return await control.call(self._path, op, args, wait=self._wait)
        except control.NodeNotRunning as exc:
            raise ConnectionLost(str(exc)) from exc
        except MeshdeskError as exc:
            if str(exc).startswith("lost the node"):
                raise ConnectionLost(str(exc)) from exc
            raise

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("status")
        return result

    async def peers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("peers")
        return result

    async def sync_state(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("sync")
        return result

    async def directory(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("directory")
        return result

    async def case(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self._call("case", {"op": op, "args": dict(args)})

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        if op not in CALL_OPS:
            raise UsageError(f"unknown call operation {op!r}")
        return await self._call(op, args)

    @contextlib.asynccontextmanager
    async def events(
        self, kinds: Collection[str] | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        try:
            async with asyncio.timeout(self._wait):
                reader, writer = await asyncio.open_unix_connection(
                    str(self._path), limit=_MAX_LINE
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(f"no node is running in {self.where}") from exc
        try:
            try:
                request = {
                    "op": "subscribe",
                    "args": {"kinds": None if kinds is None else list(kinds)},
                }
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                async with asyncio.timeout(self._wait):
                    first = await reader.readline()
                reply = json.loads(first) if first else None
            except (OSError, ValueError, TimeoutError) as exc:
                raise ConnectionLost(f"lost the node in {self.where}: {exc}") from exc
            if reply is None:
                raise ConnectionLost(f"the node in {self.where} closed the event stream")
            if not isinstance(reply, dict) or not reply.get("ok"):
                error = reply.get("error") if isinstance(reply, dict) else None
                raise MeshdeskError(str(error or "the node refused to stream events"))
            yield _stream(reader, self.where)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await asyncio.shield(writer.wait_closed())


async def _stream(reader: asyncio.StreamReader, where: str) -> AsyncIterator[Event]:
    while True:
        try:
            line = await reader.readline()
        except (OSError, ValueError) as exc:
            raise ConnectionLost(f"lost the node in {where}: {exc}") from exc
        if not line:
            return
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConnectionLost(f"the node in {where} sent a bad event line") from exc
        kind, data, ts = obj.get("event"), obj.get("data"), obj.get("ts_ms")
        if not isinstance(kind, str) or not isinstance(data, dict) or not isinstance(ts, int):
            raise ConnectionLost(f"the node in {where} sent a malformed event")
        yield Event(kind, data, ts)
