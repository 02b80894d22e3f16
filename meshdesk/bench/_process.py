"""A meshdesk node as its own process, for benches that measure what another laptop
would see: ``meshdesk run`` on a home, loopback only, mDNS off.

:func:`node_process` starts it (output to a log file) and stops it on every exit;
:func:`wait_ready` waits until its control socket answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from meshdesk import control
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome

__all__ = ["meshdesk_argv", "node_process", "wait_ready"]


def meshdesk_argv() -> list[str]:
    """The ``meshdesk`` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "meshdesk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "meshdesk"]


@contextlib.contextmanager
def node_process(home: NodeHome, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``meshdesk run`` on ``home``: links and the citizens' web port on 127.0.0.1 (any
    port), no HTTP redirect, no mDNS."""
    loopback = "127.0.0.1:0"
    argv = [*meshdesk_argv(), "run", "--home", str(home.path), "--listen", loopback,
            "--web-listen", loopback, "--web-redirect", loopback, "--no-mdns"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(
    home: NodeHome, proc: subprocess.Popen[bytes], start: float, limit: float
) -> float:
    """Seconds from ``start`` (``time.perf_counter``) until the node answers ``status``.

    Raises:
        MeshdeskError: the process ended first, or ``limit`` s passed.
    """
    deadline = start + limit
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise MeshdeskError(f"the node stopped before it was ready (exit {proc.returncode})")
        with contextlib.suppress(MeshdeskError):
            await control.call(home.control_socket, "status", wait=1.0)
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    raise MeshdeskError(f"the node was not ready within {limit:g} s")
