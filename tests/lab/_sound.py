"""A PulseAudio server of a test's own, with a room made of null sinks.

Each server runs as this (root) user with its runtime folder, socket and state in
the test's temporary folder; it touches no real sound device and no other server.
Nodes reach it through ``PULSE_SERVER=unix:SOCKET`` (a file: lab namespaces see it).
The room::

    speaker (null sink, the default) ──loopback 30 ms──▶ air (null sink)
    speaker.monitor: what the operator hears      air.monitor: the microphone (default source)

so whatever the node plays is heard by its own microphone, as a laptop's speaker is,
and PulseAudio accepts ``module-echo-cancel`` between them (it refuses a sink and
its own monitor). ``record`` reads a source with ``parec`` as raw s16le 48 kHz mono.

Not a test module (the leading underscore keeps pytest from collecting it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["TOOLS", "PulseServer", "sound_problems"]

TOOLS = ("pulseaudio", "pactl", "parec", "pacat")
#: The server answers within this long after it starts (no product limit).
STARTED_WITHIN = 10.0


def sound_problems() -> list[str]:
    """Why no test sound server can run here (Debian: pulseaudio, pulseaudio-utils)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return [f"{', '.join(missing)} missing (Debian pulseaudio, pulseaudio-utils; .ci/run)"]
    return []


class PulseServer:
    """``with PulseServer(folder) as pulse: ... pulse.env ... pulse.record(...)``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "native"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client (a node) needs to reach this server and no other."""
        return {"PULSE_SERVER": f"unix:{self.socket}", "PULSE_COOKIE": str(self.folder / "cookie")}

    def __enter__(self) -> PulseServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        script = self.folder / "room.pa"
        script.write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            "load-module module-null-sink sink_name=speaker rate=48000 channels=1\n"
            "load-module module-null-sink sink_name=air rate=48000 channels=1\n"
            "load-module module-loopback source=speaker.monitor sink=air latency_msec=30\n"
            "set-default-sink speaker\n"
            "set-default-source air.monitor\n"
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),
            "XDG_RUNTIME_DIR": str(self.folder),
            "PULSE_RUNTIME_PATH": str(self.folder / "runtime"),
            "PULSE_STATE_PATH": str(self.folder / "state"),
        }
        # No shared memory between server and clients: under load PulseAudio has
        # aborted on an assertion freeing a block imported from a client's shm pool
        # (memblock.c, "pa_hashmap_remove(import->blocks, …)"), and the test then
        # recorded nothing. Through the socket the audio is the same.
        argv = ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--disable-shm=yes",
                "--exit-idle-time=-1", "--use-pid-file=no", "--log-target=stderr"]  # fmt: skip
        with (self.folder / "pulseaudio.log").open("ab") as log:
            self._proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + STARTED_WITHIN
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"pulseaudio did not start: {self.log_tail()}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        return self.socket.exists() and self.pactl("info", check=False).returncode == 0

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env={**os.environ, **self.env, "LC_ALL": "C"},
            capture_output=True, text=True, timeout=10, check=check,
        )  # fmt: skip

    def record(self, source: str, seconds: float) -> bytes:
        """``seconds`` of ``source`` (e.g. ``speaker.monitor``) as raw s16le 48 kHz mono."""
        argv = ["parec", f"--device={source}", "--raw", "--format=s16le", "--rate=48000",
                "--channels=1", "--latency-msec=20"]  # fmt: skip
        proc = subprocess.Popen(
            argv, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        wanted = int(seconds * 48000) * 2
        data = bytearray()
        try:
            while len(data) < wanted:
                chunk = proc.stdout.read1(min(65536, wanted - len(data)))
                if not chunk:
                    break
                data += chunk
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()
        if len(data) < wanted:
            raise RuntimeError(
                f"parec recorded {len(data) / 96000:.1f} s of the {seconds:g} s asked for; "
                f"the sound server's log ends: {self.log_tail()}"
            )
        return bytes(data)

    def log_tail(self) -> str:
        path = self.folder / "pulseaudio.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
