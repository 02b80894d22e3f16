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

Past :data:`MESH_MAX` nodes the call becomes a star through its host (see
:mod:`meshdesk.calls.relay`): the host's invite of the fifth node sends every member
a roster with more members than a mesh holds, members drop their legs with each
other, and the host re-offers each of them a leg with forwarding slots. From then
on the host's rosters are authoritative for who is in, and the call ends for
everyone when the host leaves or drops.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass

from meshdesk.calls._core import MEDIA_TIMEOUT, MESH_MAX, RING_TIMEOUT, CallLog, is_guest
from meshdesk.calls._handover import HostingCore
from meshdesk.calls.link import CallLink
from meshdesk.calls.media import parse_media
from meshdesk.calls.model import LIVE, Call, CallState, Participant, PartState
from meshdesk.calls.relay import GROUP_MAX, Forwarder
from meshdesk.cases.ids import is_valid_id, new_id
from meshdesk.errors import CallError
from meshdesk.net.mesh import PeerEvent
from meshdesk.net.peers import PeerRecord
from meshdesk.wire import (
    CallAnswer,
    CallDecline,
    CallDegrade,
    CallGuestReady,
    CallGuestStandby,
    CallHost,
    CallLeave,
    CallMember,
    CallMute,
    CallOffer,
    CallRoster,
    CallStanding,
    Frame,
)

__all__ = [
    "MEDIA_TIMEOUT",
    "MESH_MAX",
    "CallLog",
    "CallManager",
    "Guest",
    "is_call_frame",
    "is_guest",
]

log = logging.getLogger("meshdesk.calls")

_CALL_FRAMES = (
    CallOffer, CallAnswer, CallDecline, CallLeave, CallRoster, CallMute, CallDegrade,
    CallStanding, CallHost, CallGuestStandby, CallGuestReady,
)  # fmt: skip


def is_call_frame(frame: Frame) -> bool:
    return isinstance(frame, _CALL_FRAMES)


@dataclass(frozen=True, slots=True)
class Guest:
    """A citizen's browser joining through this node (see :mod:`meshdesk.web`)."""

    guest_id: str
    name: str
    #: The browser's address: ICE gathers on the interface that reaches it.
    remote: str
    case_id: str | None = None
    #: The call to join; None starts a new one (or rejoins the guest's own).
    call_id: str | None = None
    #: The 4-digit code staff admitted it by (its name in the call ends with it).
    code: str | None = None


class CallManager(HostingCore):
    """Places, answers and keeps this node's calls; owned by the Node."""

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

    async def start(
        self, peer: str, *, case_id: str | None, audio_only: bool, media: str | None = None
    ) -> dict[str, object]:
        """Call ``peer`` (name or id) with ``media`` (default: ``[calls] media``);
        returns the call object (state ringing)."""
        media = media or self._settings.media
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
        call.media = await self._open_media(call, media)
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

    # -- citizens' browsers (meshdesk.web) ---------------------------------------------

    def _guest_call(self, guest: Guest) -> Call | None:
        if guest.call_id is not None:
            call = self._call(guest.call_id)
            if call.ended:
                raise CallError(f"call {call.call_id} has ended")
            return call
        for call in self._calls.values():
            if not call.ended and guest.guest_id in call.participants:
                return call  # the phone comes back after losing its connection
        if any(not c.ended for c in self._calls.values()):
            raise CallError("this node is in another call; invite the citizen from its screen")
        return None

    async def guest_offer(self, guest: Guest, sdp: str) -> tuple[dict[str, object], str]:
        """A citizen's browser offers its leg; returns the call object and our answer.

        The citizen becomes a participant whose leg ends here: the call is a star
        through this node (its host), which forwards the citizen's audio and video to
        the nodes it invites and theirs to the citizen (:mod:`meshdesk.calls.relay`).

        Raises:
            CallError: the call is not ours to grow, or the offer is unusable.
        """
        if not is_guest(guest.guest_id):
            raise CallError(f"{guest.guest_id!r} is not a guest id")
        call = self._guest_call(guest)
        fresh = call is None
        if call is None:
            case_id = guest.case_id
            if case_id is not None and self._case_log is not None:
                case_id = await self._case_log.resolve_id(case_id)
            media = self._settings.media
            call = self._new_call(new_id(self._wall_ms()), case_id, "outgoing", False,
                                  self._my_id, media)  # fmt: skip
            call.media = await self._open_media(call, media)
            call.relayed = True
            self._forwarders[call.call_id] = Forwarder(self._relay, audio_only=False)
            self._calls[call.call_id] = call
        elif call.host != self._my_id:
            host = self._participant(call.host).name
            raise CallError(f"only the call's host {host} can bring a citizen into it")
        part = call.participants.get(guest.guest_id)
        if part is None or part.state not in LIVE:
            if len(call.live()) + 2 > GROUP_MAX:
                raise CallError(f"a call holds at most {GROUP_MAX} participants")
            part = call.participants[guest.guest_id] = self._participant(guest.guest_id, guest.name)
        part.name = guest.name  # one kept from the old host's roster is only "citizen"
        self._guest_remote[guest.guest_id] = guest.remote
        if guest.code:
            self._guest_codes[guest.guest_id] = guest.code
        if not call.relayed:
            await self._switch_to_relay(call, part)
        else:
            await self._send_roster(call)
        try:
            answer = await self._leg(call, part).answer(sdp)
        except CallError as exc:
            self._drop(call, part, PartState.LEFT, str(exc))
            if fresh:
                await self._end(call, f"{guest.name}: {exc}")
            raise
        part.state = PartState.CONNECTING
        self._apply_sending(call)
        log.info("call %s: %s (a browser at %s) offered its leg",
                 call.call_id, part.name, guest.remote)  # fmt: skip
        self._publish(call)
        return call.to_json(), answer

    def _guest(self, guest_id: str) -> tuple[Call, Participant] | None:
        for call in self._calls.values():
            part = call.participants.get(guest_id)
            if not call.ended and part is not None and part.state in LIVE:
                return call, part
        return None

    def guest_leave(self, guest_id: str, reason: str) -> None:
        """The citizen hung up (or was sent away): its leg ends; idempotent."""
        found = self._guest(guest_id)
        if found is not None:
            self._drop(found[0], found[1], PartState.LEFT, reason)

    def guest_mute(self, guest_id: str, audio: bool, video: bool) -> None:
        """The citizen muted or turned the camera off (it is not dropped for silence)."""
        found = self._guest(guest_id)
        if found is not None:
            found[1].muted_audio, found[1].muted_video = audio, video
            self._publish(found[0])

    # -- frames from peers -----------------------------------------------------------

    async def on_frame(self, link: CallLink, frame: Frame) -> None:
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
            case CallLeave(reason=reason) if part.state is PartState.DROPPED:
                # Taken for gone (a new host said so) before its own word came: it left.
                part.state = PartState.LEFT
                self._publish(call)
            case CallLeave(reason=reason):
                self._drop(call, part, PartState.LEFT, f"left: {reason}")
            case CallRoster(members=members):
                self._on_roster(call, sender, members)
            case CallMute(audio=audio, video=video):
                part.muted_audio, part.muted_video = audio, video
                self._publish(call)
            case CallDegrade(reason=reason):
                await self._degrade(call, f"{part.name}: {reason}", tell=False)
            case CallStanding():
                self._on_standing(call, sender, frame)
            case CallHost():
                await self._on_host(call, sender, frame)
            case CallGuestStandby():
                self._on_guest_standby(call, sender, frame)
            case CallGuestReady(guest_id=guest_id, url=url):
                if self.guest_desk is not None and call.standby_sent.get(guest_id) == sender:
                    self.guest_desk.backup_ready(guest_id, url)

    def _on_roster(self, call: Call, sender: str, members: tuple[CallMember, ...]) -> None:
        """Learn new members; from the host of a relayed call, everyone's state too."""
        for member in members:
            if member.node_id != self._my_id and member.node_id not in call.participants:
                call.participants[member.node_id] = self._participant(member.node_id)
        if sender != call.host:
            self._on_member_roster(call, sender)  # a member back in a mesh says so
        star = len(members) > MESH_MAX or any(is_guest(m.node_id) for m in members)
        if sender == call.host and (call.relayed or star):
            if not call.relayed:
                call.relayed, call.meshed = True, False
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
        star = size > MESH_MAX or any(is_guest(m) for m in frame.members)
        if size > GROUP_MAX or (star and frame.host != sender):
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
        call.relayed = star  # a citizen's browser is reachable only through the host
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
        # A member that heard first that the call is back to a mesh (or that a new
        # host meshes it) opens its legs: its offer names a mesh's worth of members.
        mesh = len(frame.members) + 1 <= MESH_MAX and not any(is_guest(m) for m in frame.members)
        if call.relayed and not rehost and not (mesh and part is not None):
            await self._send(
                sender, CallDecline(frame.call_id, "a relayed call: legs go via the host")
            )
            return
        if call.relayed and not rehost:
            call.relayed, call.meshed = False, False
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
