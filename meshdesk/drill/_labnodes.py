"""Real nodes for lab drills: a throw-away deployment and ``meshdesk run`` processes.

:func:`make_deployment` builds the scenario's deployment with the deployment builder
(:func:`meshdesk.deploy.build_deployment`: ``deployment create`` on the first HQ
node, ``deployment issue`` and ``init`` for every other node, with its role, site and
departments) in a temporary folder. Each home's config is set for drills: calls are
answered automatically with synthetic media, dials time out after 3 s and reconnect
back-off is capped at 3 s so that a link the topology allows again is used within a
few seconds, and (:func:`set_static_peers`) every other node's lab address is a
static peer. A :class:`LabNode` is one ``meshdesk run`` on its lab host, in its own
process group (power loss is SIGKILL to the group), reached through its control
socket (a file, so reachable from outside the namespace).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshdesk import control
from meshdesk.config import CallSettings, Config, Timings, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.drill._labnet import LabNet
from meshdesk.drill.model import NodeSpec
from meshdesk.errors import DrillError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.lab import LabProcess

__all__ = ["DRILL_CONFIG", "PORT", "LabNode", "make_deployment", "set_static_peers"]

PORT = 7420
#: Bound for a started node to answer on its control socket (no product limit).
START_TIMEOUT = 20.0
#: Drill homes: dial timeout and longest reconnect back-off, in seconds.
CONNECT_TIMEOUT = 3.0
RECONNECT_MAX = 3.0
STOP_GRACE = 5.0
#: Every drill home's config (static peers are added once the lab is up).
DRILL_CONFIG = Config(
    calls=CallSettings(auto_accept=True, media="synthetic"),
    timings=Timings(connect_timeout=CONNECT_TIMEOUT, reconnect_max=RECONNECT_MAX),
)


async def make_deployment(
    root: Path, name: str, nodes: Sequence[NodeSpec], *, now: dt.datetime
) -> dict[str, NodeHome]:
    """A deployment of ``nodes`` under ``root``; every node's home by name."""
    hq = next((n for n in nodes if n.role == "hq"), None)
    if hq is None:
        raise DrillError("a lab drill needs an HQ node")
    others = [n for n in nodes if n is not hq]
    folders = {hq.name: "hq-home"} | {n.name: f"node{i}-home" for i, n in enumerate(others)}
    specs = [
        HomeSpec(n.name, Role(n.role), n.site, n.departments, DRILL_CONFIG, folders[n.name])
        for n in (hq, *others)
    ]
    deployment = await build_deployment(root, f"drill {name}", specs, now=now)
    return dict(deployment.homes)


def set_static_peers(home: NodeHome, peers: Sequence[str]) -> None:
    """List ``peers`` (``"ADDR:PORT"``) as the home's static peers.

    mDNS stays on; but zeroconf asks the network again only with a growing back-off,
    so a peer that comes into reach minutes after start-up (a courier's visit, a
    host whose cable was pulled from the start) may not be found while it is there.
    The lab keeps every host's address for the whole drill, so static peers are
    dialled again within the reconnect back-off instead.
    """
    home.write_config(load_config(home.config_path).with_overrides(static_peers=peers))


def _meshdesk() -> list[str]:
    script = Path(sys.executable).parent / "meshdesk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "meshdesk"]


class LabNode:
    """One scenario node: its home, its lab host and (while powered) its process."""

    def __init__(self, spec: NodeSpec, home: NodeHome, host: str, log_dir: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.home = home
        self.host = host
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: LabProcess | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    def start(self, net: LabNet) -> None:
        """Start ``meshdesk run`` on our host (output appended to our log)."""
        if self.alive:
            return
        self.starts += 1
        argv = [
            *_meshdesk(), "run", "--home", str(self.home.path), "--listen", f"0.0.0.0:{PORT}",
            "--interface", "eth0",
        ]  # fmt: skip
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- start {self.starts} on {net.prefix}-{self.host}\n")
        self.proc = net.popen(self.host, argv, name=self.name, log=self.log_path)

    async def wait_ready(self, within: float = START_TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if not self.alive:
                raise DrillError(f"node {self.name} exited at start; see {self.log_path}")
            try:
                await self.call("status", wait=2.0)
                return
            except control.NodeNotRunning:
                if loop.time() > deadline:
                    raise DrillError(
                        f"node {self.name} did not answer within {within:g} s; see {self.log_path}"
                    ) from None
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        """Power loss: SIGKILL the process group, no goodbye, no clean close."""
        if self.proc is not None:
            self.proc.kill(timeout=STOP_GRACE)

    async def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after a grace period."""
        if self.proc is not None and self.proc.alive:
            await asyncio.to_thread(self.proc.stop, STOP_GRACE)

    async def call(
        self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 5.0
    ) -> Any:
        if not self.alive:
            raise control.NodeNotRunning(f"node {self.name} is not running")
        return await control.call(self.home.control_socket, op, args, wait=wait)
