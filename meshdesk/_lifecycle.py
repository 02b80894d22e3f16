"""What every long-lived object shares: leaving ``async with`` closes it."""

from __future__ import annotations

from types import TracebackType

__all__ = ["AsyncResource"]


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
