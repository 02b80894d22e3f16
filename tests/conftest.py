"""Fixtures shared by every test tier.

``wait_until`` and ``async_wait_until`` are fixtures rather than an importable module:
the tests directory is not a package and pytest runs without the repository root on
``sys.path`` (``.venv/bin/pytest``), so ``import tests.helpers`` would work only under
``python -m pytest``. Request them by name::

    def test_peer_appears(wait_until):
        wait_until(lambda: peer.seen, timeout=5, message="peer never showed up")

    async def test_link_up(async_wait_until):
        await async_wait_until(lambda: link.ready, timeout=5)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

WaitUntil = Callable[..., None]
AsyncWaitUntil = Callable[..., Awaitable[None]]


def _describe(predicate: Callable[[], object], message: str | None) -> str:
    return message or getattr(predicate, "__qualname__", None) or repr(predicate)


def _wait_until(
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


async def _async_wait_until(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float,  # noqa: ASYNC109 - the same call shape as wait_until; enforced below
    interval: float = 0.05,
    *,
    message: str | None = None,
) -> None:
    """Like :func:`_wait_until`, without blocking the loop; ``predicate`` may be async.

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


@pytest.fixture(scope="session")
def wait_until() -> WaitUntil:
    """``wait_until(predicate, timeout, interval=0.05, *, message=None)``; see above."""
    return _wait_until


@pytest.fixture(scope="session")
def async_wait_until() -> AsyncWaitUntil:
    """``await async_wait_until(predicate, timeout, interval=0.05, *, message=None)``."""
    return _async_wait_until
