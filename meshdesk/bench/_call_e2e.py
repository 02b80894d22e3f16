"""The end-to-end half of ``meshdesk bench call``: a real call between two real nodes.

Two provisioned nodes run ``meshdesk run`` in lab hosts h1 and h2 (synthetic media,
the callee auto-accepting, playback off), linked as in the field. Each round the
bench subscribes to the caller's ``call`` events, sends ``call_start`` over the
control socket and stops the clock at the first call event that carries a
``setup_ms`` — the caller's first remote video frame. The figure therefore counts
everything an operator waits for: the control socket, the ring over the link,
the callee's accept, ICE and DTLS, the first keyframe, and the event back.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.bench._discovery_lab import log_tail
from meshdesk.config import CallSettings, Config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import MeshdeskError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.lab import Lab, LabProcess

__all__ = ["measure_end_to_end"]

_PORT = 7420
#: Bounds (no product limit): start-up and linking, one setup, one hang-up.
_LINK_LIMIT = 30.0
_SETUP_LIMIT = 20.0
#: Both nodes answer at once with synthetic media and never play audio.
_CONFIG = Config(calls=CallSettings(auto_accept=True, media="synthetic", playback="off"))


async def _deployment(root: Path) -> list[tuple[NodeHome, str]]:
    specs = [HomeSpec("caller", Role.HQ, config=_CONFIG), HomeSpec("callee", config=_CONFIG)]
    deployment = await build_deployment(root, "bench call", specs)
    return [(deployment.homes[n], deployment.node_id(n)) for n in ("caller", "callee")]


def _wait(what: str, check: Any, procs: list[LabProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                raise MeshdeskError(f"bench call: {proc.name} exited while {what}:\n"
                                    f"{log_tail(proc.log)}")  # fmt: skip
        if time.monotonic() > deadline:
            raise MeshdeskError(f"bench call: timed out after {timeout:g} s {what}")
        time.sleep(0.1)


def _linked(home: NodeHome, other: str) -> bool:
    try:
        peers = asyncio.run(control.call(home.control_socket, "peers", wait=2.0))
    except MeshdeskError:
        return False
    return any(p["node_id"] == other and p["state"] == "linked" for p in peers)


def _idle(home: NodeHome) -> bool:
    calls = asyncio.run(control.call(home.control_socket, "calls", wait=2.0))
    return all(c["state"] == "ended" for c in calls)


async def _one_setup(caller: NodeHome, callee_id: str) -> tuple[float, float]:
    """(ms from ``call_start`` sent to the first video event, the node's own setup_ms)."""
    sock = caller.control_socket
    async with control.subscribe(sock, ["call"]) as events:
        start = time.monotonic()
        call = await control.call(sock, "call_start", {"peer": callee_id, "media": "synthetic"})
        try:
            async with asyncio.timeout(_SETUP_LIMIT):
                async for event in events:
                    stats = event.data.get("stats")
                    if event.data.get("call_id") != call["call_id"] or not isinstance(stats, dict):
                        continue
                    if event.data.get("state") == "ended":
                        raise MeshdeskError(f"bench call: the call ended: {event.data['reason']}")
                    if stats.get("setup_ms") is not None:
                        return (time.monotonic() - start) * 1000, float(stats["setup_ms"])
        except TimeoutError:
            raise MeshdeskError(f"bench call: no video within {_SETUP_LIMIT:g} s") from None
        finally:
            await control.call(sock, "call_hangup", {"call_id": call["call_id"]})
    raise MeshdeskError("bench call: the event stream ended")


def measure_end_to_end(lab: Lab, folder: Path, rounds: int, say: Any) -> dict[str, Any]:
    """Start two nodes in h1 and h2, place ``rounds`` calls; the setup figures."""
    (caller, caller_id), (callee, callee_id) = asyncio.run(_deployment(folder / "nodes"))
    procs = []
    for host, home in (("h1", caller), ("h2", callee)):
        argv = [sys.executable, "-m", "meshdesk", "run", "--home", str(home.path),
                "--listen", f"0.0.0.0:{_PORT}", "--interface", lab.host(host).iface]  # fmt: skip
        procs.append(lab.popen(host, argv, name=home.path.name))
    _wait("linking", lambda: _linked(caller, callee_id) and _linked(callee, caller_id), procs,
          _LINK_LIMIT)  # fmt: skip
    setups: list[float] = []
    inside: list[float] = []
    for index in range(rounds):
        total, node = asyncio.run(_one_setup(caller, callee_id))
        setups.append(total)
        inside.append(node)
        say(f"end to end {index + 1}/{rounds}: {total:.1f} ms (node's own figure {node} ms)")
        _wait("hanging up", lambda: _idle(caller) and _idle(callee), procs, 10.0)
        time.sleep(0.3)  # let the legs' sockets close before the next ring
    return {
        "setup_ms_p50": round(statistics.median(setups), 1),
        "setup_ms": [round(s, 1) for s in setups],
        "node_setup_ms": inside,
    }
