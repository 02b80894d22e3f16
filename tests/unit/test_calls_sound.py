"""The sound route without a sound server: where received audio plays, the player
pipe, the microphone pipe, the echo canceller's set-up (against a fake ``pactl``),
and a missing or unusable camera. The real server is the lab's (tests/lab/test_sound_lab.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from tones import analyse, samples_of
from waits import AsyncWaitUntil

from meshdesk.calls.media import ToneTrack, open_media
from meshdesk.calls.playback import Output, Playback, choose_output
from meshdesk.calls.sound import (
    EC_SINK,
    EC_SOURCE,
    MicTrack,
    Route,
    SoundDesk,
    capture_argv,
    defaults,
    find_echo_cancel,
)
from meshdesk.config import CallSettings, ConfigError, load_config
from meshdesk.errors import CallError

PY = sys.executable


def _root(tmp_path: Path, *files: str) -> Path:
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return tmp_path


def _which(*present: str) -> Callable[[str], str | None]:
    return lambda name: f"/usr/bin/{name}" if name in present else None


# -- where received audio plays ----------------------------------------------------------


def test_a_pulse_server_means_pacat_into_it(tmp_path: Path) -> None:
    root = _root(tmp_path, "run/user/1000/pulse/native", "dev/snd/pcmC0D0p")
    out = choose_output("auto", env={}, uid=1000, root=root, which=_which("pacat", "aplay"))
    assert out.kind == "pulse"
    assert out.argv[:2] == ("/usr/bin/pacat", "--playback")
    assert "--format=s16le" in out.argv
    # Without pacat the ALSA card is used; without either it says what to install.
    alsa = choose_output("auto", env={}, uid=1000, root=root, which=_which("aplay"))
    assert alsa.kind == "alsa"
    none = choose_output("auto", env={}, uid=1000, root=root, which=_which())
    assert none.kind is None
    assert "pulseaudio-utils" in none.why


def test_pulse_server_from_the_environment(tmp_path: Path) -> None:
    root = _root(tmp_path, "tmp/pulse.sock")
    which = _which("pacat")
    env = {"PULSE_SERVER": "unix:/tmp/pulse.sock"}
    assert choose_output("auto", env=env, uid=1, root=root, which=which).kind == "pulse"
    env = {"PULSE_SERVER": "unix:/tmp/gone.sock"}
    assert choose_output("auto", env=env, uid=1, root=root, which=which).kind is None


def test_an_alsa_playback_pcm_means_aplay_and_a_capture_pcm_does_not(tmp_path: Path) -> None:
    which = _which("aplay")
    capture_only = _root(tmp_path / "a", "dev/snd/pcmC0D0c", "dev/snd/controlC0")
    assert choose_output("auto", env={}, uid=1, root=capture_only, which=which).kind is None
    playback = _root(tmp_path / "b", "dev/snd/pcmC0D0c", "dev/snd/pcmC0D3p")
    out = choose_output("auto", env={}, uid=1, root=playback, which=which)
    assert out.kind == "alsa"
    assert out.argv[0] == "/usr/bin/aplay"
    assert "pcmC0D3p" in out.why


def test_no_device_or_off_means_counting_only(tmp_path: Path) -> None:
    none = choose_output("auto", env={}, uid=1, root=tmp_path, which=_which("pacat"))
    assert none.kind is None
    assert "no output device" in none.describe()
    root = _root(tmp_path, "dev/snd/pcmC0D0p")
    off = choose_output("off", env={}, uid=1, root=root, which=_which("aplay"))
    assert off.kind is None
    assert "off" in off.why


def test_the_pulse_player_names_its_stream_and_the_canceller_sink() -> None:
    out = Output("pulse", "test", ("/usr/bin/pacat", "--playback"))
    assert out.command("call audio from b") == [
        "/usr/bin/pacat", "--playback", "--stream-name=call audio from b",
    ]  # fmt: skip
    playback = Playback(out)
    playback.route_to(EC_SINK)
    assert playback.output.command("x")[-1] == f"--device={EC_SINK}"
    assert EC_SINK in playback.output.describe()


async def test_received_audio_is_written_to_the_player_at_its_pitch(
    tmp_path: Path, async_wait_until: AsyncWaitUntil
) -> None:
    heard = tmp_path / "heard.raw"
    player = (
        PY,
        "-c",
        "import shutil, sys; "
        f"shutil.copyfileobj(sys.stdin.buffer, open({str(heard)!r}, 'wb'), 960)",
    )
    playback = Playback(Output("pulse", "test", player))
    tone = ToneTrack()
    assert await playback.play("leg", MediaRelay().subscribe(tone), "b") is True
    # 0.3 s of 48 kHz 16-bit mono: the player got raw PCM in real time.
    await async_wait_until(
        lambda: heard.exists() and heard.stat().st_size >= 48000 * 2 * 3 // 10, 10,
        message="the player received 0.3 s of audio",
    )  # fmt: skip
    await playback.stop("leg")
    result = analyse(samples_of(heard.read_bytes()))
    assert abs(result.hz - 440) < 5
    assert -20 < result.dbfs < -10  # the tone is 6000/32768 ≈ -14.7 dBFS
    tone.stop()


async def test_a_player_that_fails_is_logged_once_and_given_up(
    caplog: pytest.LogCaptureFixture, async_wait_until: AsyncWaitUntil
) -> None:
    broken = (PY, "-c", "import sys; sys.stderr.write('Connection refused'); sys.exit(1)")
    playback = Playback(Output("pulse", "test", broken))
    tone = ToneTrack()
    with caplog.at_level(logging.WARNING, "meshdesk.calls.playback"):
        assert await playback.play("leg", MediaRelay().subscribe(tone), "b") is True
        await async_wait_until(lambda: playback.output.kind is None, 10, message="given up")
        assert await playback.play("leg", MediaRelay().subscribe(tone), "b") is False
    await playback.close()
    warnings = [r.message for r in caplog.records if "cannot play call audio" in r.message]
    assert len(warnings) == 1
    assert "Connection refused" in warnings[0]
    missing = Playback(Output("pulse", "test", ("/nonexistent/pacat",)))
    assert await missing.play("leg", MediaRelay().subscribe(tone), "b") is False
    assert missing.output.kind is None
    tone.stop()


async def test_without_an_output_the_track_is_released_not_played() -> None:
    tone = ToneTrack()
    proxy = MediaRelay().subscribe(tone)
    playback = Playback(Output(None, "none"))
    assert await playback.play("leg", proxy) is False
    assert proxy.readyState == "ended"
    tone.stop()


# -- the microphone ----------------------------------------------------------------------


async def test_the_microphone_is_read_in_20_ms_frames_and_a_dead_recorder_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A "recorder" that writes 0.1 s of a 1 kHz tone, then exits.
    script = (
        "import math, struct, sys; "
        "sys.stdout.buffer.write(b''.join(struct.pack('<h', int(8000 * math.sin("
        "2 * math.pi * 1000 * i / 48000))) for i in range(4800)))"
    )
    mic = MicTrack([PY, "-c", script])
    frames = [await mic.recv() for _ in range(5)]
    assert [f.samples for f in frames] == [960] * 5
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840]
    raw = b"".join(bytes(f.planes[0])[:1920] for f in frames)
    assert abs(analyse(samples_of(raw)).hz - 1000) < 15
    with caplog.at_level(logging.WARNING, "meshdesk.calls.sound"), pytest.raises(MediaStreamError):
        await mic.recv()
    assert mic.readyState == "ended"
    assert any("microphone stopped" in r.message for r in caplog.records)


def test_the_recorder_follows_the_route() -> None:
    pulse = Route("pulse", EC_SINK, EC_SOURCE, True, "ec")
    argv = capture_argv(pulse, which=_which("parec"))
    assert argv[0] == "/usr/bin/parec"
    assert argv[-1] == f"--device={EC_SOURCE}"
    with pytest.raises(CallError, match="pulseaudio-utils"):
        capture_argv(pulse, which=_which())
    with pytest.raises(CallError, match="no microphone: no sound"):
        capture_argv(Route(None, None, None, False, "no sound server and no sound card"))


# -- the echo canceller ------------------------------------------------------------------

SINKS = "0\tspeaker\tmodule-null-sink.c\ts16le 1ch 48000Hz\tIDLE\n"
SOURCES = "0\tspeaker.monitor\tmodule-null-sink.c\ts16le 1ch 48000Hz\tIDLE\n1\tmic\tx\ty\tIDLE\n"
INFO = "Server Name: pulseaudio\nDefault Sink: speaker\nDefault Source: mic\n"


def test_an_echo_cancelling_pair_is_found_by_its_names() -> None:
    assert find_echo_cancel(SINKS, SOURCES) is None
    pulse = find_echo_cancel(
        SINKS + "1\tspeaker.echo-cancel\tmodule-echo-cancel.c\tf\tIDLE\n",
        SOURCES + "2\tmic.echo-cancel\tmodule-echo-cancel.c\tf\tIDLE\n"
        "3\tspeaker.echo-cancel.monitor\tmodule-echo-cancel.c\tf\tIDLE\n",
    )
    assert pulse is not None
    assert (pulse.sink, pulse.source) == ("speaker.echo-cancel", "mic.echo-cancel")
    pipewire = find_echo_cancel("5\techo-cancel-sink\tPipeWire\n", "6\techo-cancel-source\tPW\n")
    assert pipewire is not None
    assert pipewire.source == "echo-cancel-source"
    assert defaults(INFO) == ("speaker", "mic")


def _fake_pactl(tmp_path: Path, *, load: str = "print(7)") -> tuple[Path, Path]:
    """A ``pactl`` that answers like a server without a canceller and logs its args."""
    calls = tmp_path / "pactl.log"
    script = tmp_path / "pactl"
    script.write_text(
        f"#!{PY}\n"
        "import sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "args = sys.argv[1:]\n"
        f"if args[:3] == ['list', 'short', 'sinks']: print({SINKS!r}, end='')\n"
        f"elif args[:3] == ['list', 'short', 'sources']: print({SOURCES!r}, end='')\n"
        f"elif args[0] == 'info': print({INFO!r}, end='')\n"
        f"elif args[0] == 'load-module':\n    {load}\n"
    )
    script.chmod(0o755)
    return script, calls


def _desk(tmp_path: Path, setting: str, pactl: Path) -> SoundDesk:
    root = _root(tmp_path, "srv/pulse/native")
    tools = {"pactl": str(pactl), "parec": "/usr/bin/parec", "pacat": "/usr/bin/pacat"}
    return SoundDesk(setting, env={"PULSE_SERVER": "unix:/srv/pulse/native"}, uid=1, root=root,
                     which=tools.get)  # fmt: skip


async def test_auto_loads_the_canceller_over_the_defaults_and_unloads_it(tmp_path: Path) -> None:
    pactl, calls = _fake_pactl(tmp_path)
    desk = _desk(tmp_path, "auto", pactl)
    route = await desk.route()
    assert route.echo_cancel is True
    assert (route.sink, route.source) == (EC_SINK, EC_SOURCE)
    assert "loaded by meshdesk" in route.note
    assert await desk.route() is route  # once per node
    await desk.aclose()
    log = calls.read_text().splitlines()
    load = next(line for line in log if line.startswith("load-module"))
    assert "module-echo-cancel" in load
    assert "sink_master=speaker" in load
    assert "source_master=mic" in load
    assert log[-1] == "unload-module 7"


async def test_a_server_without_the_canceller_is_said_so_and_on_refuses(tmp_path: Path) -> None:
    failing = "sys.stderr.write('Failure: Module initialization failed'); sys.exit(1)"
    pactl, _ = _fake_pactl(tmp_path, load=failing)
    route = await _desk(tmp_path, "auto", pactl).route()
    assert route.echo_cancel is False
    assert route.kind == "pulse"  # the microphone still works, without the canceller
    assert "Module initialization failed" in route.note
    with pytest.raises(CallError, match=r"echo_cancel is on.*headset"):
        await _desk(tmp_path, "on", pactl).route()
    off = await _desk(tmp_path, "off", pactl).route()
    assert (off.echo_cancel, off.source) == (False, None)


# -- device media ------------------------------------------------------------------------

MIC = [PY, "-c", "import sys, time; time.sleep(30)"]


def test_device_media_without_a_microphone_is_a_call_error() -> None:
    with pytest.raises(CallError, match="no microphone"):
        open_media("device", "a", audio_only=True, microphone=None)


@pytest.mark.parametrize(
    ("camera", "said"),
    [("missing", "is missing"), ("not-a-camera", "cannot be opened")],
)
def test_a_missing_or_unusable_camera_makes_the_call_audio_only(
    tmp_path: Path, camera: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / camera
    if camera == "not-a-camera":
        path.write_bytes(b"\0" * 64)
    with caplog.at_level(logging.WARNING, "meshdesk.calls.media"):
        media = open_media("device", "a", audio_only=False, microphone=MIC, camera=str(path))
    assert media.video is None
    assert media.microphone is True
    assert media.note is not None
    assert said in media.note
    assert "audio only" in media.note
    assert [r.message for r in caplog.records] == [media.note]  # one clear line
    media.close()


def test_a_fifo_without_a_feed_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meshdesk.calls.media as media

    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    monkeypatch.setattr(media, "FIFO_WAIT", 0.1)
    with pytest.raises(CallError, match="start its feed first"):
        open_media(f"file:{fifo}", "a", audio_only=False)


def test_calls_config_echo_cancel_and_camera(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[calls]\necho_cancel = "off"\ncamera = "/dev/video2"\n')
    calls = load_config(path).calls
    assert calls == CallSettings(echo_cancel="off", camera="/dev/video2")
    assert CallSettings().echo_cancel == "auto"
    for bad, key in (('echo_cancel = "maybe"', "calls.echo_cancel"),
                     ('camera = "video0"', "calls.camera"), ("tone_hz = 440.5", "calls.tone_hz"),
                     ("tone_hz = 20", "calls.tone_hz")):  # fmt: skip
        path.write_text(f"[calls]\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            load_config(path)
