"""The desk's sound server: where call audio is heard, where the microphone is read,
and the echo canceller between them.

meshdesk talks to PulseAudio — or PipeWire through its PulseAudio protocol
(``pipewire-pulse``) — with the tools of Debian's ``pulseaudio-utils``: ``pacat``
plays raw PCM from a pipe, ``parec`` records into one, ``pactl`` asks the server
what it offers. PyAV's wheels carry no ``pulse`` device and their own ALSA library
reads its configuration from a build folder, so FFmpeg's device muxers cannot reach
a real desk's sound server; a pipe to ``pacat`` can, whichever server runs. Without
a server, ALSA's ``aplay``/``arecord`` (``alsa-utils``) drive the card directly.

Everything is signed 16-bit, 48 kHz, mono: what the call's Opus decoder gives,
downmixed. Media is never written anywhere but the sound server.

**Echo.** A laptop's speaker feeds its own microphone, and aiortc has no echo
canceller. PulseAudio's ``module-echo-cancel`` (WebRTC's canceller; PipeWire has
the same module) makes a virtual sink and source: what is played into the sink is
the reference the canceller removes from what the source records. With ``[calls]
echo_cancel = "auto"`` (the default) a call with a microphone uses an echo-cancelling
pair the server already has, else loads one over the default sink and source (and
unloads it when the node stops); ``"on"`` refuses a microphone without one; ``"off"``
never uses it. The console shows which, and recommends a headset without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from av.frame import Frame

from meshdesk.errors import CallError

__all__ = [
    "CHANNELS",
    "EC_SINK",
    "EC_SOURCE",
    "FRAME_SAMPLES",
    "PACTL_TIMEOUT",
    "RATE",
    "EchoCancel",
    "MicTrack",
    "Route",
    "SoundDesk",
    "Which",
    "alsa_playback_pcms",
    "capture_argv",
    "defaults",
    "find_echo_cancel",
    "pactl",
    "pulse_server",
]

log = logging.getLogger(__name__)

RATE = 48000
CHANNELS = 1
#: Samples per captured frame (20 ms, what Opus packs).
FRAME_SAMPLES = 960
#: Names of the echo-cancelling pair meshdesk loads itself.
EC_SINK = "meshdesk_ec_sink"
EC_SOURCE = "meshdesk_ec_source"
#: ``pactl`` gets this long to answer.
PACTL_TIMEOUT = 5.0

Which = Callable[[str], str | None]


def pulse_server(env: Mapping[str, str], uid: int, root: Path = Path("/")) -> str | None:
    """The PulseAudio (or pipewire-pulse) server a client here would reach, or None."""
    server = env.get("PULSE_SERVER", "")
    if server:
        path = server.removeprefix("unix:")
        if server.startswith("unix:") or server.startswith("/"):
            return server if root.joinpath(path.lstrip("/")).exists() else None
        return server  # a network server: nothing local to check
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    socket = root.joinpath(runtime.lstrip("/"), "pulse", "native")
    return str(socket) if socket.exists() else None


def alsa_playback_pcms(root: Path = Path("/")) -> list[str]:
    """The kernel's ALSA playback devices (``pcmC0D0p`` …)."""
    return _alsa_pcms(root, "p")


def _alsa_pcms(root: Path, suffix: str) -> list[str]:
    snd = root / "dev" / "snd"
    try:
        names = sorted(p.name for p in snd.iterdir())
    except OSError:
        return []
    return [n for n in names if n.startswith("pcmC") and n.endswith(suffix)]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call's sound goes and comes from on this machine.

    ``sink``/``source`` are PulseAudio names (None: the server's defaults);
    ``kind`` is ``pulse``, ``alsa`` or None (no sound device at all).
    """

    kind: str | None
    sink: str | None
    source: str | None
    echo_cancel: bool
    #: One line for the log and the console: which canceller, or why none.
    note: str

    def to_json(self) -> dict[str, object]:
        return {"echo_cancel": self.echo_cancel, "note": self.note}


@dataclass(frozen=True, slots=True)
class EchoCancel:
    """An echo-cancelling sink/source pair the server offers (``module`` if we loaded it)."""

    sink: str
    source: str
    module: int | None = None


def _env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C"}


async def pactl(*args: str, which: Which = shutil.which) -> str:
    """Run ``pactl ARGS``; its output.

    Raises:
        CallError: no ``pactl``, the server refused, or it did not answer in time.
    """
    tool = which("pactl")
    if tool is None:
        raise CallError("pactl is missing (Debian package pulseaudio-utils)")
    try:
        proc = await asyncio.create_subprocess_exec(
            tool,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
    except OSError as exc:
        raise CallError(f"cannot run pactl: {exc}") from exc
    try:
        async with asyncio.timeout(PACTL_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CallError(f"pactl {args[0]}: no answer from the sound server") from None
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()
        raise CallError(f"pactl {args[0]}: {why[-1] if why else f'exit {proc.returncode}'}")
    return out.decode(errors="replace")


def _names(listing: str) -> list[str]:
    """Names from ``pactl list short sinks|sources`` (index, name, driver, …)."""
    return [cols[1] for line in listing.splitlines() if len(cols := line.split("\t")) > 1]


def find_echo_cancel(sinks: str, sources: str) -> EchoCancel | None:
    """An echo-cancelling pair among the server's sinks and sources, if any.

    PulseAudio names them ``MASTER.echo-cancel`` by default (or as configured),
    PipeWire ``echo-cancel-sink``/``echo-cancel-source``; ours are :data:`EC_SINK`
    and :data:`EC_SOURCE`.
    """

    def cancelling(name: str) -> bool:
        return "echo-cancel" in name or "echo_cancel" in name or name in (EC_SINK, EC_SOURCE)

    sink = next((n for n in _names(sinks) if cancelling(n) and not n.endswith(".monitor")), None)
    source = next(
        (n for n in _names(sources) if cancelling(n) and not n.endswith(".monitor")), None
    )
    if sink is None or source is None:
        return None
    return EchoCancel(sink, source)


def defaults(info: str) -> tuple[str | None, str | None]:
    """(default sink, default source) from ``pactl info`` (run with ``LC_ALL=C``)."""
    found: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Default Sink", "Default Source"):
            found[key.strip()] = value.strip()
    return found.get("Default Sink"), found.get("Default Source")


class SoundDesk:
    """This node's sound: the route calls with a microphone use, set up once.

    Args:
        echo_cancel: ``[calls] echo_cancel`` (auto, on, off).
        env, uid, root, which: where to look (tests pass their own).
    """

    def __init__(
        self,
        echo_cancel: str,
        *,
        env: Mapping[str, str] | None = None,
        uid: int | None = None,
        root: Path = Path("/"),
        which: Which = shutil.which,
    ) -> None:
        self._setting = echo_cancel
        self._env = os.environ if env is None else env
        self._uid = os.getuid() if uid is None else uid
        self._root = root
        self._which = which
        self._route: Route | None = None
        self._loaded: int | None = None
        self._lock = asyncio.Lock()

    @property
    def server(self) -> str | None:
        return pulse_server(self._env, self._uid, self._root)

    @property
    def current(self) -> Route | None:
        """The route once :meth:`route` found it (None before the first device call)."""
        return self._route

    async def route(self) -> Route:
        """Find (once) where a microphone call's sound goes; loads the canceller if due.

        Raises:
            CallError: ``echo_cancel = "on"`` and the server offers no canceller.
        """
        async with self._lock:
            if self._route is None:
                self._route = await self._find()
                log.info("call sound: %s", self._route.note)
            if self._setting == "on" and not self._route.echo_cancel:
                raise CallError(
                    f"[calls] echo_cancel is on, but {self._route.note}; "
                    'use a headset and set echo_cancel = "auto" or "off"'
                )
            return self._route

    async def _find(self) -> Route:
        if self.server is None:
            if _alsa_pcms(self._root, "c") and self._which("arecord"):
                why = "no PulseAudio/PipeWire server: ALSA without echo cancelling"
                return Route("alsa", None, None, False, why)
            return Route(None, None, None, False, "no sound server and no sound card")
        if self._which("parec") is None or self._which("pacat") is None:
            return Route(None, None, None, False,
                         "parec/pacat are missing (Debian package pulseaudio-utils)")  # fmt: skip
        if self._setting == "off":
            return Route("pulse", None, None, False, "echo cancelling is off ([calls] echo_cancel)")
        try:
            pair = find_echo_cancel(
                await pactl("list", "short", "sinks", which=self._which),
                await pactl("list", "short", "sources", which=self._which),
            )
            if pair is None:
                pair = await self._load()
        except CallError as exc:
            why = f"the sound server offers no echo cancelling ({exc})"
            return Route("pulse", None, None, False, why)
        how = "loaded by meshdesk" if pair.module is not None else "the server's own"
        return Route("pulse", pair.sink, pair.source, True,
                     f"echo cancelling active ({pair.sink} / {pair.source}, {how})")  # fmt: skip

    async def _load(self) -> EchoCancel:
        sink, source = defaults(await pactl("info", which=self._which))
        args = [f"sink_name={EC_SINK}", f"source_name={EC_SOURCE}", "aec_method=webrtc"]
        if sink:
            args.append(f"sink_master={sink}")
        if source:
            args.append(f"source_master={source}")
        out = await pactl("load-module", "module-echo-cancel", *args, which=self._which)
        try:
            module = int(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise CallError(f"pactl load-module: unexpected answer {out[:80]!r}") from exc
        self._loaded = module
        return EchoCancel(EC_SINK, EC_SOURCE, module)

    async def aclose(self) -> None:
        """Unload the canceller meshdesk loaded (the server's own stays); idempotent."""
        module, self._loaded = self._loaded, None
        if module is not None:
            try:
                await pactl("unload-module", str(module), which=self._which)
            except CallError as exc:
                log.warning("could not unload the echo canceller (module %d): %s", module, exc)


def capture_argv(route: Route, which: Which = shutil.which) -> list[str]:
    """The command that records the microphone of ``route`` as raw PCM on stdout.

    Raises:
        CallError: no tool or no device for it.
    """
    if route.kind == "pulse":
        tool = which("parec")
        if tool is None:
            raise CallError("no microphone: parec is missing (Debian package pulseaudio-utils)")
        argv = [tool, "--raw", "--format=s16le", f"--rate={RATE}", f"--channels={CHANNELS}",
                "--latency-msec=20", "--client-name=meshdesk",
                "--stream-name=call microphone"]  # fmt: skip
        return argv + ([f"--device={route.source}"] if route.source else [])
    if route.kind == "alsa":
        tool = which("arecord")
        if tool is None:
            raise CallError("no microphone: arecord is missing (Debian package alsa-utils)")
        return [tool, "-q", "-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c", str(CHANNELS),
                "-D", "default"]  # fmt: skip
    raise CallError(f"no microphone: {route.note} (use --media synthetic)")


class MicTrack(MediaStreamTrack):
    """The microphone: 20 ms frames of raw PCM read from ``argv`` (``parec``/``arecord``).

    The recorder starts at the first frame asked for and stops with the track.
    If it fails or exits, the track ends (the leg then sends no audio) and the
    reason is logged once.
    """

    kind = "audio"

    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self._argv = argv
        self._proc: asyncio.subprocess.Process | None = None
        self._samples = 0
        self._start = asyncio.Lock()
        self._reaper: asyncio.Task[int] | None = None

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._start:
            if self._proc is None:
                try:
                    self._proc = await asyncio.create_subprocess_exec(
                        *self._argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                    )
                except OSError as exc:
                    log.warning("microphone: cannot run %s: %s", self._argv[0], exc)
                    self.stop()
                    raise MediaStreamError from exc
            return self._proc

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        proc = await self._started()
        assert proc.stdout is not None
        size = FRAME_SAMPLES * 2 * CHANNELS
        try:
            chunk = await proc.stdout.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if self.readyState == "live":
                err = b""
                if proc.stderr is not None:
                    with contextlib.suppress(Exception):
                        err = await asyncio.wait_for(proc.stderr.read(2000), 1.0)
                log.warning("microphone stopped: %s exited: %s", Path(self._argv[0]).name,
                            err.decode(errors="replace").strip() or "no output")  # fmt: skip
                self.stop()
            await proc.wait()
            raise MediaStreamError from exc
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk)
        frame.pts = self._samples
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        self._samples += FRAME_SAMPLES
        return frame

    def stop(self) -> None:
        super().stop()
        proc = self._proc
        if proc is not None and proc.returncode is None and self._reaper is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # Reaped in the background: stop() is synchronous, like every track's.
            self._reaper = asyncio.get_running_loop().create_task(proc.wait())
