"""What every long-lived object shares: leaving ``async with`` closes it, and the
tasks it starts are its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from types import TracebackType
from typing import TypeVar

from meshdesk.errors import MeshdeskError

__all__ = ["AsyncResource", "cancel_and_wait", "running", "spawn_owned", "stop_process"]

_T = TypeVar("_T")


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def stop_process(
    process: asyncio.subprocess.Process,
    sig: int = signal.SIGTERM,
    *,
    within: float = 10.0,
) -> int:
    """Send a child process ``sig``, wait up to ``within`` seconds for it to end,
    then SIGKILL it; returns its exit code. A process that already ended is left
    as it is."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            process.send_signal(sig)
        try:
            async with asyncio.timeout(within):
                return await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    return await process.wait()


def running(part: _T | None) -> _T:
    """A part that exists only while its owner runs; using it earlier is a bug."""
    if part is None:
        raise RuntimeError("the node is not running")
    return part


def spawn_owned(
    tasks: set[asyncio.Task[None]],
    coro: Coroutine[object, object, None],
    name: str,
    log: logging.Logger,
) -> asyncio.Task[None]:
    """Run ``coro`` as a task kept in ``tasks`` (removed when done); a failure is logged.

    One broken dial or call leg must never take the node down: a ``MeshdeskError``
    ends its task with a one-line warning, anything else with a traceback.
    """

    async def guard() -> None:
        try:
            await coro
        except MeshdeskError as exc:
            log.warning("%s: %s", name, exc)
        except Exception:
            log.exception("%s failed unexpectedly", name)

    task = asyncio.create_task(guard(), name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    # A task cancelled before its first step never awaits ``coro``; close it so
    # shutdown leaves no "never awaited" coroutine (a no-op once it ran).
    task.add_done_callback(lambda _: coro.close())
    return task


class AsyncResource:
    """Base of objects with an idempotent ``aclose()``; ``async with`` ends in it.

    Subclasses write their own ``__aenter__`` (it returns only once they are
    ready) and ``aclose``.
    """

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
