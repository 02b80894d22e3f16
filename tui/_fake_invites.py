"""The citizens half of the fake node: invitations as the invite operations return them.

A test (or a snapshot) plays the phone with :meth:`FakeInvites.citizen_waits`:
the invitation gets its 4-digit code and a ``citizen`` event rings the console.
Admitting puts the citizen into a call (the invitation's, else a new one), as the
node does once the phone's connection is up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshdesk.errors import UsageError
from meshdesk.ops import Args

__all__ = ["FakeInvites"]

FAKE_ADDRESS = "192.168.10.5"


class FakeInvites:
    """Invite ops over the fake's calls; every change is published as a ``citizen`` event."""

    node_id: str
    calls_by_id: dict[str, dict[str, Any]]
    now_ms: Callable[[], int]
    invites: dict[str, dict[str, Any]]

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def invite_handlers(self) -> dict[str, Callable[[Args], Any]]:
        """The invite operations of the registry, by name."""
        return {
            "invite_new": self._invite_new,
            "invite_list": lambda _: [dict(i) for i in self.invites.values()],
            "invite_admit": self._invite_admit,
            "invite_decline": self._invite_decline,
        }

    def _emit_invite(self, change: str, invite: dict[str, Any]) -> dict[str, Any]:
        self.publish("citizen", {"change": change, "invite": dict(invite)})
        return dict(invite)

    def _invite_new(self, args: Args) -> dict[str, Any]:
        number = len(self.invites) + 1
        invite_id = f"{number:08x}"
        url = f"https://{FAKE_ADDRESS}:7443/j/FAKETOKEN{number:04d}AAAAAAAAAAAAAAAAAAAAAA"
        invite = {
            "invite_id": invite_id,
            "guest_id": f"citizen:{invite_id}",
            "state": "new",
            "code": None,
            "case_id": args.maybe_text("case"),
            "call_id": args.maybe_text("call_id"),
            "expires_in_s": 600.0,
            "remote": None,
            "reason": None,
            "url": url,
            "urls": [url],
        }
        self.invites[invite_id] = invite
        return self._emit_invite("new", invite)

    def _find_invite(self, key: str) -> dict[str, Any]:
        for invite in self.invites.values():
            if key in (invite["invite_id"], invite["code"]) and invite["state"] in (
                "new",
                "opened",
                "waiting",
                "admitted",
            ):
                return invite
        raise UsageError(f"no open invitation with code or id {key!r}")

    def citizen_waits(self, invite_id: str, code: str = "4821") -> None:
        """Test control: the citizen opened the link and tapped "start"."""
        invite = self.invites[invite_id]
        invite.update(state="waiting", code=code, remote="192.168.10.77")
        self._emit_invite("waiting", invite)

    def _invite_admit(self, args: Args) -> dict[str, Any]:
        invite = self._find_invite(args.text("code"))
        if invite["state"] != "waiting":
            raise UsageError(f"invitation {invite['invite_id']} is {invite['state']}, not waiting")
        invite["state"] = "admitted"
        citizen = {
            "node_id": invite["guest_id"],
            "name": f"市民 {invite['code']}",
            "site": "",
            "state": "connected",
            "muted_audio": False,
            "muted_video": False,
        }
        call = self.calls_by_id.get(invite["call_id"] or "")
        if call is None:
            call_id = f"call-{len(self.calls_by_id) + 1:04d}"
            call = {
                "call_id": call_id,
                "case_id": invite["case_id"],
                "direction": "outgoing",
                "state": "active",
                "audio_only": False,
                "degraded": False,
                "relayed": True,
                "started_ms": self.now_ms(),
                "ended_ms": None,
                "reason": None,
                "host": self.node_id,
                "participants": [],
                "stats": {"rtt_ms": 8.0, "video_frames_sent": 0, "video_frames_received": 0},
            }
            self.calls_by_id[call_id] = call
            invite["call_id"] = call_id
        call["participants"].append(citizen)
        self.publish("call", call)
        return self._emit_invite("admitted", invite)

    def _invite_decline(self, args: Args) -> dict[str, Any]:
        invite = self._find_invite(args.text("code"))
        invite.update(state="declined", reason="declined by staff")
        return self._emit_invite("declined", invite)
