"""Where received call audio goes: the sound server or card, when there is one.

Each received audio track is resampled to 16-bit 48 kHz mono and written to a
player process's stdin: ``pacat`` when a PulseAudio (or pipewire-pulse) server is
reachable, else ``aplay`` when the kernel has an ALSA playback PCM
(``/dev/snd/pcmC*D*p``), else nothing — the legs still read (and count) every
frame. See :mod:`meshdesk.calls.sound` for why a pipe and not FFmpeg's device
muxers. Nothing is ever written to a file: media is never recorded.
``[calls] playback = "off"`` turns it off. The choice is logged once at INFO when
the node starts; a player that fails is logged once and given up.

When the node's sound route has an echo canceller (a call with a microphone),
received audio plays into the canceller's sink (:meth:`Playback.route_to`): what
is played there is what the canceller removes from the microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from av.audio.resampler import AudioResampler

from meshdesk.calls.sound import CHANNELS, RATE, Which, alsa_playback_pcms, pulse_server

__all__ = ["Output", "Playback", "choose_output"]

log = logging.getLogger(__name__)

#: How much audio the server buffers ahead of the speaker (ms): low for a
#: conversation, enough to ride out a busy core.
LATENCY_MS = 60


@dataclass(frozen=True, slots=True)
class Output:
    """A player command reading raw PCM on stdin (``argv``), or none (``kind`` None)."""

    kind: str | None
    why: str
    argv: tuple[str, ...] = ()
    #: The PulseAudio sink (None: the server's default).
    sink: str | None = None

    def describe(self) -> str:
        if self.kind is None:
            return f"received call audio is not played ({self.why}); frames are only counted"
        where = f" into {self.sink}" if self.sink else ""
        return f"received call audio plays through {self.kind}{where} ({self.why})"

    def command(self, stream: str) -> list[str]:
        """The player's argv for one stream named ``stream``."""
        argv = list(self.argv)
        if self.kind == "pulse":
            argv.append(f"--stream-name={stream}")
            if self.sink:
                argv.append(f"--device={self.sink}")
        return argv


def choose_output(
    setting: str,
    *,
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    root: Path = Path("/"),
    which: Which = shutil.which,
) -> Output:
    """Pick where received audio plays for ``[calls] playback`` (``auto`` or ``off``)."""
    if setting == "off":
        return Output(None, "[calls] playback is off")
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    server = pulse_server(env, uid, root)
    if server is not None:
        pacat = which("pacat")
        if pacat is not None:
            argv: tuple[str, ...] = (
                pacat, "--playback", "--raw", "--format=s16le", f"--rate={RATE}",
                f"--channels={CHANNELS}", f"--latency-msec={LATENCY_MS}", "--client-name=meshdesk",
            )  # fmt: skip
            return Output("pulse", f"PulseAudio server {server}", argv)
    pcms = alsa_playback_pcms(root)
    if pcms:
        aplay = which("aplay")
        if aplay is not None:
            argv = (aplay, "-q", "-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c",
                    str(CHANNELS), "-D", "default")  # fmt: skip
            return Output("alsa", f"ALSA playback device {pcms[0]}", argv)
    if server is not None:
        return Output(None, f"PulseAudio server {server}, but pacat is missing "
                            "(Debian package pulseaudio-utils)")  # fmt: skip
    if pcms:
        return Output(None, f"ALSA device {pcms[0]}, but aplay is missing "
                            "(Debian package alsa-utils)")  # fmt: skip
    return Output(None, "no output device: no PulseAudio server, no ALSA playback PCM")


class Playback:
    """Plays received audio tracks on :attr:`output`; one player stream per track."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self._playing: dict[object, list[asyncio.Task[None]]] = {}

    def route_to(self, sink: str | None) -> None:
        """Play into PulseAudio sink ``sink`` from now on (the echo canceller's)."""
        if self.output.kind == "pulse" and sink != self.output.sink:
            self.output = replace(self.output, sink=sink)
            log.info("%s", self.output.describe())

    async def play(self, owner: object, track: MediaStreamTrack, name: str = "call") -> bool:
        """Play ``track`` (a proxy this object now owns) until :meth:`stop` of ``owner``.

        With no output the track is released at once: the leg's own reader counts
        the frames. A player that cannot start is logged once and not tried again.
        """
        output = self.output
        if output.kind is None:
            track.stop()
            return False
        argv = output.command(f"call audio from {name}"[:64])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self._give_up(f"cannot run {argv[0]}: {exc}")
            track.stop()
            return False
        task = asyncio.create_task(self._pump(track, proc), name=f"play {name}")
        self._playing.setdefault(owner, []).append(task)
        return True

    def _give_up(self, why: str) -> None:
        if self.output.kind is not None:
            log.warning("cannot play call audio through %s: %s; not playing it from now on",
                        self.output.kind, why)  # fmt: skip
            self.output = Output(None, f"the player failed: {why}")

    async def _pump(self, track: MediaStreamTrack, proc: asyncio.subprocess.Process) -> None:
        """Resample every frame to the player's format and write it to its stdin."""
        assert proc.stdin is not None
        resampler = AudioResampler(format="s16", layout="mono", rate=RATE)
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if not isinstance(frame, AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    proc.stdin.write(bytes(out.planes[0])[: out.samples * 2 * CHANNELS])
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            err = b""
            if proc.stderr is not None:
                with contextlib.suppress(Exception):
                    err = await asyncio.wait_for(proc.stderr.read(2000), 1.0)
            self._give_up(err.decode(errors="replace").strip() or f"exit {proc.returncode}")
        finally:
            track.stop()
            await _close(proc)

    async def stop(self, owner: object) -> None:
        """Stop playing every track of ``owner`` and end its players."""
        tasks = self._playing.pop(owner, [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for owner in list(self._playing):
            await self.stop(owner)


async def _close(proc: asyncio.subprocess.Process) -> None:
    """End a player: close its stdin (it drains and exits), kill it if it lingers."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    try:
        async with asyncio.timeout(1.0):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
