"""One leg of a call: an aiortc peer connection with one other node.

The configuration is always ``RTCConfiguration(iceServers=[])``: aiortc's default
would ask a public STUN server, and meshdesk never talks to anything but the
deployment's own nodes. ICE gathers host candidates only, before ``createOffer``
returns, so the SDP carries them and no trickle is needed. The SDP (with its DTLS
fingerprint) only ever travels over the authenticated link, which is what ties the
media to the authenticated node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from av.frame import Frame

from meshdesk.calls.codecs import DEFAULT_PROFILE, EncoderProfile, encoder_profile
from meshdesk.calls.ice import only_addresses
from meshdesk.errors import CallError

__all__ = [
    "PREVIEW_HEIGHT",
    "PREVIEW_WIDTH",
    "CountingTrack",
    "Leg",
    "LegStats",
    "Preview",
    "ice_configuration",
]

log = logging.getLogger(__name__)

PREVIEW_WIDTH = 160
PREVIEW_HEIGHT = 120
#: Received video is kept for the preview at most this often (seconds).
PREVIEW_INTERVAL = 0.5


def ice_configuration() -> RTCConfiguration:
    """No STUN, no TURN: host candidates on the local networks only; one transport.

    ``max-bundle``: every section rides the first one's transport from the start.
    With aiortc's default (``balanced``) a second video section (a relaying host's
    forwarding slot) is bundled to the first video transport, which BUNDLE
    negotiation then discards: that slot never sent a frame (found by the lab's
    browser test; audio slots were unaffected, being bundled to the primary).
    """
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class CountingTrack(MediaStreamTrack):
    """Passes another track's frames on, counting them (what the sender encodes)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self.frames = 0

    async def recv(self) -> Frame:
        data = await self._source.recv()
        self.frames += 1
        assert isinstance(data, Frame)
        return data

    def stop(self) -> None:
        super().stop()
        self._source.stop()


@dataclass(frozen=True, slots=True)
class Preview:
    """The latest received video frame, downscaled, as packed RGB."""

    width: int
    height: int
    rgb: bytes


@dataclass(frozen=True, slots=True)
class LegStats:
    """Counters and RTCP figures of one leg at one moment."""

    video_frames_sent: int
    video_frames_received: int
    audio_frames_received: int
    bytes_sent: int
    bytes_received: int
    packets_received: int
    packets_lost: int
    rtt_ms: float | None


def _rgb(frame: VideoFrame) -> Preview:
    small = frame.reformat(width=PREVIEW_WIDTH, height=PREVIEW_HEIGHT, format="rgb24")
    plane = small.planes[0]
    row = PREVIEW_WIDTH * 3
    data = bytes(plane)
    if plane.line_size != row:  # rows are padded: keep the pixels only
        data = b"".join(
            data[y * plane.line_size : y * plane.line_size + row] for y in range(PREVIEW_HEIGHT)
        )
    return Preview(PREVIEW_WIDTH, PREVIEW_HEIGHT, data)


class Leg:
    """The media path between this node and ``peer_id`` within one call."""

    def __init__(
        self,
        peer_id: str,
        *,
        audio: MediaStreamTrack | None,
        video: MediaStreamTrack | None,
        relay: MediaRelay,
        profile: EncoderProfile = DEFAULT_PROFILE,
        on_change: Callable[[Leg], None] | None = None,
        on_audio: Callable[[MediaStreamTrack], None] | None = None,
        slots: Sequence[MediaStreamTrack] = (),
        addresses: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer_id = peer_id
        self.pc = RTCPeerConnection(ice_configuration())
        self._relay = relay
        self._profile = profile
        self._on_change = on_change
        self._on_audio = on_audio
        self._slots = list(slots)
        self._addresses = addresses
        self._clock = clock
        self._sources: dict[str, MediaStreamTrack | None] = {"audio": audio, "video": video}
        self._sending: dict[str, CountingTrack | None] = {"audio": None, "video": None}
        self._senders: dict[str, RTCRtpSender] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.video_frames_received = 0
        self.audio_frames_received = 0
        self.last_media_at: float | None = None
        self.first_video_at: float | None = None
        self.first_audio_at: float | None = None
        self.preview: Preview | None = None
        #: The first received track of each kind (what a relaying host forwards).
        self.remote: dict[str, MediaStreamTrack] = {}
        #: When each received audio track last delivered a frame.
        self._audio_seen: dict[int, float] = {}
        #: When each received video track last delivered a frame.
        self._video_seen: dict[int, float] = {}
        self._preview_at = 0.0
        self._closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def __repr__(self) -> str:
        return f"<Leg {self.peer_id} {self.state}>"

    @property
    def state(self) -> str:
        """aiortc's connection state: new, connecting, connected, failed, closed."""
        return str(self.pc.connectionState)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def video_frames_sent(self) -> int:
        track = self._sending["video"]
        return track.frames if track is not None else 0

    def _attach(self, kind: str) -> None:
        source = self._sources[kind]
        if source is None:
            return
        track = CountingTrack(self._relay.subscribe(source, buffered=False))
        self._sending[kind] = track
        self._senders[kind] = self.pc.addTrack(track)

    async def offer(self) -> str:
        """Create and apply the local offer; its SDP (with host candidates)."""
        for kind in ("audio", "video"):
            self._attach(kind)
        for slot in self._slots:
            self.pc.addTrack(slot)
        try:
            with encoder_profile(self._profile), only_addresses(self._addresses):
                await self.pc.setLocalDescription(await self.pc.createOffer())
        except (ValueError, RuntimeError) as exc:
            raise CallError(f"cannot create an offer for {self.peer_id}: {exc}") from exc
        return self.pc.localDescription.sdp

    async def answer(self, offer_sdp: str) -> str:
        """Apply the peer's offer and answer it; the answer's SDP.

        Raises:
            CallError: the offer is not a usable SDP.
        """
        try:
            with encoder_profile(self._profile), only_addresses(self._addresses):
                await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                offered = {t.kind for t in self.pc.getTransceivers()}
                if "audio" not in offered:
                    raise ValueError("it offers no audio")
                for kind in ("audio", "video"):
                    if kind in offered:
                        self._attach(kind)
                # A browser (a citizen's phone) offers spare receive-only sections
                # for what the host forwards: fill them with slots, never add more
                # (an answer cannot add sections).
                for slot in self._slots:
                    free = [
                        t
                        for t in self.pc.getTransceivers()
                        if t.kind == slot.kind and t.sender.track is None
                    ]
                    if free:
                        self.pc.addTrack(slot)
                    else:
                        slot.stop()
                await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, RuntimeError, KeyError, IndexError) as exc:
            raise CallError(f"unusable offer from {self.peer_id}: {exc}") from exc
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        """Apply the peer's answer to our offer.

        Raises:
            CallError: the answer is not a usable SDP.
        """
        try:
            with encoder_profile(self._profile):
                await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        except (ValueError, RuntimeError, KeyError, IndexError) as exc:
            raise CallError(f"unusable answer from {self.peer_id}: {exc}") from exc

    def send_video(self, on: bool) -> None:
        """Stop or resume sending video (mute, or audio-only fallback)."""
        self._send("video", on)

    def send_audio(self, on: bool) -> None:
        self._send("audio", on)

    def _send(self, kind: str, on: bool) -> None:
        sender = self._senders.get(kind)
        track = self._sending[kind]
        if sender is not None and track is not None:
            sender.replaceTrack(track if on else None)

    def _on_state(self) -> None:
        log.debug("leg with %s: %s", self.peer_id, self.state)
        if self._on_change is not None:
            self._on_change(self)

    def _on_track(self, track: MediaStreamTrack) -> None:
        # Every reader (our counter, a host's forwarding slots, playback) gets its own
        # relay proxy: a track read by two consumers would split its frames.
        self.remote.setdefault(track.kind, track)
        own = self._relay.subscribe(track, buffered=True)
        task = asyncio.create_task(self._consume(own), name=f"call media from {self.peer_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        (self._audio_seen if track.kind == "audio" else self._video_seen)[id(own)] = 0.0
        if track.kind == "audio" and self._on_audio is not None:
            self._on_audio(self._relay.subscribe(track, buffered=True))

    def audio_sources(self, within: float = 2.0) -> int:
        """How many received audio tracks delivered a frame in the last ``within`` s."""
        now = self._clock()
        return sum(1 for at in self._audio_seen.values() if at and now - at <= within)

    def video_sources(self, within: float = 2.0) -> int:
        """How many received video tracks delivered a frame in the last ``within`` s
        (a relaying host's leg carries its own video and a forwarded one)."""
        now = self._clock()
        return sum(1 for at in self._video_seen.values() if at and now - at <= within)

    async def _consume(self, track: MediaStreamTrack) -> None:
        """Read received media: count it and keep a low-rate preview (never stored)."""
        try:
            while True:
                frame = await track.recv()
                now = self._clock()
                self.last_media_at = now
                if isinstance(frame, VideoFrame):
                    self.video_frames_received += 1
                    self._video_seen[id(track)] = now
                    if self.first_video_at is None:
                        self.first_video_at = now
                        self._changed()
                    if now - self._preview_at >= PREVIEW_INTERVAL:
                        self._preview_at = now
                        self.preview = _rgb(frame)
                else:
                    self.audio_frames_received += 1
                    self._audio_seen[id(track)] = now
                    if self.first_audio_at is None:
                        self.first_audio_at = now
                        self._changed()
        except MediaStreamError:
            return  # the track ended with the connection
        finally:
            track.stop()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    async def stats(self) -> LegStats:
        """Counters and the latest RTCP figures (RTT from receiver reports)."""
        sent = received = packets = lost = 0
        rtts: list[float] = []
        report = await self.pc.getStats()
        for item in report.values():
            if item.type == "outbound-rtp":
                sent += getattr(item, "bytesSent", 0)
            elif item.type == "inbound-rtp":
                packets += getattr(item, "packetsReceived", 0)
                lost += max(getattr(item, "packetsLost", 0), 0)
            elif item.type == "remote-inbound-rtp":
                rtt = getattr(item, "roundTripTime", None)
                if isinstance(rtt, int | float) and rtt > 0:
                    rtts.append(rtt * 1000)
            elif item.type == "transport":
                received += getattr(item, "bytesReceived", 0)
        return LegStats(
            video_frames_sent=self.video_frames_sent,
            video_frames_received=self.video_frames_received,
            audio_frames_received=self.audio_frames_received,
            bytes_sent=sent,
            bytes_received=received,
            packets_received=packets,
            packets_lost=lost,
            rtt_ms=max(rtts) if rtts else None,
        )

    async def close(self) -> None:
        """Close the peer connection and stop reading; idempotent."""
        if self._closed:
            return
        self._closed = True
        for track in self._sending.values():
            if track is not None:
                track.stop()
        for slot in self._slots:
            slot.stop()
        with contextlib.suppress(ConnectionError):
            await self.pc.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
