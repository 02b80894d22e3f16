"""The citizen desk: invitations and the citizens they bring into the node's calls.

Between the web port (:mod:`meshdesk.web.server`, the phone's side) and the call
manager (the desk's side). Staff make invitations, see who waits in the lobby
and admit or decline them (the ``invite_*`` control operations); the phone asks
to join, long-polls for what happens, and after admission offers its WebRTC leg,
which becomes a participant of a call this node hosts
(:meth:`meshdesk.calls.CallManager.guest_offer`). No media can flow before
admission: an offer is refused until then.

What happens is published on the node's bus as ``citizen`` events
(``{"change": …, "invite": {...}}``): the console rings with the code when a
citizen waits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Protocol

from meshdesk.calls import Guest
from meshdesk.calls.ice import local_address_towards
from meshdesk.errors import CallError, UsageError
from meshdesk.web.invites import Invitation, InviteBook, InviteState

__all__ = ["CitizenDesk", "GuestCalls", "Publish", "WebUnavailable", "url_of"]

log = logging.getLogger("meshdesk.web")

#: Long-polls answered empty after this long (the page asks again at once).
POLL_TIMEOUT = 20.0
#: An invitation kept ready for another desk's phone waits this long to be opened.
STANDBY_TTL = 3600.0
#: Reasons a call ends here while it goes on elsewhere (this desk left it).
LEAVING = frozenset({"hung up", "node shutting down"})

Publish = Callable[[str, dict[str, object]], None]


class WebUnavailable(UsageError):
    """The web port is off (disabled, no web sub-CA in the kit, port taken)."""


class GuestCalls(Protocol):
    """What the desk needs of the call manager (:class:`meshdesk.calls.CallManager`)."""

    async def guest_offer(self, guest: Guest, sdp: str) -> tuple[dict[str, object], str]: ...

    def guest_leave(self, guest_id: str, reason: str) -> None: ...

    def guest_mute(self, guest_id: str, audio: bool, video: bool) -> None: ...


def url_of(address: str, port: int, token: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}/j/{token}"


class CitizenDesk:
    """Invitations of one node; the context of the ``invite_*`` operations."""

    def __init__(
        self,
        calls: GuestCalls,
        make_guest: Callable[[Invitation, str], Guest],
        *,
        ttl: float,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._calls = calls
        self._make_guest = make_guest
        self.book = InviteBook(ttl)
        self._publish = publish
        self._clock = clock
        self._wakeups: dict[str, asyncio.Event] = {}
        #: Why the web port is off (None while it serves), and where it serves.
        self.unavailable: str | None = "the web port has not started"
        self.port: int | None = None
        self.addresses: Callable[[], list[str]] = list
        #: Calls this node hosts now (their kept-ready phones are admitted).
        self._hosting: set[str] = set()

    # -- staff -----------------------------------------------------------------------

    def _require_web(self) -> int:
        if self.unavailable is not None or self.port is None:
            raise WebUnavailable(f"citizens cannot join: {self.unavailable}")
        return self.port

    def _view(self, invite: Invitation) -> dict[str, object]:
        data = invite.to_json(self._clock())
        if self.port is not None and invite.alive:
            urls = [url_of(a, self.port, invite.token) for a in self.addresses()]
            data["urls"] = urls
            data["url"] = urls[0] if urls else None
        return data

    def new(self, *, case_id: str | None, call_id: str | None) -> dict[str, object]:
        """A fresh invitation with its URL(s); the first URL is what the QR code holds."""
        port = self._require_web()
        invite = self.book.create(self._clock(), case_id=case_id, call_id=call_id)
        log.info("invitation %s made (case %s, call %s); port %d",
                 invite.invite_id, case_id, call_id, port)  # fmt: skip
        view = self._view(invite)
        self._publish("citizen", {"change": "new", "invite": view})
        return view

    def invitations(self) -> list[dict[str, object]]:
        self.expire()
        return [self._view(i) for i in self.book.all()]

    def admit(self, key: str) -> dict[str, object]:
        invite = self.book.find(key)
        self.book.admit(invite)
        log.info("invitation %s (code %s) admitted", invite.invite_id, invite.code)
        self._changed(invite, "admitted")
        return self._view(invite)

    def decline(self, key: str) -> dict[str, object]:
        """Send a waiting citizen away, or take an admitted one out of the call."""
        invite = self.book.find(key)
        if invite.state is InviteState.ADMITTED:
            self._calls.guest_leave(invite.guest_id, "sent away by staff")
            self._finish(invite, InviteState.ENDED, "ended by staff")
        else:
            self._finish(invite, InviteState.DECLINED, "declined by staff")
        return self._view(invite)

    # -- the phone ---------------------------------------------------------------------

    def lobby(self, invite: Invitation) -> str:
        code = self.book.lobby(invite, self._clock())
        if invite.state is InviteState.WAITING:
            log.info("citizen waiting: code %s (invitation %s)", code, invite.invite_id)
            self._changed(invite, "waiting")
            if invite.transfer and invite.call_id in self._hosting:
                self._readmit(invite)
        return code

    # -- a phone of a call this node may take over (see meshdesk.calls._handover) ------

    def standby(
        self, call_id: str, guest_id: str, code: str, token: str, case_id: str | None, remote: str
    ) -> str | None:
        """Keep an invitation ready for a phone of ``call_id``, hosted by another desk
        now; its URL (on the address that reaches the phone), or None without a port."""
        if self.unavailable is not None or self.port is None or not guest_id.startswith("citizen:"):
            return None
        try:
            invite = self.book.adopt(
                self._clock(), invite_id=guest_id.removeprefix("citizen:"), token=token,
                code=code or None, case_id=case_id, call_id=call_id, ttl=STANDBY_TTL,
            )  # fmt: skip
        except UsageError as exc:
            log.warning("cannot keep an invitation ready for %s: %s", guest_id, exc)
            return None
        addresses = self.addresses()
        near = local_address_towards(remote) if remote else None
        host = near if near in addresses else (addresses[0] if addresses else None)
        if host is None:
            return None
        log.info("invitation %s kept ready for call %s (code %s)", invite.invite_id, call_id,
                 invite.code)  # fmt: skip
        return url_of(host, self.port, invite.token)

    def backup_ready(self, guest_id: str, url: str | None) -> None:
        """Tell the phone of ``guest_id`` where it reconnects if this desk goes (None:
        the node that kept it ready left; nowhere until another one does)."""
        for invite in self.book.all():
            ready = invite.guest_id == guest_id and invite.state is InviteState.ADMITTED
            if ready and invite.backup_url != url:
                invite.backup_url = url
                invite.push("standby", url=url)
                self._wake(invite)

    def _readmit(self, invite: Invitation) -> None:
        self.book.admit(invite)
        log.info("invitation %s (code %s) re-admitted: this node hosts its call now",
                 invite.invite_id, invite.code)  # fmt: skip
        self._changed(invite, "admitted")

    async def offer(self, invite: Invitation, sdp: str, remote: str) -> str:
        """The admitted phone's WebRTC offer; our answer.

        Raises:
            UsageError: not admitted (yet), or no longer alive.
            CallError: the call cannot take it, or the SDP is unusable.
        """
        if invite.state is not InviteState.ADMITTED:
            raise UsageError(f"this invitation is {invite.state}, not admitted")
        guest = self._make_guest(invite, _plain_ip(remote))
        call, answer = await self._calls.guest_offer(guest, sdp)
        call_id = call.get("call_id")
        if isinstance(call_id, str) and invite.call_id != call_id:
            invite.call_id = call_id
            self._changed(invite, "joined")
        return answer

    def leave(self, invite: Invitation) -> None:
        if invite.state is InviteState.ADMITTED:
            self._calls.guest_leave(invite.guest_id, "the citizen hung up")
        self._finish(invite, InviteState.ENDED, "the citizen hung up")

    def mute(self, invite: Invitation, audio: bool, video: bool) -> None:
        if invite.state is InviteState.ADMITTED:
            self._calls.guest_mute(invite.guest_id, audio, video)

    async def events(self, invite: Invitation, after: int) -> list[dict[str, object]]:
        """Events after ``after``; waits up to :data:`POLL_TIMEOUT` for one."""
        found = invite.events_after(after)
        if found or not invite.alive:
            return found
        wake = self._wakeups.setdefault(invite.invite_id, asyncio.Event())
        wake.clear()
        try:
            async with asyncio.timeout(POLL_TIMEOUT):
                await wake.wait()
        except TimeoutError:
            pass
        return invite.events_after(after)

    # -- the node ----------------------------------------------------------------------

    def expire(self) -> None:
        for invite in self.book.expire(self._clock()):
            log.info("invitation %s expired", invite.invite_id)
            self._changed(invite, "expired")

    def on_call(self, call: dict[str, object]) -> None:
        """A call changed (a call manager listener): end invitations whose call ended,
        move phones to the successor when this desk leaves, admit phones that were
        kept ready once this node hosts their call."""
        call_id = call.get("call_id")
        parts = call.get("participants")
        me = parts[0] if isinstance(parts, list) and parts else {}
        hosting = isinstance(me, dict) and me.get("node_id") == call.get("host")
        if hosting and call.get("state") != "ended" and isinstance(call_id, str):
            self._hosting.add(call_id)
        else:
            self._hosting.discard(str(call_id))
        for invite in self.book.all():
            if not invite.transfer or invite.call_id != call_id or not invite.alive:
                continue
            if call.get("state") == "ended":
                self._finish(invite, InviteState.ENDED, "the call ended")
            elif hosting and invite.state is InviteState.WAITING:
                self._readmit(invite)
        for invite in self.book.all():
            if invite.state is not InviteState.ADMITTED or invite.call_id != call_id:
                continue
            mine = next(
                (
                    p
                    for p in call.get("participants", [])  # type: ignore[attr-defined]
                    if isinstance(p, dict) and p.get("node_id") == invite.guest_id
                ),
                None,
            )
            ended = call.get("state") == "ended"
            if ended and invite.backup_url and call.get("reason") in LEAVING:
                # This desk left and the call goes on through the successor: the page
                # goes there (its invitation is ready) instead of ending.
                invite.push("moved", url=invite.backup_url)
                log.info("invitation %s: the phone moves to %s", invite.invite_id,
                         invite.backup_url.split("/j/")[0])  # fmt: skip
            if ended or (mine is not None and mine.get("state") == "left"):
                self._finish(invite, InviteState.ENDED, str(call.get("reason") or "ended"))
            elif call.get("degraded") and not any(e["kind"] == "degraded" for e in invite.events):
                invite.push("degraded")
                self._wake(invite)

    def close(self) -> None:
        """The node stops: every open invitation ends (a phone with a successor moves
        there: the call goes on without this desk)."""
        for invite in self.book.all():
            if invite.state is InviteState.ADMITTED and invite.backup_url:
                invite.push("moved", url=invite.backup_url)
            self._finish(invite, InviteState.ENDED, "the desk closed")

    def _finish(self, invite: Invitation, state: InviteState, reason: str) -> None:
        if self.book.finish(invite, state, reason):
            log.info("invitation %s %s: %s", invite.invite_id, state, reason)
            self._changed(invite, str(state))

    def _changed(self, invite: Invitation, change: str) -> None:
        self._wake(invite)
        self._publish("citizen", {"change": change, "invite": self._view(invite)})

    def _wake(self, invite: Invitation) -> None:
        wake = self._wakeups.get(invite.invite_id)
        if wake is not None:
            wake.set()
        if not invite.alive:
            self._wakeups.pop(invite.invite_id, None)


def _plain_ip(remote: str) -> str:
    """The peer address aiohttp reports, as a bare IP (IPv4-mapped IPv6 unwrapped)."""
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError as exc:
        raise CallError(f"cannot route media to {remote[:64]!r}") from exc
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
