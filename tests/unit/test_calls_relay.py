"""Relaying and playback without a network: forwarding slots, the forwarding table,
which output device plays received audio, and the calls config knobs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiortc.contrib.media import MediaRecorder, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from waits import AsyncWaitUntil

from meshdesk.calls.media import TestPatternTrack, ToneTrack
from meshdesk.calls.playback import Output, Playback, choose_output
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


# -- playback ----------------------------------------------------------------------------

BOTH = ("pulse", "alsa")


def _root(tmp_path: Path, *files: str) -> Path:
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return tmp_path


def test_a_pulse_server_socket_means_pulse(tmp_path: Path) -> None:
    root = _root(tmp_path, "run/user/1000/pulse/native", "dev/snd/pcmC0D0p")
    out = choose_output("auto", env={}, uid=1000, root=root, formats=BOTH)
    assert (out.format, out.device) == ("pulse", "default")
    # FFmpeg without pulse output: ALSA's default (routed to the server) instead.
    out = choose_output("auto", env={}, uid=1000, root=root, formats=("alsa",))
    assert (out.format, out.device) == ("alsa", "default")


def test_pulse_server_from_the_environment(tmp_path: Path) -> None:
    root = _root(tmp_path, "tmp/pulse.sock")
    env = {"PULSE_SERVER": "unix:/tmp/pulse.sock"}
    assert choose_output("auto", env=env, uid=1, root=root, formats=BOTH).format == "pulse"
    env = {"PULSE_SERVER": "unix:/tmp/gone.sock"}
    assert choose_output("auto", env=env, uid=1, root=root, formats=BOTH).format is None


def test_an_alsa_playback_pcm_means_alsa_and_a_capture_pcm_does_not(tmp_path: Path) -> None:
    capture_only = _root(tmp_path / "a", "dev/snd/pcmC0D0c", "dev/snd/controlC0")
    assert choose_output("auto", env={}, uid=1, root=capture_only, formats=BOTH).format is None
    playback = _root(tmp_path / "b", "dev/snd/pcmC0D0c", "dev/snd/pcmC0D3p")
    out = choose_output("auto", env={}, uid=1, root=playback, formats=BOTH)
    assert (out.format, out.device) == ("alsa", "default")
    assert "pcmC0D3p" in out.why


def test_no_device_or_off_means_counting_only(tmp_path: Path) -> None:
    none = choose_output("auto", env={}, uid=1, root=tmp_path, formats=BOTH)
    assert none.format is None
    assert "no output device" in none.describe()
    root = _root(tmp_path, "dev/snd/pcmC0D0p")
    off = choose_output("off", env={}, uid=1, root=root, formats=BOTH)
    assert off.format is None
    assert "off" in off.why
    # A device FFmpeg cannot drive is said so.
    assert (
        "no pulse or alsa output"
        in choose_output("auto", env={}, uid=1, root=root, formats=("wav",)).why
    )


async def test_without_an_output_the_track_is_released_not_played() -> None:
    relay = MediaRelay()
    tone = ToneTrack()
    proxy = relay.subscribe(tone)
    playback = Playback(Output(None, None, "none"))
    assert await playback.play("leg", proxy) is False
    assert proxy.readyState == "ended"
    tone.stop()


async def test_an_output_that_fails_to_open_is_logged_and_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    opened: list[tuple[str, str]] = []

    def broken(device: str, fmt: str) -> MediaRecorder:
        opened.append((device, fmt))
        raise OSError("no such device")

    playback = Playback(Output("alsa", "default", "test"), recorder=broken)
    tone = ToneTrack()
    with caplog.at_level(logging.WARNING, "meshdesk.calls.playback"):
        assert await playback.play("leg", MediaRelay().subscribe(tone)) is False
        assert await playback.play("leg", MediaRelay().subscribe(tone)) is False
    assert opened == [("default", "alsa")]  # tried once
    assert playback.output.format is None
    assert sum("cannot play call audio" in r.message for r in caplog.records) == 1
    tone.stop()


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
