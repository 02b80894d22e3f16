"""The local control socket: how the CLI and the console talk to a running node.

A Unix socket ``HOME/control.sock`` (mode 0600, in a 0700 home), one JSON object
per line each way::

    → {"op": "peers", "args": {}}
    ← {"ok": true, "result": [...]}
    ← {"ok": false, "error": "unknown operation 'x'"}

Only the node's owner can connect. Requests are bounded in size and time; a bad
request gets an error reply and the connection stays usable. The operations, their
arguments and help are the registry's (:mod:`meshdesk.ops`): an unknown operation
gets one line listing the known ones, a bad argument one line naming the key.

One operation streams: ``{"op": "subscribe", "args": {"kinds": [...] | null}}`` is
answered like any other, then the node writes one line per event
(``{"event": kind, "data": {...}, "ts_ms": n}``, see :mod:`meshdesk.bus`) until
the client hangs up. Use :func:`subscribe` on the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

from meshdesk._lifecycle import AsyncResource
from meshdesk.bus import EventBus, NodeEvent
from meshdesk.errors import HomeError, MeshdeskError
from meshdesk.ops import Dispatcher

__all__ = ["ControlServer", "NodeNotRunning", "call", "subscribe", "try_call"]

log = logging.getLogger(__name__)

#: Longest request or reply line, in bytes.
MAX_LINE = 1 << 20
#: A client that sends nothing for this long is disconnected.
IDLE_TIMEOUT = 60.0


_TOO_LONG = f"request longer than {MAX_LINE} bytes; the connection is closed"


def _reply(writer: asyncio.StreamWriter, reply: Mapping[str, object]) -> None:
    """One JSON line. Text a client sent may hold lone surrogates (JSON escapes
    them): they are replaced, never allowed to break the reply."""
    text = json.dumps(reply, ensure_ascii=False)
    writer.write(text.encode("utf-8", "replace") + b"\n")


class NodeNotRunning(HomeError):
    """No node answers on the home's control socket."""


async def _socket_answers(path: Path) -> bool:
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ControlServer(AsyncResource):
    """Serves control requests while the node runs; an async context manager.

    Requests run through ``ops`` (a :class:`~meshdesk.ops.Dispatcher`): it checks
    the operation's arguments against the registry before the handler runs. The
    operation that streams (``subscribe``) is served here, from ``bus``.
    """

    def __init__(self, path: Path, ops: Dispatcher, *, bus: EventBus | None = None) -> None:
        self._path = path
        self._ops = ops
        self._bus = bus
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> Path:
        return self._path

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Bind the socket.

        Raises:
            HomeError: another node already answers on this home's socket.
        """
        if self._path.exists() or self._path.is_symlink():
            if await _socket_answers(self._path):
                raise HomeError(f"a node is already running in {self._path.parent}")
            log.info("removing stale control socket %s", self._path)
            self._path.unlink()
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self._path), limit=MAX_LINE
        )
        os.chmod(self._path, 0o600)

    async def aclose(self) -> None:
        """Stop serving and remove the socket; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A client connected: its task is known at once (a connection accepted as the
        node stops is cancelled with the others), and its socket is closed however the
        task ends — even cancelled before it first ran."""
        if self._server is None:
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve_client(reader, writer))
        self._clients.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._clients.discard(finished)
            writer.close()

        task.add_done_callback(done)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        line = await reader.readline()
                except ValueError:
                    # Longer than MAX_LINE: say so, then hang up (the rest of that
                    # line cannot be told from the next request).
                    log.warning("control: refused a request longer than %d bytes", MAX_LINE)
                    _reply(writer, {"ok": False, "error": _TOO_LONG})
                    await writer.drain()
                    break
                except (TimeoutError, ConnectionError):
                    break  # idle, or reset
                if not line:
                    break
                reply, kinds = await self._answer(line)
                if kinds is not None:
                    await self._stream(kinds, reader, writer)
                    break
                _reply(writer, reply)
                await writer.drain()
        except ConnectionError as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> tuple[dict[str, object], list[str] | None]:
        """The reply to one request line, or (for a valid subscription) the kinds
        to stream (empty: every kind)."""
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not JSON (one UTF-8 object per line)"}, None
        except RecursionError:
            log.warning("control: refused a request nested too deeply")
            return {"ok": False, "error": "request is not JSON: nested too deeply"}, None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "request must be an object with an 'op' string"}, None
        name, args = request["op"], request.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}, None
        try:
            spec = self._ops.registry.spec(name)
            if not spec.streams:
                return {"ok": True, "result": await self._ops.run(name, args)}, None
            kinds = spec.check(args).texts("kinds")
            if self._bus is None:
                return {"ok": False, "error": "this node publishes no events"}, None
            return {}, kinds
        except MeshdeskError as exc:
            return {"ok": False, "error": str(exc)}, None
        except Exception as exc:  # a bug in an op: answer, log it, keep serving
            log.exception("control: operation %r failed", name[:40])
            return {"ok": False, "error": f"internal error in {name[:40]!r}: {exc}"}, None

    async def _stream(
        self,
        kinds: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Answer a subscription, then write events until the client hangs up."""
        assert self._bus is not None
        wanted = kinds or None
        async with self._bus.subscribe(wanted) as sub:
            reply = {"ok": True, "result": {"subscribed": wanted}}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            hangup = asyncio.ensure_future(_until_eof(reader))
            hangup.add_done_callback(lambda _: sub.close())
            try:
                async for event in sub:
                    _reply(writer, event.to_json())
                    await writer.drain()
            finally:
                hangup.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, ValueError):
                    await hangup


async def call(
    path: Path, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 10.0
) -> Any:
    """Send one request to the node at ``path`` and return its result.

    Raises:
        NodeNotRunning: nothing answers on the socket.
        MeshdeskError: the node answered with an error.
    """
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (OSError, TimeoutError) as exc:
        raise NodeNotRunning(f"no node is running in {path.parent}") from exc
    try:
        async with asyncio.timeout(wait):
            request = {"op": op, "args": dict(args or {})}
            writer.write(json.dumps(request, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
    except TimeoutError as exc:
        raise MeshdeskError(f"the node in {path.parent} did not answer within {wait:g} s") from exc
    except (OSError, ValueError) as exc:
        raise MeshdeskError(f"lost the node in {path.parent}: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line:
        raise NodeNotRunning(f"the node in {path.parent} closed the control connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise MeshdeskError(str(reply.get("error", "the node reported an error")))
    return reply.get("result")


async def try_call(path: Path, op: str, args: Mapping[str, Any] | None = None) -> Any | None:
    """Like :func:`call`, but None when no node runs (for commands that work offline)."""
    try:
        return await call(path, op, args)
    except NodeNotRunning:
        return None


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop whatever a subscribed client sends, until it hangs up."""
    while await reader.read(4096):
        pass


@contextlib.asynccontextmanager
async def subscribe(
    path: Path, kinds: list[str] | None = None, *, wait: float = 10.0
) -> AsyncIterator[AsyncIterator[NodeEvent]]:
    """Stream the events of the node at ``path``.

    Yields an async iterator of :class:`~meshdesk.bus.NodeEvent`; iterating it
    raises :class:`NodeNotRunning` when the node goes away.

    Raises:
        NodeNotRunning: nothing answers on the socket.
        MeshdeskError: the node refused the subscription.
    """
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (OSError, TimeoutError) as exc:
        raise NodeNotRunning(f"no node is running in {path.parent}") from exc
    try:
        request = {"op": "subscribe", "args": {"kinds": kinds}}
        try:
            async with asyncio.timeout(wait):
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
        except (OSError, TimeoutError, ValueError) as exc:
            raise NodeNotRunning(f"lost the node in {path.parent}: {exc}") from exc
        if not line:
            raise NodeNotRunning(f"the node in {path.parent} closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise MeshdeskError(str(reply.get("error", "the node refused the subscription")))
        yield _events(reader, path)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _events(reader: asyncio.StreamReader, path: Path) -> AsyncIterator[NodeEvent]:
    while True:
        try:
            line = await reader.readline()
        except (OSError, ValueError) as exc:
            raise NodeNotRunning(f"lost the node in {path.parent}: {exc}") from exc
        if not line:
            raise NodeNotRunning(f"the node in {path.parent} stopped")
        try:
            item = json.loads(line)
            yield NodeEvent(str(item["event"]), dict(item["data"]), int(item["ts_ms"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed event line from %s", path)
