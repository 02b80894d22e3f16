"""What every long-lived object shares: leaving ``async with`` closes it, and the
tasks it starts are its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from types import TracebackType

from meshdesk.errors import MeshdeskError

__all__ = ["AsyncResource", "cancel_task", "spawn_owned"]


async def cancel_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended (its cancellation is not ours)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
