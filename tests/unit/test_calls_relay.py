"""Relaying without a network: forwarding slots, the forwarding table, and the calls
config knobs (playback and the sound server: tests/unit/test_calls_sound.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from waits import AsyncWaitUntil

from meshdesk.calls.media import TestPatternTrack, ToneTrack
from meshdesk.calls.relay import AUDIO_SLOTS, Forwarder, SlotTrack
from meshdesk.config import ConfigError, load_config

# -- forwarding slots --------------------------------------------------------------------


async def test_a_slot_keeps_monotonic_timestamps_across_sources() -> None:
    relay = MediaRelay()
    one, two = ToneTrack(), ToneTrack()
    slot = SlotTrack("audio")
    slot.set_source("one", relay.subscribe(one))
    pts = [(await slot.recv()).pts for _ in range(2)]
    slot.set_source("two", relay.subscribe(two))
    pts.append((await slot.recv()).pts)
    assert pts == [0, 960, 1920]
    assert slot.source_id == "two"
    slot.stop()
    one.stop()
    two.stop()


async def test_an_idle_slot_waits_and_a_switch_wakes_it() -> None:
    relay = MediaRelay()
    tone = ToneTrack()
    slot = SlotTrack("audio")
    pending = asyncio.ensure_future(slot.recv())
    # Something that does not happen: for a while, an idle slot sends nothing.
    await asyncio.sleep(0.05)
    assert not pending.done()  # no source: nothing to send
    slot.set_source("a", relay.subscribe(tone))
    frame = await asyncio.wait_for(pending, 2)
    assert frame.samples == 960
    slot.stop()
    with pytest.raises(MediaStreamError):
        await slot.recv()
    tone.stop()


class FeedTrack(MediaStreamTrack):
    """A source the test feeds by hand; None ends it."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue()

    async def recv(self) -> Frame:
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


async def test_a_slot_whose_source_ends_goes_idle(async_wait_until: AsyncWaitUntil) -> None:
    tone, feed = ToneTrack(), FeedTrack()
    slot = SlotTrack("audio")
    slot.set_source("a", MediaRelay().subscribe(feed))
    feed.queue.put_nowait(await tone.recv())
    assert (await slot.recv()).samples == 960
    feed.queue.put_nowait(None)
    pending = asyncio.ensure_future(slot.recv())
    await async_wait_until(lambda: slot.source_id is None, 5, message="the slot dropped its source")
    assert not pending.done()  # idle now: waiting for a new source
    slot.stop()
    with pytest.raises(MediaStreamError):
        await pending
    tone.stop()


def _tracks(video: bool = True) -> dict[str, MediaStreamTrack]:
    tracks: dict[str, MediaStreamTrack] = {"audio": ToneTrack()}
    if video:
        tracks["video"] = TestPatternTrack("x")
    return tracks


async def test_the_forwarder_sends_everyone_elses_audio_and_the_newest_video() -> None:
    forwarder = Forwarder(MediaRelay(), audio_only=False)
    for node in "bcde":
        slots = forwarder.slots_for(node)
        assert [s.kind for s in slots] == ["audio"] * AUDIO_SLOTS + ["video"]
    remote = {node: _tracks() for node in "bcde"}
    forwarder.rewire(remote, ["b", "c", "d", "e"])
    to_b = forwarder.sources("b")
    assert sorted(v for k, v in to_b.items() if k.startswith("audio") and v) == ["c", "d", "e"]
    assert to_b[f"video{AUDIO_SLOTS}"] == "e"
    assert forwarder.sources("e")[f"video{AUDIO_SLOTS}"] == "d"  # nobody gets its own
    slot_of_d = next(k for k, v in to_b.items() if v == "d")

    del remote["c"]  # c left
    forwarder.forget("c")
    forwarder.rewire(remote, ["b", "d", "e"])
    to_b = forwarder.sources("b")
    assert sorted(v for k, v in to_b.items() if k.startswith("audio") and v) == ["d", "e"]
    assert to_b[slot_of_d] == "d"  # a live source keeps its slot
    assert forwarder.sources("c") == {}
    forwarder.close()
    for tracks in remote.values():
        for track in tracks.values():
            track.stop()


def test_an_audio_only_forwarder_has_no_video_slot() -> None:
    forwarder = Forwarder(MediaRelay(), audio_only=True)
    assert {s.kind for s in forwarder.slots_for("b")} == {"audio"}
    forwarder.close()


# -- config ------------------------------------------------------------------------------


def test_calls_config_playback_and_fallback_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[calls]\nplayback = "off"\nfallback_loss_pct = 20\nfallback_rtt_ms = 800.0\n')
    calls = load_config(path).calls
    assert (calls.playback, calls.fallback_loss_pct, calls.fallback_rtt_ms) == ("off", 20.0, 800.0)
    for bad, key in (
        ('playback = "loud"', "calls.playback"),
        ("fallback_loss_pct = 0", "calls.fallback_loss_pct"),
        ("fallback_rtt_ms = -1", "calls.fallback_rtt_ms"),
    ):
        path.write_text(f"[calls]\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            load_config(path)
