"""A program that a lab runs in one of its hosts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from meshdesk.lab._lab import LabHost

__all__ = ["TERM_GRACE", "LabProcess"]

#: Seconds between SIGTERM and SIGKILL when the lab stops a program.
TERM_GRACE = 5.0


class LabProcess:
    """A program the lab started in one of its hosts, in its own process group.

    Its stdout and stderr go to :attr:`log` (appended). The lab stops it at teardown
    if it is still running; :meth:`stop` and :meth:`kill` do it earlier.
    """

    def __init__(self, name: str, host: LabHost, popen: subprocess.Popen[bytes], log: Path):
        self.name = name
        self.host = host
        self.popen = popen
        self.log = log

    def __repr__(self) -> str:
        return f"LabProcess({self.name!r} on {self.host.netns}, pid {self.pid})"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status (``subprocess.TimeoutExpired`` after ``timeout``)."""
        return self.popen.wait(timeout)

    def send_signal(self, sig: int) -> None:
        """Signal the program itself (not its group), as ``kill PID`` would."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def signal_group(self, sig: int) -> None:
        """Signal the program's whole process group (it and what it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self, timeout: float = TERM_GRACE) -> int:
        """SIGKILL the group — a power cut: no goodbye, no clean close."""
        self.signal_group(signal.SIGKILL)
        return self.popen.wait(timeout)

    def stop(self, grace: float = TERM_GRACE) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; the exit status."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                return self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.popen.returncode

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
