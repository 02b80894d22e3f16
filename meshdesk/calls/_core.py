"""The machinery under :class:`~meshdesk.calls.manager.CallManager`: legs, ending, stats.

Split from the manager to keep modules small: this base class owns the calls, their
legs and tasks, ends legs and calls, records calls on cases and runs the stats tick;
the manager adds the control-socket operations and the signalling frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Protocol, Self

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from meshdesk._lifecycle import AsyncResource, spawn_owned
from meshdesk.calls.ice import local_address_towards
from meshdesk.calls.link import CallLink
from meshdesk.calls.media import LocalMedia, open_media, prepare_synthetic
from meshdesk.calls.model import LIVE, Call, CallState, Participant, PartState
from meshdesk.calls.peer import Leg, LegStats
from meshdesk.calls.playback import Playback, choose_output
from meshdesk.calls.policy import QualityPolicy
from meshdesk.calls.relay import Forwarder
from meshdesk.calls.sound import SoundDesk, capture_argv
from meshdesk.calls.stats import update_stats
from meshdesk.config import CallSettings
from meshdesk.errors import CallError, ChannelClosed, MeshdeskError
from meshdesk.identity import NodeInfo
from meshdesk.net.peers import PeerRecord
from meshdesk.wire import (
    CallAnswer,
    CallDecline,
    CallDegrade,
    CallLeave,
    CallMember,
    CallOffer,
    CallRoster,
    Frame,
)

__all__ = [
    "GUEST_GRACE",
    "GUEST_PREFIX",
    "KEEP_ENDED",
    "MEDIA_TIMEOUT",
    "MESH_MAX",
    "CallCore",
    "CallLog",
    "Listener",
    "is_guest",
]


log = logging.getLogger("meshdesk.calls")

#: Most nodes in one call (a full mesh of peer connections).
MESH_MAX = 4
#: A connected leg that receives no media for this long is dropped.
MEDIA_TIMEOUT = 4.0
#: An unanswered incoming call is declined after this long.
RING_TIMEOUT = 60.0
#: Ended calls kept for ``calls``.
KEEP_ENDED = 8
#: A citizen's phone whose connection dropped may offer again within this long.
GUEST_GRACE = 30.0
#: How a call names a citizen who joined from a browser (see meshdesk.web).
GUEST_PREFIX = "citizen:"


def is_guest(member: str) -> bool:
    """Is ``member`` a citizen's browser (reachable only through its desk), not a node?"""
    return member.startswith(GUEST_PREFIX)


class CallLog(Protocol):
    """Where calls about a case are recorded (the node's CaseBook)."""

    async def resolve_id(self, text: str) -> str: ...

    async def log_call(
        self,
        case_id: str,
        *,
        op: str,
        call_id: str,
        participants: list[str],
        started_ms: int,
        ended_ms: int,
    ) -> object: ...


Listener = Callable[[dict[str, object]], None]


class CallCore(AsyncResource):
    """Calls, legs and tasks of one node; see :class:`~meshdesk.calls.manager.CallManager`."""

    def __init__(
        self,
        me: NodeInfo,
        settings: CallSettings,
        *,
        link_of: Callable[[str], CallLink | None],
        peers: Callable[[], list[PeerRecord]],
        case_log: CallLog | None = None,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._me = me
        self._my_id = str(me.node_id)
        self._settings = settings
        self._link_of = link_of
        self._peers = peers
        self._case_log = case_log
        self._wall_ms = wall_ms
        self._clock = clock
        self._calls: dict[str, Call] = {}
        self._relay = MediaRelay()
        self._forwarders: dict[str, Forwarder] = {}
        #: Citizens' browsers (guests): their address, where media goes out.
        self._guest_remote: dict[str, str] = {}
        #: Their 4-digit codes (a successor's invitation keeps the same one).
        self._guest_codes: dict[str, str] = {}
        self._playback = Playback(choose_output(settings.playback))
        self._sound = SoundDesk(settings.echo_cancel)
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        log.info("%s", self._playback.output.describe())
        prepare_synthetic()
        self._spawn(self._tick_loop(), "call stats")
        return self

    async def aclose(self) -> None:
        """Hang up every call, close every leg, stop every task; idempotent."""
        if self._closed:
            return
        for call in list(self._calls.values()):
            if not call.ended:
                await self._leave(call, "node shutting down")
        self._closed = True
        await self._playback.close()
        await self._sound.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        spawn_owned(self._tasks, coro, name, log)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(call_object)`` on every change and with stats once a second."""
        self._listeners.append(listener)

    def _publish(self, call: Call) -> None:
        data = call.to_json()
        for listener in self._listeners:
            listener(data)

    def _participant(self, node_id: str, name: str | None = None) -> Participant:
        record = next((r for r in self._peers() if r.node_id == node_id), None)
        policy = QualityPolicy(
            max_loss_pct=self._settings.fallback_loss_pct,
            max_rtt_ms=self._settings.fallback_rtt_ms,
        )
        if is_guest(node_id):
            return Participant(node_id, name or "citizen", "", policy=policy)
        if record is None:
            return Participant(node_id, node_id[:7], "", policy=policy)
        return Participant(node_id, record.name, record.site, policy=policy)

    def _roster(self, call: Call) -> CallRoster:
        members = [CallMember(self._my_id, str(call.me.state))] + [
            CallMember(p.node_id, str(p.state)) for p in call.live()
        ]
        return CallRoster(call.call_id, call.host, tuple(members))

    # -- legs ------------------------------------------------------------------------

    def _leg(self, call: Call, part: Participant) -> Leg:
        """A new leg to ``part`` (replacing and closing any older one)."""
        assert call.media is not None
        forwarder = self._forwarders.get(call.call_id)
        slots = forwarder.slots_for(part.node_id) if forwarder is not None else []
        link = self._link_of(part.node_id)
        remote = link.remote if link is not None else self._guest_remote.get(part.node_id)
        local = local_address_towards(remote) if remote is not None else None
        leg = Leg(
            part.node_id,
            audio=call.media.audio,
            video=call.media.video,
            relay=self._relay,
            on_change=lambda leg: self._leg_changed(call, part, leg),
            on_audio=lambda track: self._spawn(self._play(leg, track, part.name), "play audio"),
            slots=slots,
            addresses=[local] if local is not None else None,
            clock=self._clock,
        )
        old, part.leg = part.leg, leg
        if old is not None:
            self._spawn(self._retire(old), f"retire leg {part.name}")
        return leg

    async def _open_media(self, call: Call, spec: str) -> LocalMedia:
        """Open ``spec`` for ``call``: a microphone on the sound route (its echo
        canceller), devices and files probed in a worker thread.

        Raises:
            CallError: no microphone, ``echo_cancel = "on"`` without a canceller, an
                unusable file. A missing or busy camera only makes it audio only.
        """
        if spec == "synthetic":
            return open_media(spec, self._me.name, audio_only=call.audio_only,
                              tone_hz=self._settings.tone_hz)  # fmt: skip
        microphone = None
        if spec == "device":
            route = await self._sound.route()
            self._playback.route_to(route.sink)
            microphone = capture_argv(route)
            call.sound = route.to_json()
        media = await asyncio.to_thread(
            open_media, spec, self._me.name, audio_only=call.audio_only,
            microphone=microphone, camera=self._settings.camera,
        )  # fmt: skip
        call.notice = media.note
        return media

    async def _play(self, leg: Leg, track: MediaStreamTrack, name: str) -> None:
        await self._playback.play(leg, track, name)
        if leg.closed:  # retired while the device opened: do not leave it playing
            await self._playback.stop(leg)

    async def _retire(self, leg: Leg) -> None:
        await self._playback.stop(leg)
        await leg.close()

    async def _offer(self, call: Call, part: Participant, *, join: bool) -> None:
        leg = self._leg(call, part)
        sdp = await leg.offer()
        members = (*tuple(p.node_id for p in call.live() if p is not part), self._my_id)
        frame = CallOffer(
            call.call_id, call.case_id, call.audio_only, call.host, members, join, sdp
        )
        if not await self._send(part.node_id, frame):
            raise CallError(f"{part.name} is not linked; cannot call it")
        part.state = PartState.INVITED if not join else PartState.CONNECTING

    async def _accept(self, call: Call) -> None:
        assert call.inviter is not None
        assert call.pending_offer is not None
        inviter = call.participants[call.inviter]
        try:
            call.media = await self._open_media(call, call.media_spec)
            call.dialled_at = self._clock()
            answer = await self._leg(call, inviter).answer(call.pending_offer)
        except CallError as exc:
            await self._send(call.inviter, CallDecline(call.call_id, str(exc)[:256]))
            await self._end(call, str(exc))
            raise
        call.pending_offer = None
        call.state = CallState.CONNECTING
        inviter.state = PartState.CONNECTING
        await self._send(call.inviter, CallAnswer(call.call_id, answer))
        log.info("accepted call %s from %s", call.call_id, inviter.name)
        for part in list(call.participants.values()):
            if call.relayed:
                break  # a star: our only leg is to the host
            if part is not inviter and part.state is PartState.INVITED:
                try:
                    await self._offer(call, part, join=True)
                except CallError as exc:
                    self._drop(call, part, PartState.DROPPED, str(exc))
        self._publish(call)

    def _leg_changed(self, call: Call, part: Participant, leg: Leg) -> None:
        if call.ended or part.leg is not leg:
            return
        if leg.state == "connected" and part.state is not PartState.CONNECTED:
            part.state = PartState.CONNECTED
            if part.joined_ms is None:
                part.joined_ms = self._wall_ms()
            call.me.state = PartState.CONNECTED
            if call.joined_ms is None:
                call.joined_ms = part.joined_ms
            call.state = CallState.ACTIVE
            log.info("call %s: media connected with %s", call.call_id, part.name)
            if call.call_id in self._forwarders:
                self._rewire(call)
                self._spawn(self._send_roster(call), "call roster")
        elif leg.state == "failed":
            self._drop(call, part, PartState.DROPPED, "media connection failed (ICE or DTLS)")
            return
        if leg.state == "connected":
            self._check_meshed(call)
        mark = call.handover_mark
        if mark is not None and part.node_id == call.host and leg.first_audio_at is not None:
            call.handover_mark = None
            call.stats["handover_gap_ms"] = round((leg.first_audio_at - mark) * 1000, 1)
            log.info("call %s: first audio from the new host %s %s ms after the old host's last",
                     call.call_id, part.name, call.stats["handover_gap_ms"])  # fmt: skip
        first = leg.first_audio_at if call.audio_only else leg.first_video_at
        if call.stats["setup_ms"] is None and first is not None:
            call.stats["setup_ms"] = round((first - call.dialled_at) * 1000, 1)
            log.info("call %s: first media from %s after %s ms", call.call_id, part.name,
                     call.stats["setup_ms"])  # fmt: skip
        self._publish(call)

    def _drop(self, call: Call, part: Participant, state: PartState, reason: str) -> None:
        """End one leg; the call ends too when no other participant is live.

        In a relayed call the host is the hub: losing it ends the call here.
        """
        if part.state not in LIVE:
            return
        if is_guest(part.node_id) and state is PartState.DROPPED and part.leg is not None:
            # A phone's connection comes and goes (Wi-Fi, a screen lock): its page
            # offers again by itself, so the call waits for it a while.
            lost, part.leg = part.leg, None
            part.state = PartState.INVITED
            log.warning("call %s: %s lost (%s); waiting %g s for it to come back",
                        call.call_id, part.name, reason, GUEST_GRACE)  # fmt: skip
            self._spawn(self._close_leg(call, part, lost), f"close leg {part.name}")
            self._spawn(self._guest_grace(call, part, reason), f"grace {part.name}")
            self._rewire(call)
            self._publish(call)
            return
        part.state = state
        log.warning("call %s: %s %s: %s", call.call_id, part.name, state, reason)
        leg, part.leg = part.leg, None
        if leg is not None:
            self._spawn(self._close_leg(call, part, leg), f"close leg {part.name}")
        forwarder = self._forwarders.get(call.call_id)
        if forwarder is not None:
            forwarder.forget(part.node_id)
            self._rewire(call)
        if part.node_id == call.host and call.host != self._my_id:
            if leg is not None:
                call.handover_mark = leg.last_media_at
            self._spawn(self._host_lost(call, part, f"{state} ({reason})"), "host lost")
            self._publish(call)
        elif not call.live():
            self._spawn(self._end(call, f"{part.name} {state}: {reason}"), "end call")
        else:
            if forwarder is not None:
                self._maybe_mesh(call)
                self._spawn(self._send_roster(call), "call roster")
            self._publish(call)

    # -- hooks of the hosting layer (meshdesk.calls._handover) ---------------------------

    async def _host_lost(self, call: Call, host: Participant, why: str) -> None:
        """The host of ``call`` left or dropped (here: the call ends)."""
        await self._end(call, f"the host {host.name} {why}")

    def _maybe_mesh(self, call: Call) -> None:
        """A member left a relayed call this node hosts (here: it stays a star)."""

    def _check_meshed(self, call: Call) -> None:
        """A leg connected (here: nothing more)."""

    async def _hosting_tick(self, call: Call, now: float) -> None:
        """Once a second per call (here: nothing)."""

    async def _guest_grace(self, call: Call, part: Participant, reason: str) -> None:
        await asyncio.sleep(GUEST_GRACE)
        if not call.ended and part.leg is None and part.state is PartState.INVITED:
            self._drop(call, part, PartState.LEFT, f"did not come back ({reason})")

    def _rewire(self, call: Call) -> None:
        """Host of a relayed call: point every forwarding slot at the right source."""
        forwarder = self._forwarders.get(call.call_id)
        if forwarder is None:
            return
        joined = [p for p in call.participants.values()
                  if p.state is PartState.CONNECTED and p.leg is not None]  # fmt: skip
        # Oldest first, citizens last: the video slot carries the newest joiner, and
        # the citizen is who a consultation is about.
        joined.sort(key=lambda p: (is_guest(p.node_id), p.joined_ms or 0))
        forwarder.rewire(
            {p.node_id: p.leg.remote for p in joined if p.leg is not None},
            [p.node_id for p in joined],
        )
        self._note_forwarding(call)

    def _note_forwarding(self, call: Call) -> None:
        forwarder = self._forwarders.get(call.call_id)
        if forwarder is not None:
            call.forwarding = {
                p.node_id: forwarder.sources(p.node_id) for p in call.participants.values()
                if forwarder.sources(p.node_id)
            }  # fmt: skip

    async def _send_roster(self, call: Call) -> None:
        roster = self._roster(call)
        for part in call.live():
            await self._send(part.node_id, roster)

    async def _close_leg(self, call: Call, part: Participant, leg: Leg) -> None:
        reading = await leg.stats()
        update_stats(call, {part.node_id: reading}, 1.0)
        await self._retire(leg)

    async def _leave(self, call: Call, reason: str) -> None:
        for part in call.live():
            await self._send(part.node_id, CallLeave(call.call_id, reason))
        await self._end(call, reason)

    async def _end(self, call: Call, reason: str) -> None:
        if call.ended:
            return
        call.state = CallState.ENDED
        call.ended_ms = self._wall_ms()
        call.reason = reason
        call.me.state = PartState.LEFT
        for part in call.participants.values():
            leg, part.leg = part.leg, None
            if part.state in LIVE:
                part.state = PartState.LEFT
            if leg is not None:
                with contextlib.suppress(CallError):
                    update_stats(call, {part.node_id: await leg.stats()}, 1.0)
                await self._retire(leg)
        forwarder = self._forwarders.pop(call.call_id, None)
        if forwarder is not None:
            forwarder.close()
        if call.media is not None:
            call.media.close()
            call.media = None
        log.info("call %s ended: %s", call.call_id, reason)
        self._publish(call)
        self._forget_old()
        await self._record(call)

    def _forget_old(self) -> None:
        ended = [c for c in self._calls.values() if c.ended]
        for call in ended[:-KEEP_ENDED]:
            del self._calls[call.call_id]

    async def _record(self, call: Call) -> None:
        """Log this node's part in the call on its case: who, when, how long."""
        if call.case_id is None or self._case_log is None or call.joined_ms is None:
            return
        assert call.ended_ms is not None
        joined = [p.node_id for p in call.participants.values() if p.joined_ms is not None]
        try:
            await self._case_log.log_call(
                call.case_id,
                op=f"call:{self._me.name}"[:64],
                call_id=call.call_id,
                participants=[self._my_id, *joined],
                started_ms=call.joined_ms,
                ended_ms=max(call.ended_ms, call.joined_ms),
            )
        except MeshdeskError as exc:
            log.warning("call %s: could not log it on case %s: %s", call.call_id, call.case_id, exc)

    async def _send(self, node_id: str, frame: Frame) -> bool:
        link = self._link_of(node_id)
        if link is None:
            return False
        try:
            await link.send(frame)
        except ChannelClosed:
            return False
        return True

    # -- quality ---------------------------------------------------------------------

    def _apply_sending(self, call: Call) -> None:
        for part in call.participants.values():
            if part.leg is not None:
                part.leg.send_audio(not call.me.muted_audio)
                part.leg.send_video(not (call.me.muted_video or call.degraded))

    async def _degrade(self, call: Call, reason: str, *, tell: bool) -> None:
        if call.degraded or call.audio_only:
            return
        call.degraded = True
        self._apply_sending(call)
        forwarder = self._forwarders.get(call.call_id)
        if forwarder is not None:  # a host on audio only forwards no video either
            forwarder.stop_video()
            self._note_forwarding(call)
        log.warning("call %s falls back to audio only: %s", call.call_id, reason)
        if tell:
            for part in call.live():
                await self._send(part.node_id, CallDegrade(call.call_id, reason[:256]))
        self._publish(call)

    async def _tick_loop(self) -> None:
        last = self._clock()
        while True:
            await asyncio.sleep(1.0)
            now = self._clock()
            for call in list(self._calls.values()):
                if not call.ended and call.state is not CallState.RINGING:
                    await self._tick(call, now - last, now)
            last = now

    async def _tick(self, call: Call, dt: float, now: float) -> None:
        readings: dict[str, LegStats] = {}
        sources = videos = 0
        for part in list(call.participants.values()):
            leg = part.leg
            if leg is None:
                continue
            sources += leg.audio_sources()
            videos += leg.video_sources()
            silent = leg.last_media_at is not None and now - leg.last_media_at > MEDIA_TIMEOUT
            no_video = part.muted_video or call.audio_only or call.degraded
            if part.muted_audio and no_video:
                silent = False  # muted on purpose: it sends nothing, yet it is still there
            if part.state is PartState.CONNECTED and silent:
                self._drop(call, part, PartState.DROPPED, f"no media for {MEDIA_TIMEOUT:g} s")
                continue
            readings[part.node_id] = await leg.stats()
        samples = update_stats(call, readings, dt)
        call.stats["audio_sources"] = sources
        call.stats["video_sources"] = videos
        self._note_forwarding(call)
        for node_id, sample in samples.items():
            reason = call.participants[node_id].policy.observe(sample)
            if reason is not None:
                await self._degrade(call, reason, tell=True)
        await self._hosting_tick(call, now)
        if not call.ended:
            self._publish(call)
