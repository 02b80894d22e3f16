"""``meshdesk call NODE``: a headless call placed through the running node."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from meshdesk import control
from meshdesk.calls.media import parse_media
from meshdesk.cli._output import print_fields
from meshdesk.errors import CallError, MeshdeskError
from meshdesk.home import NodeHome

__all__ = ["add_call_parser", "place_call"]

Env = Mapping[str, str]

#: How long a call may take to connect before the CLI gives up on it.
CONNECT_WAIT = 30.0
POLL = 0.2


def add_call_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    call = commands.add_parser("call", help="place a call through the running node")
    call.add_argument("node", metavar="NODE", help="the node to call (name or id)")
    call.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
    call.add_argument("--case", metavar="ID", help="the case the call is about (logged on it)")
    call.add_argument("--audio-only", action="store_true", help="no video")
    call.add_argument(
        "--duration", type=float, default=10.0, metavar="S", help="hang up after S seconds"
    )
    call.add_argument(
        "--media",
        default="device",
        metavar="SOURCE",
        help="device (camera + microphone), synthetic (test pattern + tone) or file:PATH",
    )
    call.add_argument("--json", action="store_true", help="print the final call object as JSON")
    call.set_defaults(handler=place_call)


async def _place(path: Any, args: argparse.Namespace) -> dict[str, Any]:
    started = await control.call(
        path,
        "call_start",
        {"peer": args.node, "case": args.case, "audio_only": args.audio_only, "media": args.media},
    )
    call_id = started["call_id"]
    call: dict[str, Any] = started
    try:
        deadline = time.monotonic() + CONNECT_WAIT
        while call["state"] in ("ringing", "connecting"):
            if time.monotonic() > deadline:
                raise CallError(f"the call did not connect within {CONNECT_WAIT:g} s")
            await asyncio.sleep(POLL)
            call = _find(await control.call(path, "calls"), call_id)
        end = time.monotonic() + args.duration
        while call["state"] != "ended" and time.monotonic() < end:
            await asyncio.sleep(min(POLL, max(end - time.monotonic(), 0)))
            call = _find(await control.call(path, "calls"), call_id)
    finally:
        if call["state"] != "ended":
            call = await control.call(path, "call_hangup", {"call_id": call_id})
    return call


def _find(calls: list[dict[str, Any]], call_id: str) -> dict[str, Any]:
    for call in calls:
        if call["call_id"] == call_id:
            return call
    raise MeshdeskError(f"the node forgot call {call_id}")


def place_call(args: argparse.Namespace, env: Env) -> int:
    if args.duration < 0:
        raise CallError("--duration must not be negative")
    parse_media(args.media)
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    call = asyncio.run(_place(home.control_socket, args))
    stats = call["stats"]
    if args.json:
        print(json.dumps({**call, **stats}, ensure_ascii=False, indent=2))
    else:
        others = call["participants"]
        print(f"call {call['call_id']}: {call['state']} ({call['reason'] or '-'})")
        print_fields(
            [
                ("participants", ", ".join(f"{p['name']} ({p['state']})" for p in others)),
                ("setup", f"{stats['setup_ms']} ms" if stats["setup_ms"] is not None else "-"),
                ("video sent", str(stats["video_frames_sent"])),
                ("video received", str(stats["video_frames_received"])),
                ("audio received", str(stats["audio_frames_received"])),
                ("rtt", f"{stats['rtt_ms']} ms" if stats["rtt_ms"] is not None else "-"),
                ("degraded", "yes (audio only)" if call["degraded"] else "no"),
            ]
        )
    if not (stats["video_frames_received"] or stats["audio_frames_received"]):
        raise CallError(f"the call carried no media ({call['reason'] or 'no reason given'})")
    return 0
