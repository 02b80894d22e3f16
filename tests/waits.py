"""Waiting for a condition in tests, instead of sleeping: the helpers and their types.

pytest puts this folder on ``sys.path`` (``pythonpath = ["tests"]`` in pyproject.toml,
under ``.venv/bin/pytest`` and ``python -m pytest`` alike), so a test module imports
the types for its annotations::

    from waits import AsyncWaitUntil, WaitUntil

and gets the helpers as the ``wait_until`` and ``async_wait_until`` fixtures of
tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["AsyncWaitUntil", "WaitUntil", "async_wait_until", "wait_until"]


class WaitUntil(Protocol):
    """The ``wait_until`` fixture: :func:`wait_until`."""

    def __call__(
        self,
        predicate: Callable[[], object],
        timeout: float,
        interval: float = 0.05,
        *,
        message: str | None = None,
    ) -> None: ...


class AsyncWaitUntil(Protocol):
    """The ``async_wait_until`` fixture: :func:`async_wait_until`."""

    def __call__(
        self,
        predicate: Callable[[], object | Awaitable[object]],
        timeout: float,
        interval: float = 0.05,
        *,
        message: str | None = None,
    ) -> Awaitable[None]: ...


def _describe(predicate: Callable[[], object], message: str | None) -> str:
    return message or getattr(predicate, "__qualname__", None) or repr(predicate)


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    *,
    message: str | None = None,
) -> None:
    """Poll ``predicate`` until it returns a truthy value, at most ``timeout`` seconds.

    The predicate gets one last call at the deadline, so a condition that holds by
    then is never reported as a timeout.

    Raises:
        AssertionError: the predicate stayed falsy; ``message`` (or the predicate's
            name) says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {_describe(predicate, message)}"
            )
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float,  # noqa: ASYNC109 - the same call shape as wait_until; enforced below
    interval: float = 0.05,
    *,
    message: str | None = None,
) -> None:
    """Like :func:`wait_until`, without blocking the loop; ``predicate`` may be async.

    The whole wait, awaiting the predicate included, is bounded by ``timeout``.
    """

    async def holds() -> bool:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            while not await holds():  # noqa: ASYNC110 - polling arbitrary state is the point
                await asyncio.sleep(interval)
    except TimeoutError:
        if not deadline.expired():
            raise  # the predicate's own TimeoutError, not our deadline
        raise AssertionError(
            f"timed out after {timeout:g} s waiting for {_describe(predicate, message)}"
        ) from None
