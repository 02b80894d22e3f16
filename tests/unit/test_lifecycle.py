"""Owned tasks: failures are logged, never raised; nothing is left un-awaited."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

import pytest

from meshdesk._lifecycle import spawn_owned, stop_process
from meshdesk.errors import LinkError

log = logging.getLogger("meshdesk.test_lifecycle")


async def _fail(exc: Exception) -> None:
    raise exc


async def test_failures_end_only_their_task_and_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks: set[asyncio.Task[None]] = set()
    with caplog.at_level(logging.WARNING, "meshdesk.test_lifecycle"):
        known = spawn_owned(tasks, _fail(LinkError("peer gone")), "dial x", log)
        odd = spawn_owned(tasks, _fail(KeyError("bug")), "dial y", log)
        await asyncio.gather(known, odd)
    assert tasks == set()
    records = {r.message: r for r in caplog.records}
    assert records["dial x: peer gone"].exc_info is None  # a known error: one line
    assert records["dial y failed unexpectedly"].exc_info is not None  # a bug: traceback


async def test_a_task_cancelled_before_it_ran_leaves_no_unawaited_coroutine() -> None:
    tasks: set[asyncio.Task[None]] = set()
    task = spawn_owned(tasks, asyncio.sleep(10), "never started", log)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    gc.collect()  # a "never awaited" RuntimeWarning would be an error here
    assert tasks == set()


_CHILD = (
    "import signal, sys, time\n"
    "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


async def test_stop_process_signals_then_kills_a_child_that_stays() -> None:
    async def child(kind: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, kind, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        assert await process.stdout.readline() == b"ready\n"  # its SIGTERM handler is set
        return process

    polite, stubborn = await child("polite"), await child("stubborn")
    assert await stop_process(polite, signal.SIGTERM) == -signal.SIGTERM
    assert await stop_process(stubborn, signal.SIGTERM, within=0.2) == -signal.SIGKILL
    assert await stop_process(stubborn) == -signal.SIGKILL  # already ended: left as it is
