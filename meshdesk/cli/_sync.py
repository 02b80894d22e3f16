"""``meshdesk sync``: how far replication with each linked peer has come.

Without ``--watch`` it prints the running node's ``sync`` answer once. With
``--watch`` it follows the node's ``sync`` events (published at most twice a second,
when something moved) and prints one line per peer each time: events received and
sent, what is still to come, the rate and the time left, until every link is caught
up (then it says so and exits 0) or Ctrl-C. A node joining an HQ that holds a
million cases shows its progress this way, as the console's sync bars do.

:class:`Progress` is the arithmetic (pure: timestamps come in with the snapshots).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshdesk import control
from meshdesk.home import NodeHome

__all__ = ["Progress", "add_sync_parser"]

Env = Mapping[str, str]


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Progress:
    """Rates per peer from successive ``sync`` snapshots (events moved per second)."""

    #: Seconds of history a rate is measured over.
    window_s: float = 10.0
    _seen: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def lines(self, peers: Sequence[Mapping[str, Any]], at_s: float) -> list[str]:
        """One line per peer for the snapshot taken at ``at_s`` seconds."""
        out = []
        for peer in peers:
            node = str(peer.get("node_id", ""))
            received, sent = _count(peer.get("received_events")), _count(peer.get("sent_events"))
            inbox, outbox = _count(peer.get("inbox")), peer.get("outbox")
            history = self._seen.setdefault(node, [])
            history.append((at_s, received + sent))
            while len(history) > 2 and at_s - history[1][0] >= self.window_s:
                history.pop(0)
            (t0, n0), (t1, n1) = history[0], history[-1]
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
            left = inbox + _count(outbox)
            name = f"{peer.get('name') or node} @ {peer.get('site') or '-'}"
            if outbox is None:
                state = "comparing what each side holds…"
            elif not left:
                state = "caught up"
            else:
                eta = f", about {_duration(left / rate)} left" if rate > 0 else ""
                state = f"{left:,} to go ({inbox:,} to receive, {_count(outbox):,} to send){eta}"
            out.append(
                f"{name}: received {received:,}, sent {sent:,}; {state}"
                + (f"; {rate:,.0f} events/s" if rate > 0 and left else "")
            )
        return out

    @staticmethod
    def caught_up(peers: Sequence[Mapping[str, Any]]) -> bool:
        """Every link knows the other side's heads and has nothing left either way."""
        return bool(peers) and all(
            p.get("outbox") == 0 and _count(p.get("inbox")) == 0 and p.get("idle") for p in peers
        )


def add_sync_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "sync", help="replication progress with each linked peer (--watch to follow it)"
    )
    parser.add_argument("--home", metavar="DIR", help="node home (default: $MESHDESK_HOME, ...)")
    parser.add_argument(
        "--watch", action="store_true", help="follow progress until caught up (Ctrl-C stops)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one object per update)")
    parser.set_defaults(handler=run_sync_command)


def run_sync_command(args: argparse.Namespace, env: Env) -> int:
    home = NodeHome.resolve(args.home, env)
    home.require_provisioned()
    if args.watch:
        return asyncio.run(_watch(home, as_json=args.json))
    peers = asyncio.run(control.call(home.control_socket, "sync"))
    if args.json:
        print(json.dumps(peers, ensure_ascii=False, indent=2))
    elif not peers:
        print("No linked peer.")
    else:
        print("\n".join(Progress().lines(peers, 0.0)))
    return 0


async def _watch(home: NodeHome, *, as_json: bool) -> int:
    progress = Progress()
    first = await control.call(home.control_socket, "sync")
    _show(progress, first, time.time(), as_json)  # events carry the node's wall time too
    if Progress.caught_up(first):
        print("Caught up with every linked peer.")
        return 0
    async with control.subscribe(home.control_socket, ["sync"]) as events:
        async for event in events:
            peers = event.data.get("peers")
            if not isinstance(peers, list):
                continue
            _show(progress, peers, event.ts_ms / 1000, as_json)
            if Progress.caught_up(peers):
                if not as_json:
                    print("Caught up with every linked peer.")
                return 0
    return 0


def _show(progress: Progress, peers: list[dict[str, Any]], at_s: float, as_json: bool) -> None:
    lines = progress.lines(peers, at_s)
    if as_json:
        print(json.dumps({"at_s": round(at_s, 3), "peers": peers}, ensure_ascii=False), flush=True)
    elif lines:
        print("\n".join(lines), flush=True)
    else:
        print("No linked peer yet; waiting…", flush=True)
