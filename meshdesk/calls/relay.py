"""Relaying through a host: how a call grows past the full-mesh limit.

A full mesh costs every node one peer connection (and one encode) per other
participant, so past :data:`~meshdesk.calls.manager.MESH_MAX` nodes the call becomes a
star: the host (the call's ``host``, normally the caller) holds one leg per
participant and every participant one leg, to the host.

Each of the host's legs carries the host's own audio and video, plus *forwarding
slots* negotiated when the leg is made: :data:`AUDIO_SLOTS` audio slots and, unless
the call is audio-only, one video slot. A slot is a :class:`SlotTrack` whose source
the host switches without renegotiating: the audio slots carry the audio of every
other participant (one each, no mixing), the video slot the video of the most
recently joined other participant. Forwarding every video would cost the host one
extra VP8 encode per participant pair; one forwarded video keeps it linear.

Sources are the host's received tracks, fanned out with aiortc's ``MediaRelay``: the
leg's own counter, each slot that forwards it and the playback each read their own
proxy. Forwarded frames are decoded and re-encoded (aiortc has no SFU path), and are
re-stamped so a slot's timestamps stay monotonic when its source changes.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame

__all__ = ["AUDIO_SLOTS", "GROUP_MAX", "Forwarder", "SlotTrack"]

log = logging.getLogger(__name__)

#: Most nodes in one relayed call (the host included).
GROUP_MAX = 8
#: Forwarded audio tracks on each of the host's legs: everyone but the host and the peer.
AUDIO_SLOTS = GROUP_MAX - 2
_VIDEO_CLOCK = 90000
_ORIGIN = time.monotonic()


class SlotTrack(MediaStreamTrack):
    """A track whose frames come from a source the host can switch at any time.

    With no source (or when the source ends) it waits for the next one: the sender
    simply sends nothing meanwhile.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.source_id: str | None = None
        self._source: MediaStreamTrack | None = None
        self._changed = asyncio.Event()
        self._pending: asyncio.Future[Any] | None = None
        self._samples = 0
        self.frames = 0

    def set_source(self, node_id: str | None, track: MediaStreamTrack | None) -> None:
        """Forward ``track`` (a relay proxy this slot now owns) from now on; None to idle."""
        if self.readyState != "live" and track is not None:
            track.stop()  # a stopped slot (never sent on) must not hold a relay proxy
            track, node_id = None, None
        old, self._source, self.source_id = self._source, track, node_id
        if old is not None and old is not track:
            old.stop()
        if self._pending is not None:
            self._pending.cancel()
        self._changed.set()

    async def recv(self) -> Frame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            if source is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._pending = asyncio.ensure_future(source.recv())
            try:
                frame = await self._pending
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                continue  # our own cancel: the source was switched
            except MediaStreamError:
                if self._source is source:
                    self._source = self.source_id = None
                continue
            finally:
                self._pending = None
            assert isinstance(frame, Frame)
            self.frames += 1
            return self._restamp(frame)

    def _restamp(self, frame: Frame) -> Frame:
        """Timestamps of our own, monotonic across source changes."""
        if isinstance(frame, AudioFrame):
            # A copy: the same decoded frame goes to several slots, encoded in threads.
            copy = AudioFrame(
                format=frame.format.name, layout=frame.layout.name, samples=frame.samples
            )
            for target, plane in zip(copy.planes, frame.planes, strict=True):
                target.update(bytes(plane)[: target.buffer_size])
            copy.sample_rate = frame.sample_rate
            copy.pts = self._samples
            copy.time_base = fractions.Fraction(1, frame.sample_rate)
            self._samples += frame.samples
            return copy
        if isinstance(frame, VideoFrame):
            # Shared with other slots; every slot writes (nearly) the same clock value.
            frame.pts = int((time.monotonic() - _ORIGIN) * _VIDEO_CLOCK)
            frame.time_base = fractions.Fraction(1, _VIDEO_CLOCK)
        return frame

    def stop(self) -> None:
        super().stop()
        self.set_source(None, None)


class Forwarder:
    """The host's forwarding table for one relayed call: which source each slot carries."""

    def __init__(self, relay: MediaRelay, *, audio_only: bool) -> None:
        self._relay = relay
        self._audio_only = audio_only
        self._slots: dict[str, list[SlotTrack]] = {}

    def slots_for(self, node_id: str) -> list[SlotTrack]:
        """Fresh slots for a new leg to ``node_id`` (any older ones are stopped)."""
        self.forget(node_id)
        slots = [SlotTrack("audio") for _ in range(AUDIO_SLOTS)]
        if not self._audio_only:
            slots.append(SlotTrack("video"))
        self._slots[node_id] = slots
        return slots

    def forget(self, node_id: str) -> None:
        for slot in self._slots.pop(node_id, []):
            slot.stop()

    @property
    def targets(self) -> list[str]:
        """Participants this host still forwards to."""
        return list(self._slots)

    def stop_video(self) -> None:
        """The host fell back to audio only: it forwards no video from now on (each
        forwarded video costs it a decode and an encode per target)."""
        self._audio_only = True
        for slots in self._slots.values():
            for slot in slots:
                if slot.kind == "video":
                    slot.set_source(None, None)

    def close(self) -> None:
        for node_id in list(self._slots):
            self.forget(node_id)

    def sources(self, node_id: str) -> dict[str, str | None]:
        """What ``node_id``'s slots carry now, ``{"audio0": source id, ...}`` (for tests/logs)."""
        slots = self._slots.get(node_id, [])
        return {f"{s.kind}{i}": s.source_id for i, s in enumerate(slots)}

    def rewire(
        self, remote: Mapping[str, Mapping[str, MediaStreamTrack]], order: Sequence[str]
    ) -> None:
        """Point every slot at the right source.

        ``remote`` maps each connected participant to its received tracks by kind;
        ``order`` lists participants oldest joiner first. An audio slot keeps its
        source while that source is live (no needless switches); the video slot
        carries the newest joiner's video.
        """
        for target, slots in self._slots.items():
            others = [n for n in order if n != target and n in remote]
            audio = [s for s in slots if s.kind == "audio"]
            wanted = [n for n in others if "audio" in remote[n]]
            for slot in audio:
                if slot.source_id is not None and slot.source_id not in wanted:
                    slot.set_source(None, None)
            placed = {s.source_id for s in audio if s.source_id is not None}
            free = [s for s in audio if s.source_id is None]
            for node_id in wanted:
                if node_id not in placed and free:
                    free.pop(0).set_source(
                        node_id, self._relay.subscribe(remote[node_id]["audio"], buffered=True)
                    )
            video = [n for n in others if "video" in remote[n] and not self._audio_only]
            for slot in slots:
                if slot.kind != "video":
                    continue
                newest = video[-1] if video else None
                if slot.source_id != newest:
                    track = None
                    if newest is not None:
                        track = self._relay.subscribe(remote[newest]["video"], buffered=False)
                    slot.set_source(newest, track)
                    log.debug("video slot to %s now carries %s", target, newest)
