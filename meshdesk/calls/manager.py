"""The node's calls: signalling over links, one peer connection per pair, the call log.

Every other participant of a call gets one :class:`~meshdesk.calls.peer.Leg` (a full
mesh, at most :data:`MESH_MAX` nodes). The caller offers to the callee
(``CallOffer``, ``join`` false); once the callee accepts it answers and offers to
every other member itself (``join`` true), which members accept for a call they
are in. The sender of a frame is always the link's authenticated peer: a frame
never names its sender, so nobody can speak for another node.

A leg ends when its peer leaves (``CallLeave``), its link goes down, its media
stops for :data:`MEDIA_TIMEOUT` seconds, or DTLS/ICE fails; the call goes on
while any other participant is live.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Protocol, Self

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from meshdesk._lifecycle import AsyncResource
from meshdesk.calls.ice import local_address_towards
from meshdesk.calls.media import open_media, parse_media, prepare_synthetic
from meshdesk.calls.model import LIVE, Call, CallState, Participant, PartState
from meshdesk.calls.peer import Leg, LegStats
from meshdesk.calls.playback import Playback, choose_output
from meshdesk.calls.policy import QualityPolicy
from meshdesk.calls.relay import GROUP_MAX, Forwarder
from meshdesk.calls.stats import update_stats
from meshdesk.cases.ids import is_valid_id, new_id
from meshdesk.config import CallSettings
from meshdesk.errors import CallError, ChannelClosed, MeshdeskError
from meshdesk.identity import NodeInfo
from meshdesk.net.link import Link
from meshdesk.net.mesh import PeerEvent
from meshdesk.net.peers import PeerRecord
from meshdesk.wire import (
    CallAnswer,
    CallDecline,
    CallDegrade,
    CallLeave,
    CallMember,
    CallMute,
    CallOffer,
    CallRoster,
    Frame,
)

__all__ = ["MEDIA_TIMEOUT", "MESH_MAX", "CallLog", "CallManager", "is_call_frame"]

log = logging.getLogger("meshdesk.calls")

#: Most nodes in one call (a full mesh of peer connections).
MESH_MAX = 4
#: A connected leg that receives no media for this long is dropped.
MEDIA_TIMEOUT = 4.0
#: An unanswered incoming call is declined after this long.
RING_TIMEOUT = 60.0
#: Ended calls kept for ``calls``.
KEEP_ENDED = 8

_CALL_FRAMES = (CallOffer, CallAnswer, CallDecline, CallLeave, CallRoster, CallMute, CallDegrade)


def is_call_frame(frame: Frame) -> bool:
    return isinstance(frame, _CALL_FRAMES)


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


class CallManager(AsyncResource):
    """Places, answers and keeps this node's calls; owned by the Node."""

    def __init__(
        self,
        me: NodeInfo,
        settings: CallSettings,
        *,
        link_of: Callable[[str], Link | None],
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
        self._playback = Playback(choose_output(settings.playback))
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
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(self._guard(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(coro: Awaitable[None], name: str) -> None:
        try:
            await coro
        except MeshdeskError as exc:
            log.warning("%s: %s", name, exc)
        except Exception:
            log.exception("%s failed", name)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(call_object)`` on every change and with stats once a second."""
        self._listeners.append(listener)

    def _publish(self, call: Call) -> None:
        data = call.to_json()
        for listener in self._listeners:
            listener(data)

    # -- operations (control socket) -------------------------------------------------

    def calls(self) -> list[dict[str, object]]:
        return [call.to_json() for call in self._calls.values()]

    def _call(self, call_id: object) -> Call:
        call = self._calls.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            raise CallError(f"no call {call_id!r}")
        return call

    def _resolve(self, text: str) -> PeerRecord:
        records = self._peers()
        exact = [r for r in records if text in (r.node_id, r.name)]
        found = exact or (
            [r for r in records if r.node_id.startswith(text)] if len(text) >= 4 else []
        )
        if not found:
            raise CallError(f"no known node {text!r}")
        if len(found) > 1:
            raise CallError(f"{text!r} names {len(found)} nodes; use the node id")
        return found[0]

    def _participant(self, node_id: str) -> Participant:
        record = next((r for r in self._peers() if r.node_id == node_id), None)
        policy = QualityPolicy(
            max_loss_pct=self._settings.fallback_loss_pct,
            max_rtt_ms=self._settings.fallback_rtt_ms,
        )
        if record is None:
            return Participant(node_id, node_id[:7], "", policy=policy)
        return Participant(node_id, record.name, record.site, policy=policy)

    async def start(
        self, peer: str, *, case_id: str | None, audio_only: bool, media: str
    ) -> dict[str, object]:
        """Call ``peer`` (name or id); returns the call object (state ringing)."""
        record = self._resolve(peer)
        if record.node_id == self._my_id:
            raise CallError("a node cannot call itself")
        if self._link_of(record.node_id) is None:
            raise CallError(f"{record.name} ({record.node_id}) is not linked; cannot call it")
        if any(not c.ended for c in self._calls.values()):
            raise CallError("this node is already in a call; hang it up first")
        parse_media(media)
        if case_id is not None and self._case_log is not None:
            case_id = await self._case_log.resolve_id(case_id)
        call = self._new_call(
            new_id(self._wall_ms()), case_id, "outgoing", audio_only, self._my_id, media
        )
        call.media = open_media(media, self._me.name, audio_only=audio_only)
        self._calls[call.call_id] = call
        part = call.participants[record.node_id] = self._participant(record.node_id)
        log.info("calling %s (%s), call %s", part.name, part.node_id, call.call_id)
        try:
            await self._offer(call, part, join=False)
        except CallError as exc:
            await self._end(call, str(exc))
            raise
        self._publish(call)
        return call.to_json()

    def _new_call(
        self,
        call_id: str,
        case_id: str | None,
        direction: str,
        audio_only: bool,
        host: str,
        media: str,
    ) -> Call:
        me = Participant(self._my_id, self._me.name, self._me.site, PartState.CONNECTING)
        return Call(
            call_id=call_id,
            case_id=case_id,
            direction=direction,
            audio_only=audio_only,
            host=host,
            me=me,
            media_spec=media,
            started_ms=self._wall_ms(),
            dialled_at=self._clock(),
        )

    async def answer(self, call_id: object, accept: bool) -> dict[str, object]:
        call = self._call(call_id)
        if call.direction != "incoming" or call.state is not CallState.RINGING:
            raise CallError(f"call {call.call_id} is not ringing here")
        if accept:
            await self._accept(call)
        else:
            assert call.inviter is not None
            await self._send(call.inviter, CallDecline(call.call_id, "declined"))
            await self._end(call, "declined")
        return call.to_json()

    async def invite(self, call_id: object, peer: str) -> dict[str, object]:
        call = self._call(call_id)
        if call.state is not CallState.ACTIVE:
            raise CallError(
                f"call {call.call_id} is {call.state}; only an active call takes guests"
            )
        record = self._resolve(peer)
        existing = call.participants.get(record.node_id)
        if record.node_id == self._my_id or (existing is not None and existing.state in LIVE):
            raise CallError(f"{record.name} is in the call already")
        size = len(call.live()) + 2
        if size > GROUP_MAX:
            raise CallError(f"a call holds at most {GROUP_MAX} nodes")
        if (size > MESH_MAX or call.relayed) and call.host != self._my_id:
            host = self._participant(call.host).name
            raise CallError(
                f"a call of over {MESH_MAX} nodes is relayed by its host {host}; invite from there"
            )
        if self._link_of(record.node_id) is None:
            raise CallError(f"{record.name} ({record.node_id}) is not linked; cannot invite it")
        part = call.participants[record.node_id] = self._participant(record.node_id)
        if size > MESH_MAX and not call.relayed:
            await self._switch_to_relay(call, part)
        roster = self._roster(call)
        for other in call.live():
            if other is not part:
                await self._send(other.node_id, roster)
        await self._offer(call, part, join=False)
        self._publish(call)
        return call.to_json()

    async def hangup(self, call_id: object) -> dict[str, object]:
        call = self._call(call_id)
        if not call.ended:
            await self._leave(call, "hung up")
        return call.to_json()

    async def mute(
        self, call_id: object, audio: bool | None, video: bool | None
    ) -> dict[str, object]:
        call = self._call(call_id)
        if call.ended:
            raise CallError(f"call {call.call_id} has ended")
        if audio is not None:
            call.me.muted_audio = audio
        if video is not None:
            call.me.muted_video = video
        self._apply_sending(call)
        frame = CallMute(call.call_id, call.me.muted_audio, call.me.muted_video)
        for part in call.live():
            await self._send(part.node_id, frame)
        self._publish(call)
        return call.to_json()

    def preview(self, call_id: object, node_id: object) -> dict[str, object] | None:
        call = self._call(call_id)
        for part in call.participants.values():
            if node_id is not None and part.node_id != node_id:
                continue
            if part.leg is not None and part.leg.preview is not None:
                shot = part.leg.preview
                rgb = base64.b64encode(shot.rgb).decode()
                return {"width": shot.width, "height": shot.height, "rgb": rgb}
        return None

    async def _switch_to_relay(self, call: Call, guest: Participant) -> None:
        """Turn the mesh into a star through this node (the host) as ``guest`` joins.

        Members learn it from the roster (more members than a mesh holds, from the
        host): they drop their legs with each other. The host then replaces its leg
        to each member with one that has forwarding slots.
        """
        call.relayed = True
        self._forwarders[call.call_id] = Forwarder(self._relay, audio_only=call.audio_only)
        log.info("call %s: %d nodes is over the mesh limit of %d; relaying through this node",
                 call.call_id, len(call.live()) + 1, MESH_MAX)  # fmt: skip
        members = [p for p in call.live() if p is not guest]
        roster = self._roster(call)
        for other in members:
            await self._send(other.node_id, roster)
        for other in members:
            try:
                await self._offer(call, other, join=True)
            except CallError as exc:
                self._drop(call, other, PartState.DROPPED, str(exc))

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
        local = local_address_towards(link.channel.remote) if link is not None else None
        leg = Leg(
            part.node_id,
            audio=call.media.audio,
            video=call.media.video,
            relay=self._relay,
            on_change=lambda leg: self._leg_changed(call, part, leg),
            on_audio=lambda track: self._spawn(self._play(leg, track), "play call audio"),
            slots=slots,
            addresses=[local] if local is not None else None,
            clock=self._clock,
        )
        old, part.leg = part.leg, leg
        if old is not None:
            self._spawn(self._retire(old), f"retire leg {part.name}")
        return leg

    async def _play(self, leg: Leg, track: MediaStreamTrack) -> None:
        await self._playback.play(leg, track)

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
            call.media = open_media(call.media_spec, self._me.name, audio_only=call.audio_only)
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
        part.state = state
        log.warning("call %s: %s %s: %s", call.call_id, part.name, state, reason)
        leg, part.leg = part.leg, None
        if leg is not None:
            self._spawn(self._close_leg(call, part, leg), f"close leg {part.name}")
        forwarder = self._forwarders.get(call.call_id)
        if forwarder is not None:
            forwarder.forget(part.node_id)
            self._rewire(call)
        if call.relayed and part.node_id == call.host and call.host != self._my_id:
            why = f"the host {part.name} {state} ({reason}); a relayed call ends without its host"
            self._spawn(self._end(call, why), "end call")
        elif not call.live():
            self._spawn(self._end(call, f"{part.name} {state}: {reason}"), "end call")
        else:
            if forwarder is not None:
                self._spawn(self._send_roster(call), "call roster")
            self._publish(call)

    def _rewire(self, call: Call) -> None:
        """Host of a relayed call: point every forwarding slot at the right source."""
        forwarder = self._forwarders.get(call.call_id)
        if forwarder is None:
            return
        joined = [p for p in call.participants.values()
                  if p.state is PartState.CONNECTED and p.leg is not None]  # fmt: skip
        joined.sort(key=lambda p: p.joined_ms or 0)
        forwarder.rewire(
            {p.node_id: p.leg.remote for p in joined if p.leg is not None},
            [p.node_id for p in joined],
        )

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

    # -- frames from peers -----------------------------------------------------------

    async def _send(self, node_id: str, frame: Frame) -> bool:
        link = self._link_of(node_id)
        if link is None:
            return False
        try:
            await link.send(frame)
        except ChannelClosed:
            return False
        return True

    async def on_frame(self, link: Link, frame: Frame) -> None:
        """Handle a call frame; its sender is ``link``'s authenticated peer."""
        sender = link.peer_id
        if isinstance(frame, CallOffer):
            await self._on_offer(sender, frame)
            return
        call = self._calls.get(getattr(frame, "call_id", ""))
        part = call.participants.get(sender) if call is not None else None
        if call is None or call.ended or part is None:
            log.info("%s sent %s for a call it is not in here; ignored",
                     link, type(frame).__name__)  # fmt: skip
            return
        match frame:
            case CallAnswer(sdp=sdp):
                if part.leg is None or part.leg.pc.signalingState != "have-local-offer":
                    log.warning("call %s: unexpected answer from %s", call.call_id, part.name)
                    return
                try:
                    await part.leg.accept(sdp)
                except CallError as exc:
                    self._drop(call, part, PartState.DROPPED, str(exc))
                    return
                part.state = PartState.CONNECTING
                if call.state is CallState.RINGING:
                    call.state = CallState.CONNECTING
                self._publish(call)
            case CallDecline(reason=reason):
                self._drop(call, part, PartState.LEFT, f"declined: {reason}")
            case CallLeave(reason=reason):
                self._drop(call, part, PartState.LEFT, f"left: {reason}")
            case CallRoster(members=members):
                self._on_roster(call, sender, members)
            case CallMute(audio=audio, video=video):
                part.muted_audio, part.muted_video = audio, video
                self._publish(call)
            case CallDegrade(reason=reason):
                await self._degrade(call, f"{part.name}: {reason}", tell=False)

    def _on_roster(self, call: Call, sender: str, members: tuple[CallMember, ...]) -> None:
        """Learn new members; from the host of a relayed call, everyone's state too."""
        for member in members:
            if member.node_id != self._my_id and member.node_id not in call.participants:
                call.participants[member.node_id] = self._participant(member.node_id)
        if sender == call.host and (call.relayed or len(members) > MESH_MAX):
            if not call.relayed:
                call.relayed = True
                log.info("call %s: %d nodes; now relayed by %s", call.call_id, len(members),
                         call.participants[sender].name)  # fmt: skip
            listed = {m.node_id: m.state for m in members}
            for part in call.participants.values():
                if part.node_id == call.host:
                    continue
                leg, part.leg = part.leg, None  # a star: no legs but to the host
                if leg is not None:
                    self._spawn(self._retire(leg), f"retire leg {part.name}")
                state = listed.get(part.node_id, str(PartState.LEFT))
                if state in set(PartState):
                    part.state = PartState(state)
        self._publish(call)

    async def _on_offer(self, sender: str, frame: CallOffer) -> None:
        call = self._calls.get(frame.call_id)
        if not is_valid_id(frame.call_id):
            await self._send(sender, CallDecline(frame.call_id, "malformed call id"))
            return
        if sender not in frame.members:
            await self._send(sender, CallDecline(frame.call_id, "offer does not list its sender"))
            return
        if call is not None:
            await self._on_join(call, sender, frame)
            return
        if frame.join:
            await self._send(sender, CallDecline(frame.call_id, "no such call here"))
            return
        if any(not c.ended for c in self._calls.values()):
            await self._send(sender, CallDecline(frame.call_id, "busy in another call"))
            return
        size = len(frame.members) + 1
        if size > GROUP_MAX or (size > MESH_MAX and frame.host != sender):
            why = "call is over the group limit" if size > GROUP_MAX else "only the host relays"
            await self._send(sender, CallDecline(frame.call_id, why))
            return
        call = self._new_call(
            frame.call_id,
            frame.case_id,
            "incoming",
            frame.audio_only,
            frame.host,
            self._settings.media,
        )
        call.inviter, call.pending_offer = sender, frame.sdp
        call.relayed = size > MESH_MAX
        for member in frame.members:
            if member != self._my_id:
                call.participants[member] = self._participant(member)
        self._calls[call.call_id] = call
        inviter = call.participants[sender]
        log.info("incoming call %s from %s (%s)", call.call_id, inviter.name, sender)
        self._publish(call)
        if self._settings.auto_accept:
            await self._accept(call)
        else:
            self._spawn(self._ring_timeout(call), f"ring {call.call_id}")

    async def _on_join(self, call: Call, sender: str, frame: CallOffer) -> None:
        if call.ended or not frame.join or call.state is CallState.RINGING:
            await self._send(sender, CallDecline(frame.call_id, "not taking joins for this call"))
            return
        part = call.participants.get(sender)
        rehost = call.relayed and sender == call.host and part is not None
        if call.relayed and not rehost:
            await self._send(
                sender, CallDecline(frame.call_id, "a relayed call: legs go via the host")
            )
            return
        if not rehost and part is not None and part.state in LIVE and part.leg is not None:
            await self._send(sender, CallDecline(frame.call_id, "already connected"))
            return
        if part is None or part.state not in LIVE:
            if len(call.live()) + 2 > MESH_MAX:
                await self._send(sender, CallDecline(frame.call_id, "call is full"))
                return
            part = call.participants[sender] = self._participant(sender)
        try:
            answer = await self._leg(call, part).answer(frame.sdp)
        except CallError as exc:
            await self._send(sender, CallDecline(frame.call_id, str(exc)[:256]))
            self._drop(call, part, PartState.DROPPED, str(exc))
            return
        part.state = PartState.CONNECTING
        await self._send(sender, CallAnswer(call.call_id, answer))
        self._apply_sending(call)
        log.info("call %s: %s joined", call.call_id, part.name)
        self._publish(call)

    async def _ring_timeout(self, call: Call) -> None:
        await asyncio.sleep(RING_TIMEOUT)
        if call.state is CallState.RINGING and call.inviter is not None:
            await self._send(call.inviter, CallDecline(call.call_id, "no answer"))
            await self._end(call, "no answer")

    def on_peer_event(self, event: PeerEvent) -> None:
        """A link went down or was refused: end that peer's legs now (not after ICE consent)."""
        if event.kind not in ("down", "refused"):
            return
        node_id = event.peer.get("node_id")
        for call in list(self._calls.values()):
            part = call.participants.get(node_id) if isinstance(node_id, str) else None
            if call.relayed and call.host != self._my_id and node_id != call.host:
                continue  # a star: only our link to the host carries this call
            if not call.ended and part is not None:
                self._drop(call, part, PartState.DROPPED, "link lost")

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
        sources = 0
        for part in list(call.participants.values()):
            leg = part.leg
            if leg is None:
                continue
            sources += leg.audio_sources()
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
        for node_id, sample in samples.items():
            reason = call.participants[node_id].policy.observe(sample)
            if reason is not None:
                await self._degrade(call, reason, tell=True)
        if not call.ended:
            self._publish(call)
