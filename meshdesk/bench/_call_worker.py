"""One side of ``meshdesk bench call``: a caller and a callee in this process.

Run inside a lab namespace (aioice ignores loopback): ``python -m
meshdesk.bench._call_worker raw|meshdesk ROUNDS SECONDS``. Prints one JSON object.
``raw`` is a plain aiortc pair (``iceServers=[]`` too: the bench never contacts a
STUN server); ``meshdesk`` is a pair of call legs whose SDP crosses the wire codec
as ``CallOffer``/``CallAnswer`` frames, with meshdesk's encoder profile. Both send
the same synthetic media (640×480@30 test pattern and a tone).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from meshdesk.calls.media import open_media
from meshdesk.calls.peer import Leg
from meshdesk.cases.ids import new_id
from meshdesk.wire import CallAnswer, CallOffer, decode, encode

__all__ = ["main"]

#: Bound for one setup; a pair that does not connect in this time is an error.
SETUP_LIMIT = 20.0


@dataclass
class _Counter:
    video: int = 0
    first_video: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def watch(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    self.video += 1
                    if self.first_video is None:
                        self.first_video = time.monotonic()
        except MediaStreamError:
            return


async def _raw_round(seconds: float) -> tuple[float, float, float]:
    counters = [_Counter(), _Counter()]
    pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
    medias = [open_media("synthetic", name, audio_only=False) for name in ("a", "b")]
    for pc, counter, media in zip(pcs, counters, medias, strict=True):
        pc.on("track", counter.watch)
        pc.addTrack(media.audio)
        assert media.video is not None
        pc.addTrack(media.video)
    try:
        start = time.monotonic()
        await pcs[0].setLocalDescription(await pcs[0].createOffer())
        await pcs[1].setRemoteDescription(pcs[0].localDescription)
        await pcs[1].setLocalDescription(await pcs[1].createAnswer())
        await pcs[0].setRemoteDescription(pcs[1].localDescription)
        return await _measure(
            start, lambda: counters[0].first_video, lambda: [c.video for c in counters], seconds
        )
    finally:
        for pc in pcs:
            await pc.close()
        for media in medias:
            media.close()
        for counter in counters:
            for task in counter.tasks:
                task.cancel()


async def _meshdesk_round(seconds: float) -> tuple[float, float, float]:
    relay = MediaRelay()
    medias = [open_media("synthetic", name, audio_only=False) for name in ("a", "b")]
    a, b = (Leg(peer, audio=m.audio, video=m.video, relay=relay) for peer, m in
            zip(("b", "a"), medias, strict=True))  # fmt: skip
    call_id = new_id(int(time.time() * 1000))
    try:
        start = time.monotonic()
        offer = CallOffer(call_id, None, False, "a", ("a",), False, await a.offer())
        received = decode(encode(offer))
        assert isinstance(received, CallOffer)
        answer = decode(encode(CallAnswer(call_id, await b.answer(received.sdp))))
        assert isinstance(answer, CallAnswer)
        await a.accept(answer.sdp)
        return await _measure(
            start,
            lambda: a.first_video_at,
            lambda: [a.video_frames_received, b.video_frames_received],
            seconds,
        )
    finally:
        await a.close()
        await b.close()
        for media in medias:
            media.close()


async def _measure(
    start: float,
    first: Callable[[], float | None],
    frames: Callable[[], list[int]],
    seconds: float,
) -> tuple[float, float, float]:
    """Setup ms (start → caller's first remote video frame), CPU % per endpoint, fps."""
    deadline = start + SETUP_LIMIT
    while (at := first()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"no video within {SETUP_LIMIT:g} s")
        await asyncio.sleep(0.002)
    setup_ms = (at - start) * 1000
    if seconds <= 0:
        return setup_ms, 0.0, 0.0
    await asyncio.sleep(1.0)  # let the encoders settle before measuring
    cpu0, wall0, before = time.process_time(), time.monotonic(), frames()
    await asyncio.sleep(seconds)
    cpu, wall, after = time.process_time() - cpu0, time.monotonic() - wall0, frames()
    fps = sum(n - m for n, m in zip(after, before, strict=True)) / 2 / wall
    return setup_ms, 100.0 * cpu / wall / 2, fps


async def run(mode: str, rounds: int, seconds: float) -> dict[str, object]:
    one = _raw_round if mode == "raw" else _meshdesk_round
    setups: list[float] = []
    cpu = fps = 0.0
    for index in range(rounds):
        last = index == rounds - 1
        setup, round_cpu, round_fps = await one(seconds if last else 0.0)
        setups.append(setup)
        if last:
            cpu, fps = round_cpu, round_fps
    return {
        "mode": mode,
        "setup_ms_p50": round(statistics.median(setups), 1),
        "setup_ms": [round(s, 1) for s in setups],
        "cpu_pct_per_endpoint": round(cpu, 1),
        "fps_received": round(fps, 1),
    }


def main(argv: list[str]) -> int:
    mode, rounds, seconds = argv[0], int(argv[1]), float(argv[2])
    print(json.dumps(asyncio.run(run(mode, rounds, seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
