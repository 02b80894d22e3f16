"""The durability tier: power cuts on a filesystem that forgets what was not synced.

``power_fs`` mounts :mod:`powerfs` (a FUSE filesystem that keeps unsynced file
contents in its own memory) over a folder of the test's, in a child process. Its
``cut()`` is the power cut: the filesystem process is killed (its memory, like RAM,
is gone), the dead mount is detached and the folder mounted again, so what a program
finds afterwards is exactly what was fsync'ed. Processes that used the mount must be
killed first, as a power cut kills them too.

It needs root, /dev/fuse, ``fusermount3`` (Debian ``fuse3``) and the ``mfusepy``
package. Without them the tests skip on a laptop and fail under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path

import pytest
from tiers import require

POWERFS = Path(__file__).with_name("powerfs.py")
MOUNT_WAIT = 10.0  # seconds for a mount to appear (or go away)


def _problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (FUSE mounts)")
    if not os.path.exists("/dev/fuse"):
        problems.append("no /dev/fuse")
    if shutil.which("fusermount3") is None:
        problems.append("fusermount3 missing (apt-get install fuse3, or run .ci/run)")
    if importlib.util.find_spec("mfusepy") is None:
        problems.append("the mfusepy package is missing (make install)")
    return problems


def require_fuse() -> None:
    """Skip (on a laptop) or fail (under ``CI=true``) unless FUSE mounts work here."""
    require(_problems(), tier="durability")


def _mounted(mountpoint: Path) -> bool:
    target = str(mountpoint)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1] == target for line in mounts)


class PowerFs:
    """A mounted power-loss filesystem: files under :attr:`path` survive only if synced."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path) -> None:
        self.backing = backing
        self.path = mountpoint
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def mount(self) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(POWERFS), str(self.backing), str(self.path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + MOUNT_WAIT
        while not _mounted(self.path):
            if self._proc.poll() is not None:
                raise RuntimeError(f"powerfs exited at once: {self._log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("powerfs did not mount within 10 s")
            time.sleep(0.02)

    def _detach(self) -> None:
        if _mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)

    def cut(self) -> None:
        """Power cut: unsynced contents are lost; then the folder is mounted again."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self._detach()
        self.cuts += 1
        self.mount()

    def unmount(self) -> None:
        """Stop cleanly (tests' teardown); what was not synced is lost here too."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._detach()


@pytest.fixture
def power_fs(tmp_path: Path) -> Generator[PowerFs, None, None]:
    require_fuse()
    backing, mountpoint = tmp_path / "disk", tmp_path / "mnt"
    backing.mkdir()
    mountpoint.mkdir()
    fs = PowerFs(backing, mountpoint, tmp_path / "powerfs.log")
    fs.mount()
    try:
        yield fs
    finally:
        fs.unmount()
