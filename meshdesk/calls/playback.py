"""Where received call audio goes: the default output device, when there is one.

aiortc's ``MediaRecorder`` is a sink over FFmpeg's muxers, and FFmpeg's ``pulse`` and
``alsa`` "muxers" are output *devices*: pointed at ``default`` it plays, it writes
nothing. meshdesk only ever opens it on a device, never on a file (media is never
recorded). Which device: PulseAudio when a server is reachable and FFmpeg has its
output (else ALSA's ``default``, which routes to the server), else ALSA when the
kernel has a playback PCM (``/dev/snd/pcmC*D*p``), else none; then the legs still
read (and count) every frame, and nothing is played. ``[calls] playback = "off"``
turns it off. The choice is logged once at INFO when the node starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import av
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamTrack

__all__ = ["Output", "Playback", "choose_output"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Output:
    """An FFmpeg output device (``format``, ``device``), or None of both: not played."""

    format: str | None
    device: str | None
    why: str

    def describe(self) -> str:
        if self.format is None:
            return f"received call audio is not played ({self.why}); frames are only counted"
        return f"received call audio plays on {self.format} {self.device!r} ({self.why})"


def _pulse_server(env: Mapping[str, str], uid: int, root: Path) -> str | None:
    server = env.get("PULSE_SERVER", "")
    if server:
        path = server.removeprefix("unix:")
        if server.startswith("unix:") or server.startswith("/"):
            return server if root.joinpath(path.lstrip("/")).exists() else None
        return server  # a network server: nothing local to check
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    socket = root.joinpath(runtime.lstrip("/"), "pulse", "native")
    return str(socket) if socket.exists() else None


def _alsa_playback(root: Path) -> list[str]:
    snd = root / "dev" / "snd"
    try:
        names = sorted(p.name for p in snd.iterdir())
    except OSError:
        return []
    return [n for n in names if n.startswith("pcmC") and n.endswith("p")]


def choose_output(
    setting: str,
    *,
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    root: Path = Path("/"),
    formats: Collection[str] | None = None,
) -> Output:
    """Pick where received audio plays for ``[calls] playback`` (``auto`` or ``off``)."""
    if setting == "off":
        return Output(None, None, "[calls] playback is off")
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    formats = av.formats_available if formats is None else formats
    server = _pulse_server(env, uid, root)
    if server is not None:
        if "pulse" in formats:
            return Output("pulse", "default", f"PulseAudio server {server}")
        if "alsa" in formats:
            return Output("alsa", "default", f"PulseAudio server {server}, through ALSA")
    pcms = _alsa_playback(root)
    if pcms and "alsa" in formats:
        return Output("alsa", "default", f"ALSA playback device {pcms[0]}")
    if server is not None or pcms:
        return Output(None, None, "this FFmpeg build has no pulse or alsa output")
    return Output(None, None, "no output device: no PulseAudio server, no ALSA playback PCM")


Recorder = Callable[[str, str], MediaRecorder]


class Playback:
    """Plays received audio tracks on :attr:`output`; one device stream per track."""

    def __init__(
        self,
        output: Output,
        *,
        recorder: Recorder = lambda device, fmt: MediaRecorder(device, format=fmt),
    ) -> None:
        self.output = output
        self._recorder = recorder
        self._playing: dict[object, list[MediaRecorder]] = {}

    async def play(self, owner: object, track: MediaStreamTrack) -> bool:
        """Play ``track`` (a proxy this object now owns) until :meth:`stop` of ``owner``.

        With no output the track is released at once: the leg's own reader counts
        the frames. A device that fails to open is logged once and not tried again.
        """
        if self.output.format is None or self.output.device is None:
            track.stop()
            return False
        try:
            sink = self._recorder(self.output.device, self.output.format)
            sink.addTrack(track)
            await sink.start()
        except (OSError, ValueError) as exc:  # av's FFmpegError derives from both
            log.warning("cannot play call audio on %s %r: %s; not playing it from now on",
                        self.output.format, self.output.device, exc)  # fmt: skip
            self.output = Output(None, None, f"opening {self.output.format} failed: {exc}")
            track.stop()
            return False
        self._playing.setdefault(owner, []).append(sink)
        return True

    async def stop(self, owner: object) -> None:
        """Stop playing every track of ``owner`` and close its device streams."""
        for sink in self._playing.pop(owner, []):
            try:
                await sink.stop()
            except (OSError, ValueError) as exc:
                log.warning("closing call audio output: %s", exc)

    async def close(self) -> None:
        for owner in list(self._playing):
            await self.stop(owner)
