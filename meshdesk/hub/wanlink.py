"""A wide-area link that can be cut, on the loopback: TCP relays between a city
HQ's leaf node and the hub servers' leaf ports, for ``meshdesk bench hub`` (the
network-namespace version, for tests, is ``tests/lab/test_hub_lab.py``).

The HQ's ``[hub] hub_urls`` name the relays instead of the servers. While the link
is up a relay copies bytes both ways (TLS passes through untouched: the leaf still
checks the hub server's certificate). :meth:`WanLink.cut` closes every relayed
connection and refuses new ones, as a link that is gone does once its timeouts ran
out; the hub servers stay up, so their stream sources retry and back off as they
would across a real cut. :meth:`WanLink.restore` lets connections through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

__all__ = ["WanLink"]

log = logging.getLogger("meshdesk.hub.wanlink")

HOST = "127.0.0.1"
_CHUNK = 64 * 1024


class WanLink:
    """Relays from new loopback ports to ``targets`` (ports on 127.0.0.1)."""

    def __init__(self, targets: Sequence[int]) -> None:
        self._targets = list(targets)
        self._servers: list[asyncio.Server] = []
        self._ports: list[int] = []
        self._up = True
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    @property
    def urls(self) -> list[str]:
        """The relays, as the HQ's ``[hub] hub_urls``."""
        return [f"tls://{HOST}:{port}" for port in self._ports]

    @property
    def up(self) -> bool:
        return self._up

    async def start(self) -> None:
        for target in self._targets:

            async def accept(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int = target
            ) -> None:
                await self._relay(reader, writer, target)

            server = await asyncio.start_server(accept, HOST, 0)
            self._servers.append(server)
            self._ports.append(int(server.sockets[0].getsockname()[1]))

    def cut(self) -> None:
        """The link goes down: every relayed connection closes, new ones are refused."""
        self._up = False
        self.cuts += 1
        for writer in list(self._writers):
            writer.close()
        for task in list(self._pipes):
            task.cancel()

    def restore(self) -> None:
        """The link is back."""
        self._up = True

    async def aclose(self) -> None:
        self.cut()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._pipes:
            await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int
    ) -> None:
        if not self._up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, target)
        except OSError as exc:  # the hub server is down: so is this connection
            log.debug("wan link: hub port %d refused: %s", target, exc)
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [asyncio.create_task(_pipe(reader, up_writer)),
                 asyncio.create_task(_pipe(up_reader, writer))]  # fmt: skip
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side closes (a reset ends it the same way)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
