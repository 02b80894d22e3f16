"""Where a call's outgoing media comes from: a device, a file, or a synthetic source.

``--media synthetic`` needs nothing: a 640×480 test pattern at 30 fps showing the
node's name, a running clock and a frame counter, and a 440 Hz tone. ``device``
opens the camera (v4l2, through aiortc's ``MediaPlayer``) and the microphone (a
recorder on the sound server: :mod:`meshdesk.calls.sound`); a missing or busy
camera makes the call audio only, with one line saying so. ``file:PATH`` plays a
media file in a loop, or a FIFO fed live by a GStreamer or FFmpeg pipeline (a
capture card, or a test's virtual camera). Nothing is ever written: media is
never recorded.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import functools
import logging
import math
import os
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame

from meshdesk.calls.sound import MicTrack
from meshdesk.errors import CallError

__all__ = [
    "DEFAULT_CAMERA",
    "VIDEO_FPS",
    "VIDEO_HEIGHT",
    "VIDEO_WIDTH",
    "LocalMedia",
    "TestPatternTrack",
    "ToneTrack",
    "draw_text",
    "open_media",
    "parse_media",
    "prepare_synthetic",
]

log = logging.getLogger(__name__)

VIDEO_WIDTH = 640
VIDEO_HEIGHT = 480
VIDEO_FPS = 30
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
TONE_HZ = 440
#: The camera ``device`` media opens unless ``[calls] camera`` names another.
DEFAULT_CAMERA = "/dev/video0"
#: How long a FIFO ``file:`` source may stay silent before the call gives up on it.
FIFO_WAIT = 5.0

# A 3×5 pixel font: five rows of three bits per character.
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", "A": "010101111101101", "B": "110101110101110",
    "C": "011100100100011", "D": "110101101101110", "E": "111100110100111",
    "F": "111100110100100", "G": "011100101101011", "H": "101101111101101",
    "I": "111010010010111", "J": "001001001101010", "K": "101101110101101",
    "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
    "O": "010101101101010", "P": "110101110100100", "Q": "010101101110011",
    "R": "110101110101101", "S": "011100010001110", "T": "111010010010010",
    "U": "101101101101111", "V": "101101101101010", "W": "101101111111101",
    "X": "101101010101101", "Y": "101101010010010", "Z": "111001010100111",
    ":": "000010000010000", ".": "000000000000010", "-": "000000111000000",
    " ": "000000000000000", "?": "111001010000010", "#": "101111101111101",
}  # fmt: skip
_SCALE = 6
_ADVANCE = 4 * _SCALE
_WHITE, _BLACK = 235, 16


@functools.cache
def _bars() -> tuple[bytes, bytes, bytes]:
    """Y, U and V planes of eight vertical colour bars (BT.601 values)."""
    colours = [  # (Y, U, V): white, yellow, cyan, green, magenta, red, blue, grey
        (180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
        (84, 184, 198), (65, 100, 212), (35, 212, 114), (100, 128, 128),
    ]  # fmt: skip
    w, h = VIDEO_WIDTH, VIDEO_HEIGHT
    bar = w // len(colours)
    y_row = b"".join(bytes([c[0]]) * bar for c in colours)
    u_row = b"".join(bytes([c[1]]) * (bar // 2) for c in colours)
    v_row = b"".join(bytes([c[2]]) * (bar // 2) for c in colours)
    return y_row * h, u_row * (h // 2), v_row * (h // 2)


def draw_text(plane: bytearray, width: int, x: int, y: int, text: str) -> None:
    """Draw ``text`` (ASCII; anything else shows as ``?``) white on black into a Y plane."""
    height = len(plane) // width
    top = y - _SCALE
    for row in range(max(top, 0), min(y + 6 * _SCALE, height)):
        start = row * width + max(x - _SCALE, 0)
        end = row * width + min(x + len(text) * _ADVANCE, width)
        plane[start:end] = bytes([_BLACK]) * (end - start)
    for index, char in enumerate(text.upper()):
        glyph = _FONT.get(char, _FONT["?"])
        left = x + index * _ADVANCE
        if left + 3 * _SCALE > width:
            break
        for gy in range(5):
            bits = glyph[gy * 3 : gy * 3 + 3]
            for gx, bit in enumerate(bits):
                if bit != "1":
                    continue
                for sy in range(_SCALE):
                    row = y + gy * _SCALE + sy
                    if 0 <= row < height:
                        at = row * width + left + gx * _SCALE
                        plane[at : at + _SCALE] = bytes([_WHITE]) * _SCALE


class TestPatternTrack(VideoStreamTrack):
    """Colour bars with the node name, a running clock and a frame counter, at 30 fps."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, label: str) -> None:
        super().__init__()
        self._label = label.encode("ascii", "replace").decode()[:24]
        self._y, self._u, self._v = _bars()
        self._count = 0

    async def recv(self) -> Frame:
        pts, time_base = await self.next_timestamp()
        self._count += 1
        plane = bytearray(self._y)
        now = time.time()
        clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 10) % 10}"
        draw_text(plane, VIDEO_WIDTH, 24, 40, self._label)
        draw_text(plane, VIDEO_WIDTH, 24, 200, clock)
        draw_text(plane, VIDEO_WIDTH, 24, 380, f"#{self._count}")
        frame = VideoFrame(width=VIDEO_WIDTH, height=VIDEO_HEIGHT, format="yuv420p")
        for target, data in zip(frame.planes, (plane, self._u, self._v), strict=True):
            target.update(bytes(data))
        frame.pts = pts
        frame.time_base = time_base
        return frame


@functools.cache
def _tone_second(hz: int = TONE_HZ) -> bytes:
    """One second of the tone: a whole number of periods, so the loop is seamless."""
    samples = array.array(
        "h",
        (int(6000 * math.sin(2 * math.pi * hz * i / AUDIO_RATE)) for i in range(AUDIO_RATE)),
    )
    return samples.tobytes()


def prepare_synthetic() -> None:
    """Compute the synthetic sources' fixed parts now (~20 ms), not while a call rings."""
    _bars()
    _tone_second()


class ToneTrack(MediaStreamTrack):
    """A tone (440 Hz unless told), 48 kHz mono, in 20 ms frames paced in real time."""

    kind = "audio"

    def __init__(self, hz: int = TONE_HZ) -> None:
        super().__init__()
        self._second = _tone_second(hz)
        self._per_frame = int(AUDIO_RATE * AUDIO_PTIME)
        self._timestamp = 0
        self._start: float | None = None

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += self._per_frame
            wait = self._start + self._timestamp / AUDIO_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        offset = (self._timestamp % AUDIO_RATE) * 2
        chunk = self._second[offset : offset + self._per_frame * 2]
        frame = AudioFrame(format="s16", layout="mono", samples=self._per_frame)
        frame.planes[0].update(chunk)
        frame.pts = self._timestamp
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


@dataclass
class LocalMedia:
    """A call's outgoing tracks (``video`` is None for audio-only) and their player."""

    kind: str
    audio: MediaStreamTrack
    video: MediaStreamTrack | None
    _players: list[MediaPlayer] = field(default_factory=list)
    #: One line when the media fell short of what was asked (no camera: audio only).
    note: str | None = None
    #: True when the audio comes from a microphone (echo matters).
    microphone: bool = False

    def close(self) -> None:
        """Stop every track (a player stops its device with its last track)."""
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()
        self._players.clear()


def parse_media(spec: str) -> str:
    """Check a ``--media`` value; returns it. Raises CallError naming the problem."""
    if spec in ("synthetic", "device"):
        return spec
    if spec.startswith("file:") and len(spec) > len("file:"):
        return spec
    raise CallError(f"media must be 'device', 'synthetic' or 'file:PATH', got {spec!r}")


def _player(source: str, fmt: str | None, options: dict[str, str] | None = None) -> MediaPlayer:
    try:
        return MediaPlayer(source, format=fmt, options=options or {})
    except (OSError, ValueError) as exc:  # av raises FFmpegError, an OSError/ValueError
        raise CallError(f"cannot open {source} ({fmt or 'file'}): {exc}") from exc


def _camera(path: str) -> tuple[MediaPlayer | None, str | None]:
    """The camera's player, or None and the one line that says why not.

    A missing or busy camera is not a failed call: the call goes on audio only.
    """
    camera = Path(path)
    if not camera.exists():
        return None, f"no camera ({path} is missing): this call is audio only"
    options = {"video_size": f"{VIDEO_WIDTH}x{VIDEO_HEIGHT}", "framerate": str(VIDEO_FPS)}
    try:
        player = MediaPlayer(str(camera), format="v4l2", options=options)
    except (OSError, ValueError) as exc:  # busy (EBUSY), not a camera, no permission
        reason = getattr(exc, "strerror", None) or str(exc)
        return None, f"the camera {path} cannot be opened ({reason}): this call is audio only"
    if player.video is None:
        return None, f"the camera {path} gives no video: this call is audio only"
    return player, None


def _open_device(audio_only: bool, microphone: Sequence[str] | None, camera: str) -> LocalMedia:
    if not microphone:
        raise CallError("no microphone: no sound server and no sound card (use --media synthetic)")
    players: list[MediaPlayer] = []
    video: MediaStreamTrack | None = None
    note = None
    if not audio_only:
        player, note = _camera(camera)
        if player is not None:
            players.append(player)
            video = player.video
        else:
            log.warning("%s", note)
    return LocalMedia("device", MicTrack(list(microphone)), video, players, note, microphone=True)


def _wait_for_writer(path: str, timeout: float) -> int:
    """A FIFO (a GStreamer or FFmpeg pipeline writing into it): wait until data comes.

    Returns a read descriptor the caller closes once its own reader is open (the
    writer must never see the pipe without a reader: it would get EPIPE).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's reader never blocks so
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(timeout * 1000):
        os.close(fd)
        raise CallError(f"nothing is written into {path} (a FIFO): start its feed first")
    return fd


def _open_file(path: str, audio_only: bool) -> LocalMedia:
    """A media file played in a loop, or a FIFO fed live (a capture pipeline)."""
    source = Path(path)
    live = source.is_fifo()
    if not live and not source.is_file():
        raise CallError(f"media file {path} does not exist")
    held = _wait_for_writer(path, FIFO_WAIT) if live else None
    try:
        player = MediaPlayer(path, loop=not live)
    except (OSError, ValueError) as exc:  # av's FFmpegError derives from both
        raise CallError(f"cannot play {path}: {exc}") from exc
    finally:
        if held is not None:
            os.close(held)
    audio = player.audio or ToneTrack()
    video = None if audio_only else player.video
    if not audio_only and video is None:
        raise CallError(f"{path} has no video stream (use --audio-only)")
    return LocalMedia(f"file:{path}", audio, video, [player])


def open_media(
    spec: str,
    label: str,
    *,
    audio_only: bool,
    microphone: Sequence[str] | None = None,
    camera: str = DEFAULT_CAMERA,
    tone_hz: int = TONE_HZ,
) -> LocalMedia:
    """Open the outgoing media for a call (blocking: devices and files are probed;
    the call manager runs it in a worker thread).

    Args:
        microphone: for ``device``, the recorder's argv
            (:func:`meshdesk.calls.sound.capture_argv`); None: there is none.
        camera: for ``device``, the v4l2 camera (``[calls] camera``).
        tone_hz: for ``synthetic``, the tone's pitch (``[calls] tone_hz``).

    Raises:
        CallError: bad spec, no microphone, or the file cannot be opened. A missing
            or busy camera is not an error: the media is audio only, with a ``note``.
    """
    spec = parse_media(spec)
    if spec == "synthetic":
        video = None if audio_only else TestPatternTrack(label)
        return LocalMedia("synthetic", ToneTrack(tone_hz), video)
    if spec == "device":
        return _open_device(audio_only, microphone, camera)
    return _open_file(spec.removeprefix("file:"), audio_only)
