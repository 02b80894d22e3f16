"""The nodes of a lab drill and the network between them, behind one small seam.

:class:`Fleet` is what the lab engine (:mod:`~meshdesk.drill.lab`) needs from real
nodes: start them on a network wired as a set of allowed node pairs, rewire it,
impair links, switch a node's power, revoke a node at HQ, and each node's control
socket. :class:`LabFleet` is the real one: a throw-away deployment
(:mod:`~meshdesk.drill._labnodes`) and one ``field-kit/lab`` LAN with a host per
node (:mod:`~meshdesk.drill._labnet`) — the only module of the drill that uses
those two. Tests put a fake fleet in its place.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Protocol

from meshdesk import admin
from meshdesk.drill._labnet import LabNet, lab_problems, new_prefix
from meshdesk.drill._labnodes import PORT, LabNode, make_deployment, set_static_peers
from meshdesk.drill._labops import ControlNode
from meshdesk.drill.model import Scenario
from meshdesk.drill.world import Pair

__all__ = ["Fleet", "LabFleet", "lab_problems"]


class Fleet(Protocol):
    """The real nodes of one lab drill, by scenario node name."""

    @property
    def prefix(self) -> str:
        """The lab's name (for the report)."""
        ...

    @property
    def nodes(self) -> Mapping[str, ControlNode]: ...

    async def start(self, pairs: Collection[Pair]) -> None:
        """Make the nodes, wire the network as ``pairs`` allow, start every node.

        Returns once every node answers on its control socket.
        """

    async def aclose(self) -> None:
        """Stop every node and take the network down (idempotent; after a failed start too)."""

    async def wire(self, pairs: Collection[Pair]) -> None:
        """Only ``pairs`` (node names) may exchange frames from now on."""

    async def impair(self, nodes: Collection[str], loss: float, latency: float) -> bool:
        """Loss (0..1) and latency (s) on the hosts of ``nodes``; False if latency could
        not be applied (the kernel lacks sch_netem; the loss was)."""
        ...

    async def clear_impairments(self) -> None: ...

    async def power(self, node: str, on: bool) -> None:
        """Power loss (SIGKILL, no goodbye) or power back (the same home starts again)."""

    async def revoke(self, node: str, reason: str) -> None:
        """Revoke ``node`` in the HQ home's deployment (``deployment revoke``)."""


class LabFleet:
    """Real ``meshdesk run`` processes of ``scenario`` in a fresh network lab."""

    def __init__(self, scenario: Scenario, log_dir: Path) -> None:
        self._scenario = scenario
        self._log_dir = log_dir
        self._net = LabNet(new_prefix(), len(scenario.nodes))
        self._hosts = {spec.name: f"h{i}" for i, spec in enumerate(scenario.nodes, 1)}
        self._nodes: dict[str, LabNode] = {}
        self._work: Path | None = None

    @property
    def prefix(self) -> str:
        return self._net.prefix

    @property
    def nodes(self) -> Mapping[str, LabNode]:
        return self._nodes

    async def start(self, pairs: Collection[Pair]) -> None:
        sc = self._scenario
        self._work = Path(tempfile.mkdtemp(prefix="meshdesk-drill-"))
        homes = await make_deployment(self._work, sc.name, sc.nodes, now=dt.datetime.now(dt.UTC))
        for spec in sc.nodes:
            home = homes[spec.name]
            self._nodes[spec.name] = LabNode(spec, home, self._hosts[spec.name], self._log_dir)
        await self._net.up()
        for node in self._nodes.values():
            others = [n for n in self._nodes.values() if n is not node]
            set_static_peers(node.home, [f"{self._net.addresses[n.host]}:{PORT}" for n in others])
        await self.wire(pairs)
        for node in self._nodes.values():
            node.start(self._net)
        for node in self._nodes.values():
            await node.wait_ready()

    async def aclose(self) -> None:
        try:
            for node in self._nodes.values():
                await node.stop()
        finally:
            try:
                await self._net.down()
            finally:
                if self._work is not None:
                    shutil.rmtree(self._work, ignore_errors=True)
                    self._work = None

    async def wire(self, pairs: Collection[Pair]) -> None:
        await self._net.wire({(self._hosts[a], self._hosts[b]) for a, b in pairs})

    async def impair(self, nodes: Collection[str], loss: float, latency: float) -> bool:
        applied = True
        for name in nodes:
            applied = await self._net.impair(self._hosts[name], loss * 100, latency * 1000) and (
                applied
            )
        return applied

    async def clear_impairments(self) -> None:
        await self._net.clear_impairments()

    async def power(self, node: str, on: bool) -> None:
        lab_node = self._nodes[node]
        if lab_node.alive == on:
            return
        if not on:
            lab_node.kill()
            return
        lab_node.start(self._net)
        await lab_node.wait_ready()

    async def revoke(self, node: str, reason: str) -> None:
        hq = self._nodes[self._scenario.hq_nodes[0].name]
        await admin.revoke_node(hq.home, node, reason=reason, now=dt.datetime.now(dt.UTC))
