"""Real nodes for lab drills: a throw-away deployment and ``meshdesk run`` processes.

:func:`make_deployment` builds the scenario's deployment with the admin functions
the CLI uses (``deployment create`` on the first HQ node, ``deployment issue`` and
``init`` for every other node, with its role, site and departments) in a temporary
folder. Each home's config is set for drills: calls are answered automatically
with synthetic media, dials time out after 3 s and reconnect back-off is capped at
3 s so that a link the topology allows again is used within a few seconds, and
(:func:`set_static_peers`) every other node's lab address is a static peer.
A :class:`LabNode` is one ``meshdesk run`` on its lab host, in its own process
group (power loss is SIGKILL to the group), reached through its control socket (a
file, so reachable from outside the namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from meshdesk import admin, control
from meshdesk.drill._labnet import LabNet
from meshdesk.drill.model import NodeSpec
from meshdesk.errors import DrillError
from meshdesk.home import NodeHome
from meshdesk.identity import Role

__all__ = ["PORT", "LabNode", "make_deployment", "set_static_peers"]

PORT = 7420
#: Bound for a started node to answer on its control socket (no product limit).
START_TIMEOUT = 20.0
#: Drill homes: dial timeout and longest reconnect back-off, in seconds.
CONNECT_TIMEOUT = 3.0
RECONNECT_MAX = 3.0
STOP_GRACE = 5.0


def _drill_config(home: NodeHome) -> None:
    text = home.config_path.read_text(encoding="utf-8")
    for pattern, value in (
        (r"(?m)^auto_accept = .*$", "auto_accept = true"),
        (r'(?m)^media = "device"$', 'media = "synthetic"'),
        (r"(?m)^connect_timeout = .*$", f"connect_timeout = {CONNECT_TIMEOUT}"),
        (r"(?m)^reconnect_max = .*$", f"reconnect_max = {RECONNECT_MAX}"),
    ):
        text, n = re.subn(pattern, value, text, count=1)
        if n != 1:
            raise DrillError(f"cannot set {value!r} in {home.config_path}")
    home.config_path.write_text(text, encoding="utf-8")


async def make_deployment(
    root: Path, name: str, nodes: Sequence[NodeSpec], *, now: dt.datetime
) -> dict[str, NodeHome]:
    """A deployment of ``nodes`` under ``root``; every node's home by name."""
    hq = next((n for n in nodes if n.role == "hq"), None)
    if hq is None:
        raise DrillError("a lab drill needs an HQ node")
    homes = {hq.name: NodeHome(root / "hq-home")}
    await admin.create_deployment(
        homes[hq.name],
        deployment=f"drill {name}",
        node_name=hq.name,
        site=hq.site,
        departments=hq.departments,
        now=now,
    )
    for i, spec in enumerate(n for n in nodes if n is not hq):
        kit = root / f"node{i}.kit"
        await admin.issue_kit(
            homes[hq.name], name=spec.name, site=spec.site, role=Role(spec.role),
            departments=spec.departments, out=kit, passphrase=None, now=now,
        )  # fmt: skip
        home = homes[spec.name] = NodeHome(root / f"node{i}-home")
        await admin.provision(home, kit_path=kit, passphrase=None, expect_deployment=None, now=now)
    for home in homes.values():
        _drill_config(home)
    return homes


def set_static_peers(home: NodeHome, peers: Sequence[str]) -> None:
    """List ``peers`` (``"ADDR:PORT"``) as the home's static peers.

    mDNS stays on; but zeroconf asks the network again only with a growing back-off,
    so a peer that comes into reach minutes after start-up (a courier's visit, a
    host whose cable was pulled from the start) may not be found while it is there.
    The lab keeps every host's address for the whole drill, so static peers are
    dialled again within the reconnect back-off instead.
    """
    text = home.config_path.read_text(encoding="utf-8")
    listed = ", ".join(f'"{peer}"' for peer in peers)
    text, n = re.subn(r"(?m)^static_peers = .*$", f"static_peers = [{listed}]", text, count=1)
    if n != 1:
        raise DrillError(f"cannot set static_peers in {home.config_path}")
    home.config_path.write_text(text, encoding="utf-8")


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
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, net: LabNet) -> None:
        """Start ``meshdesk run`` on our host (output appended to our log)."""
        if self.alive:
            return
        self.starts += 1
        argv = [
            *_meshdesk(), "run", "--home", str(self.home.path), "--listen", f"0.0.0.0:{PORT}",
            "--interface", "eth0",
        ]  # fmt: skip
        log: TextIO
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- start {self.starts} on {net.prefix}-{self.host}\n")
            log.flush()
            self.proc = subprocess.Popen(
                net.exec_argv(self.host, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

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
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_GRACE)

    async def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after a grace period."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()

    async def call(
        self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 5.0
    ) -> Any:
        if not self.alive:
            raise control.NodeNotRunning(f"node {self.name} is not running")
        return await control.call(self.home.control_socket, op, args, wait=wait)
