""":class:`SocketNode`: the :class:`~meshdesk.tui.api.NodeApi` of a node over its control socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.errors import MeshdeskError
from meshdesk.tui.api import ConnectionLost, Event, call_op, case_op

__all__ = ["SocketNode"]


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

    async def request(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self._call(op, args)

    async def case(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self._call(case_op(op), args)

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self._call(call_op(op), args)

    @contextlib.asynccontextmanager
    async def events(
        self, kinds: Collection[str] | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        wanted = None if kinds is None else list(kinds)
        try:
            async with control.subscribe(self._path, wanted, wait=self._wait) as stream:
                yield _lost_on_end(stream)
        except control.NodeNotRunning as exc:
            raise ConnectionLost(str(exc)) from exc


async def _lost_on_end(stream: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """The node's stream, with its end (the node went away) as :class:`ConnectionLost`."""
    try:
        async for event in stream:
            yield event
    except control.NodeNotRunning as exc:
        raise ConnectionLost(str(exc)) from exc
