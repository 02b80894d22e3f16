"""Two call legs in one process inside a lab namespace (run by test_calls_lab.py).

``python call_probe.py intact|tampered``: leg A offers, leg B answers, and the answer
reaches A either as B wrote it or with one byte of its DTLS fingerprint changed, as
if someone between the nodes had swapped in their own certificate. Prints one JSON
object: A's final connection state and the frames each side received.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

from aiortc.contrib.media import MediaRelay

from meshdesk.calls.media import open_media
from meshdesk.calls.peer import Leg

#: Bound for ICE + DTLS on one host (the product's own call setup is far faster).
SETTLE = 8.0


def tamper(sdp: str) -> str:
    """Flip one hex digit of the ``a=fingerprint`` line."""
    match = re.search(r"a=fingerprint:sha-256 ([0-9A-F:]+)", sdp)
    assert match is not None, "no sha-256 fingerprint in the SDP"
    digits = match.group(1)
    flipped = ("1" if digits[0] != "1" else "2") + digits[1:]
    return sdp.replace(digits, flipped)


async def main(mode: str) -> dict[str, object]:
    relay = MediaRelay()
    media_a = open_media("synthetic", "a", audio_only=False)
    media_b = open_media("synthetic", "b", audio_only=False)
    a = Leg("b", audio=media_a.audio, video=media_a.video, relay=relay)
    b = Leg("a", audio=media_b.audio, video=media_b.video, relay=relay)
    try:
        answer = await b.answer(await a.offer())
        await a.accept(tamper(answer) if mode == "tampered" else answer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE
        while loop.time() < deadline and a.state not in ("failed", "closed"):
            if a.state == "connected" and a.video_frames_received > 10:
                break
            await asyncio.sleep(0.1)
        return {
            "state": a.state,
            "a_video_received": a.video_frames_received,
            "b_video_received": b.video_frames_received,
            "a_audio_received": a.audio_frames_received,
        }
    finally:
        await a.close()
        await b.close()
        media_a.close()
        media_b.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
