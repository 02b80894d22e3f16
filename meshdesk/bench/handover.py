"""``meshdesk bench handover``: how long a relayed call goes quiet when its host goes.

Needs root: five ``meshdesk run`` nodes in a network lab (stem ``bh``), audio only,
synthetic media, auto-accepting. Each round ``a`` calls ``b`` and invites ``c``,
``d`` and ``e``: a star through ``a``. Then the host goes — it hangs up
(``--how leave``, the default) or its cable is cut (``--how vanish``: no goodbye;
the members notice the silence) — and the announced successor takes over; the four
left go back to a full mesh. Each member's ``handover_gap_ms`` is the time from
the last frame it received from the old host to the first from the new one (the
node measures it; the new host itself has none). A round's figure is its worst
member's gap.

The baseline, measured in the same lab after each round: what the members would
wait for without a handover — a fresh audio call dialled between two of them
(``call_start`` → the first audio frame, the caller node's ``setup_ms``), and that
only after someone noticed and dialled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.bench._discovery_lab import close_lab, find_lab, log_tail
from meshdesk.config import CallSettings, Config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.lab import Lab, LabProcess
from meshdesk.stats import percentile

__all__ = ["add_parser", "run"]

NAMES = ("a", "b", "c", "d", "e")
_PORT = 7420
#: Bounds (no product limit): linking, a star of five forming, a handover.
_LINK_LIMIT = 40.0
_STAR_LIMIT = 60.0
_HANDOVER_LIMIT = 20.0
_CONFIG = Config(calls=CallSettings(auto_accept=True, media="synthetic", playback="off"))

Say = Callable[[str], None]


def add_parser(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = benches.add_parser(
        "handover",
        help="a relayed call's gap when its host leaves or vanishes, beside a fresh call's "
        "setup (root; network lab)",
    )
    bench.add_argument("--rounds", type=int, default=10, help="handovers measured (default 10)")
    bench.add_argument(
        "--how", choices=("leave", "vanish"), default="leave",
        help="the host hangs up (leave) or its cable is cut (vanish)",
    )  # fmt: skip
    bench.add_argument("--lab", metavar="PATH", help="the lab script (default ./field-kit/lab)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=run)


class _Nodes:
    """The five nodes' homes and processes, read through their control sockets."""

    def __init__(self, homes: dict[str, NodeHome], procs: list[LabProcess]) -> None:
        self.homes = homes
        self.procs = procs

    def call(self, name: str, op: str, args: Mapping[str, Any] | None = None) -> Any:
        return asyncio.run(control.call(self.homes[name].control_socket, op, args, wait=5.0))

    def calls(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(name, "calls")
        return result

    def last(self, name: str) -> dict[str, Any]:
        calls = self.calls(name)
        return calls[-1] if calls else {}

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except MeshdeskError:
                pass  # a node busy for a moment: ask again
            for proc in self.procs:
                if proc.poll() is not None:
                    raise MeshdeskError(f"bench handover: {proc.name} exited while {what}:\n"
                                        f"{log_tail(proc.log)}")  # fmt: skip
            if time.monotonic() > deadline:
                raise MeshdeskError(f"bench handover: timed out after {timeout:g} s {what}")
            time.sleep(0.1)

    def linked(self) -> bool:
        for name in NAMES:
            peers = self.call(name, "peers")
            if sum(p["state"] == "linked" for p in peers) < len(NAMES) - 1:
                return False
        return True

    def idle(self, names: tuple[str, ...] = NAMES) -> bool:
        return all(c["state"] == "ended" for n in names for c in self.calls(n))


def _star(nodes: _Nodes) -> str:
    call_id: str = nodes.call("a", "call_start", {"peer": "b", "audio_only": True})["call_id"]
    nodes.wait("a-b connecting", lambda: nodes.last("a").get("state") == "active", 20)
    for name in NAMES[2:]:
        nodes.call("a", "call_invite", {"call_id": call_id, "peer": name})

        def joined(who: str = name) -> bool:
            return nodes.last(who).get("state") == "active"

        nodes.wait(f"{name} joining", joined, 20)

    def star() -> bool:
        for name in NAMES:
            view = nodes.last(name)
            states = {p["state"] for p in view["participants"]}
            if not view["relayed"] or states != {"connected"}:
                return False
            if view["stats"]["audio_sources"] != len(NAMES) - 1:
                return False
        return True

    nodes.wait("a star of five forming", star, _STAR_LIMIT)
    return call_id


def _round(nodes: _Nodes, lab: Lab, how: str) -> tuple[list[float], float]:
    """One handover: each member's gap (ms), and a fresh call's setup (ms) after it."""
    call_id = _star(nodes)
    successor = nodes.last("a")["successors"][0]
    rest = NAMES[1:]
    if how == "leave":
        nodes.call("a", "call_hangup", {"call_id": call_id})
    else:
        lab.cut("h1")

    def gaps_in() -> bool:
        views = [nodes.last(n) for n in rest]
        members = [v for v in views if v["host"] == successor and v["participants"][0]["node_id"]
                   != successor]  # fmt: skip
        return len(members) == len(rest) - 1 and all(
            v["stats"]["handover_gap_ms"] is not None for v in members
        )

    nodes.wait("the members hearing the new host", gaps_in, _HANDOVER_LIMIT)
    gaps = [
        float(v["stats"]["handover_gap_ms"])
        for v in (nodes.last(n) for n in rest)
        if v["stats"]["handover_gap_ms"] is not None
    ]
    for name in rest:
        if nodes.last(name).get("state") != "ended":
            nodes.call(name, "call_hangup", {"call_id": call_id})
    if how == "vanish":
        lab.restore("h1")
        nodes.wait("the host's call ending", lambda: nodes.idle(("a",)), 30)
        nodes.wait("relinking", nodes.linked, _LINK_LIMIT)
    nodes.wait("hanging up", nodes.idle, 15)
    # The baseline: a fresh audio call between two members.
    fresh = nodes.call("b", "call_start", {"peer": "c", "audio_only": True})
    nodes.wait("a fresh call", lambda: nodes.last("b")["stats"]["setup_ms"] is not None, 20)
    setup = float(nodes.last("b")["stats"]["setup_ms"])
    nodes.call("b", "call_hangup", {"call_id": fresh["call_id"]})
    nodes.wait("hanging up", nodes.idle, 15)
    time.sleep(0.3)  # let the legs' sockets close before the next ring
    return gaps, setup


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if os.geteuid() != 0:
        raise MeshdeskError("bench handover needs root: it makes network namespaces")
    if args.rounds < 1:
        raise MeshdeskError("--rounds must be at least 1")
    script = find_lab(args.lab, env, what="handover")

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr)

    worst: list[float] = []
    every: list[float] = []
    setups: list[float] = []
    with tempfile.TemporaryDirectory(prefix="meshdesk-bench-handover-") as folder:
        specs = [HomeSpec(n, Role.HQ if n == "a" else Role.CENTER, config=_CONFIG) for n in NAMES]
        deployment = asyncio.run(build_deployment(Path(folder) / "nodes", "bench handover", specs))
        lab = Lab(len(NAMES), stem="bh", script=script, log_dir=Path(folder) / "logs")
        lab.open()
        try:
            procs = []
            for index, name in enumerate(NAMES):
                host = f"h{index + 1}"
                argv = [sys.executable, "-m", "meshdesk", "run", "--home",
                        str(deployment.homes[name].path), "--listen", f"0.0.0.0:{_PORT}",
                        "--interface", lab.host(host).iface]  # fmt: skip
                procs.append(lab.popen(host, argv, name=name))
            nodes = _Nodes(dict(deployment.homes), procs)
            nodes.wait("linking", nodes.linked, _LINK_LIMIT)
            for index in range(args.rounds):
                gaps, setup = _round(nodes, lab, args.how)
                worst.append(max(gaps))
                every.extend(gaps)
                setups.append(setup)
                shown = ", ".join(f"{g:.0f}" for g in gaps)
                say(f"round {index + 1}/{args.rounds}: gaps {shown} ms (worst {max(gaps):.0f});"
                    f" a fresh call's setup {setup:.0f} ms")  # fmt: skip
        finally:
            lab.stop_processes()
            close_lab(lab, say)
    report = {
        "how": args.how,
        "rounds": args.rounds,
        "handover_gap_ms_p50": round(percentile(worst, 50), 1),
        "handover_gap_ms_p95": round(percentile(worst, 95), 1),
        "member_gap_ms_p50": round(percentile(every, 50), 1),
        "fresh_call_setup_ms_p50": round(percentile(setups, 50), 1),
        "handover_gap_ms": [round(g, 1) for g in worst],
        "member_gap_ms": [round(g, 1) for g in every],
        "fresh_call_setup_ms": [round(s, 1) for s in setups],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"handover ({args.how}), worst member's gap  p50 {report['handover_gap_ms_p50']} ms"
              f"   p95 {report['handover_gap_ms_p95']} ms   (every member: p50 "
              f"{report['member_gap_ms_p50']} ms)")  # fmt: skip
        print(f"baseline: a fresh call's setup   p50 {report['fresh_call_setup_ms_p50']} ms "
              "(without a handover the call ends, and someone must dial again)")  # fmt: skip
    return 0
