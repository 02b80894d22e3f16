"""Call operations: place, answer, grow, mute and end calls; read their state.

Their context is the node's :class:`~meshdesk.calls.CallManager`; results are call
objects (see docs/ARCHITECTURE.md, "Calls"). Argument errors are
:class:`~meshdesk.errors.CallError`, like every other failure of a call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshdesk.errors import CallError
from meshdesk.ops._registry import Topic
from meshdesk.ops._schema import Args, flag, text

if TYPE_CHECKING:
    from meshdesk.calls import CallManager

__all__ = ["CALL_OPS"]

CALL_OPS: Topic[CallManager] = Topic("call", "calls between nodes", error=CallError)

_CALL_ID = text("call_id", "the call", required=True)


@CALL_OPS.op(
    "call_start",
    "call a linked peer; returns the call object (state ringing)",
    text("peer", "the node to call (name, id or id prefix)", required=True),
    text("case", "the case the call is about (logged on it)"),
    flag("audio_only", "no video"),
    text("media", "device, synthetic or file:PATH (default: the node's [calls] media)"),
)
async def _start(calls: CallManager, args: Args) -> object:
    return await calls.start(
        args.text("peer"),
        case_id=args.maybe_text("case"),
        audio_only=args.flag("audio_only"),
        media=args.maybe_text("media"),
    )


@CALL_OPS.op(
    "call_answer",
    "accept or decline a ringing call",
    _CALL_ID,
    flag("accept", "true to accept, false to decline"),
)
async def _answer(calls: CallManager, args: Args) -> object:
    return await calls.answer(args.text("call_id"), args.flag("accept"))


@CALL_OPS.op(
    "call_invite",
    "invite another node into an active call",
    _CALL_ID,
    text("peer", "the node to invite", required=True),
)
async def _invite(calls: CallManager, args: Args) -> object:
    return await calls.invite(args.text("call_id"), args.text("peer"))


@CALL_OPS.op("call_hangup", "leave a call", _CALL_ID)
async def _hangup(calls: CallManager, args: Args) -> object:
    return await calls.hangup(args.text("call_id"))


@CALL_OPS.op(
    "call_mute",
    "mute or unmute this node's audio or video (null: unchanged)",
    _CALL_ID,
    flag("audio", default=None),
    flag("video", default=None),
)
async def _mute(calls: CallManager, args: Args) -> object:
    return await calls.mute(
        args.text("call_id"), args.maybe("audio", bool), args.maybe("video", bool)
    )


@CALL_OPS.op("calls", "every call this node knows, with live stats")
async def _calls(calls: CallManager, args: Args) -> object:
    return calls.calls()


@CALL_OPS.op(
    "call_preview",
    "the latest received video frame (160x120 RGB, base64) or null",
    _CALL_ID,
    text("node_id", "whose video (default: the first with a frame)"),
)
async def _preview(calls: CallManager, args: Args) -> object:
    return calls.preview(args.text("call_id"), args.maybe_text("node_id"))
