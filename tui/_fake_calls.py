"""The calls half of the fake node: call objects as the calls control API returns them."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from meshdesk.errors import CallError
from meshdesk.ops import Args

__all__ = ["FakeCalls"]


class FakeCalls:
    """Calls ops over the fake's directory; every change is published as a ``call`` event."""

    node_id: str
    directory_list: list[dict[str, Any]]
    peer_list: list[dict[str, Any]]
    calls_by_id: dict[str, dict[str, Any]]
    now_ms: Callable[[], int]
    #: What the fake's sound server offers: no echo canceller, as on a bare laptop.
    sound: dict[str, Any] = {  # noqa: RUF012 (read only)
        "echo_cancel": False,
        "note": "the sound server offers no echo cancelling",
    }

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def call_handlers(self) -> dict[str, Callable[[Args], Any]]:
        """The call operations of the registry, by name."""
        return {
            "call_start": self._call_start,
            "call_answer": self._call_answer,
            "call_invite": self._call_invite,
            "call_hangup": self._call_hangup,
            "call_mute": self._call_mute,
            "calls": lambda _: list(self.calls_by_id.values()),
            "call_preview": self._call_preview,
        }

    def _peer(self, wanted: object) -> dict[str, Any]:
        for info in self.directory_list[1:]:
            if wanted in (info["name"], info["node_id"]):
                return info
        raise CallError(f"no peer {wanted!r} to call")

    def _member(self, info: Mapping[str, Any], state: str) -> dict[str, Any]:
        return {
            "node_id": info["node_id"],
            "name": info["name"],
            "site": info["site"],
            "state": state,
            "muted_audio": False,
            "muted_video": False,
        }

    def _emit_call(self, call: dict[str, Any]) -> dict[str, Any]:
        self.publish("call", call)
        return call

    def _get_call(self, args: Args) -> dict[str, Any]:
        call = self.calls_by_id.get(args.text("call_id"))
        if call is None:
            raise CallError(f"no call {args['call_id']!r}")
        return call

    def _call_start(self, args: Args) -> dict[str, Any]:
        peer = self._peer(args.text("peer"))
        if peer["name"] in [p["name"] for p in self.peer_list if p["state"] != "linked"]:
            raise CallError(f"{peer['name']} is not linked")
        call_id = f"call-{len(self.calls_by_id) + 1:04d}"
        me = self._member(self.directory_list[0], "connected")
        call = {
            "call_id": call_id,
            "case_id": args.maybe_text("case"),
            "direction": "outgoing",
            "state": "active",
            "audio_only": args.flag("audio_only"),
            "degraded": False,
            "started_ms": self.now_ms(),
            "ended_ms": None,
            "reason": None,
            "host": self.node_id,
            "participants": [me, self._member(peer, "connected")],
            "notice": None,
            "sound": dict(self.sound),
            "stats": {
                "rtt_ms": 12.0,
                "loss_pct": 0.0,
                "bitrate_kbps": 640,
                "fps_sent": 15,
                "fps_received": 15,
                "video_frames_sent": 0,
                "video_frames_received": 0,
                "audio_frames_received": 0,
                "setup_ms": 180,
            },
        }
        self.calls_by_id[call_id] = call
        return self._emit_call(call)

    def _call_answer(self, args: Args) -> dict[str, Any]:
        call = self._get_call(args)
        call["state"] = "active" if args.flag("accept") else "ended"
        return self._emit_call(call)

    def _call_invite(self, args: Args) -> dict[str, Any]:
        call = self._get_call(args)
        if call["state"] == "ended":
            raise CallError("the call has ended")
        call["participants"].append(self._member(self._peer(args.text("peer")), "connected"))
        return self._emit_call(call)

    def _call_hangup(self, args: Args) -> dict[str, Any]:
        call = self._get_call(args)
        call.update(state="ended", ended_ms=self.now_ms(), reason="hung up")
        return self._emit_call(call)

    def _call_mute(self, args: Args) -> dict[str, Any]:
        call = self._get_call(args)
        me = call["participants"][0]
        for what in ("audio", "video"):
            muted = args.maybe(what, bool)
            if muted is not None:
                me[f"muted_{what}"] = muted
        return self._emit_call(call)

    def _call_preview(self, args: Args) -> dict[str, Any] | None:
        call = self._get_call(args)
        if call["state"] != "active" or call["audio_only"]:
            return None
        width, height = 32, 24
        frames = call["stats"]["video_frames_received"]
        rgb = bytes(
            channel
            for y in range(height)
            for x in range(width)
            for channel in ((x * 8 + frames) % 256, y * 10 % 256, 128)
        )
        return {"width": width, "height": height, "rgb": base64.b64encode(rgb).decode()}

    def tick_calls(self, frames: int = 15) -> None:
        """Advance every active call's stats by one second of media (a ~1 Hz event)."""
        for call in self.calls_by_id.values():
            if call["state"] == "active":
                stats = call["stats"]
                stats["video_frames_sent"] += frames
                stats["video_frames_received"] += frames
                stats["audio_frames_received"] += 50
                self._emit_call(call)
