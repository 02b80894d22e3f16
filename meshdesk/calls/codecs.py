"""Speech-rate Opus and a capped VP8 for meshdesk calls.

aiortc 1.16 builds every sender's encoder with ``aiortc.codecs.get_encoder``, which
``aiortc.rtcrtpsender`` imports by name; ``OpusEncoder.__init__`` fixes
``codec.bit_rate = 96000`` and ``Vp8Encoder`` lets receiver estimates push video to
1.5 Mbps. :func:`install` wraps the sender module's ``get_encoder`` once: inside
:func:`encoder_profile` (a context variable, inherited by the RTP tasks a peer
connection starts while it is set) Opus is built at ``opus_bps`` and VP8 is held
at or under ``video_max_bps``; anywhere else aiortc's own encoders are used, so a
plain aiortc peer connection in the same process (the benchmark's baseline) is
unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiortc.rtcrtpsender as _sender_module
from aiortc.codecs import get_encoder as _aiortc_get_encoder
from aiortc.codecs.base import Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

__all__ = [
    "DEFAULT_PROFILE",
    "CappedVp8Encoder",
    "EncoderProfile",
    "SpeechOpusEncoder",
    "encoder_profile",
    "install",
    "select_encoder",
]


@dataclass(frozen=True, slots=True)
class EncoderProfile:
    """Bit rates for one call's senders."""

    #: Opus target: 24-32 kbps is plenty for speech.
    opus_bps: int = 28_000
    #: Ceiling for VP8, whatever the receiver's estimate says.
    video_max_bps: int = 600_000


DEFAULT_PROFILE = EncoderProfile()

_profile: contextvars.ContextVar[EncoderProfile | None] = contextvars.ContextVar(
    "meshdesk_encoder_profile", default=None
)


class SpeechOpusEncoder(OpusEncoder):
    """aiortc's Opus encoder at a speech bit rate (it hard-codes 96 kbps)."""

    def __init__(self, bit_rate: int) -> None:
        super().__init__()
        self.codec.bit_rate = bit_rate


#: aiortc's own ``target_bitrate`` property (it clamps to 250 kbps - 1.5 Mbps).
_VP8_RATE: property = Vp8Encoder.__dict__["target_bitrate"]


class CappedVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder whose target bit rate never exceeds ``cap``."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        super().__init__()
        self.target_bitrate = min(self.target_bitrate, cap)

    @property
    def target_bitrate(self) -> int:
        assert _VP8_RATE.fget is not None
        value: int = _VP8_RATE.fget(self)
        return value

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        assert _VP8_RATE.fset is not None
        _VP8_RATE.fset(self, min(bitrate, self._cap))


def select_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    """aiortc's encoder for ``codec``, or ours while an :func:`encoder_profile` is active."""
    profile = _profile.get()
    if profile is not None:
        mime = codec.mimeType.lower()
        if mime == "audio/opus":
            return SpeechOpusEncoder(profile.opus_bps)
        if mime == "video/vp8":
            return CappedVp8Encoder(profile.video_max_bps)
    return _aiortc_get_encoder(codec)


_installed: Callable[[RTCRtpCodecParameters], Encoder] | None = None


def install() -> None:
    """Route aiortc's sender encoder choice through :func:`select_encoder` (idempotent)."""
    global _installed
    if _installed is None:
        _installed = select_encoder
        _sender_module.get_encoder = select_encoder  # type: ignore[attr-defined]


@contextlib.contextmanager
def encoder_profile(profile: EncoderProfile = DEFAULT_PROFILE) -> Iterator[None]:
    """Senders started inside this block (and their tasks) use ``profile``."""
    install()
    token = _profile.set(profile)
    try:
        yield
    finally:
        _profile.reset(token)
