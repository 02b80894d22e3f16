"""``meshdesk tui``: attach the console to the home's node, or run one in-process."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from meshdesk import control
from meshdesk.config import Config
from meshdesk.home import NodeHome
from meshdesk.tui.api import NodeApi
from meshdesk.tui.app import MeshdeskApp
from meshdesk.tui.client import SocketNode
from meshdesk.tui.i18n import Lang

__all__ = ["attach_or_start", "run_console"]

log = logging.getLogger("meshdesk.tui")


def _log_to_file(path: Path) -> None:
    """Log to a file while the console runs: stderr belongs to its screen."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("aiosqlite", "asyncio", "zeroconf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.asynccontextmanager
async def attach_or_start(home: NodeHome, config: Config) -> AsyncIterator[NodeApi]:
    """The running node of ``home``; if none answers, a Node started here (stopped on exit)."""
    if await control.try_call(home.control_socket, "status") is not None:
        yield SocketNode(home.control_socket)
        return
    from meshdesk.node import Node

    log.info("no node runs in %s; starting one inside the console", home.path)
    async with Node(home, config):
        yield SocketNode(home.control_socket)


async def run_console(home: NodeHome, config: Config, *, lang: Lang, operator: str) -> int:
    """Run the console until the operator quits (stderr belongs to the screen meanwhile)."""
    _log_to_file(home.path / "console.log")
    async with attach_or_start(home, config) as api:
        app = MeshdeskApp(api, lang=lang, operator=operator)
        await app.run_async()
    return 0
