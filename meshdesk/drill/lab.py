"""Lab mode: play a scenario with real ``meshdesk run`` processes in network namespaces.

A temporary deployment is made (:mod:`meshdesk.drill._labnodes`), one
``field-kit/lab`` LAN with a host per node comes up (:mod:`meshdesk.drill._labnet`),
the network is wired as the topology says at time 0, and every node starts. The
timeline is then played in wall time — ``wall = scenario time × time_scale`` (the
scenario's real seconds per scenario second):

- link down/up, courier visits: the allowed host pairs are recomputed and the lab
  rewired (``lab cut``/``restore`` for a host with no peer, an nftables pair filter
  in the switch for the rest);
- loss on a link: ``lab netem --loss`` on the hosts of both sites; latency where
  the kernel has sch_netem, otherwise a note in the report;
- power loss: SIGKILL to the node's process group; power back: the same home
  starts again;
- consultations: seeded Poisson arrivals, each a control op ``case new`` on a
  powered node of the site (a site with none records them when power returns);
- calls: ``call_start`` (audio only, synthetic media) from a node of the caller
  site to one of the callee site, ``call_invite`` for a joining department or site,
  ``call_hangup`` after the duration; completed = connected at hang-up time;
- revocation: ``deployment revoke`` on the HQ home, then ``reload_revocations`` on
  HQ; the stolen node keeps writing, and its later cases must reach no one;
- conflicts (:mod:`meshdesk.drill._labconflicts`): the first time a consulting site
  is cut off from HQ while both hold a case, ``case set`` urgency on both sides at
  once; HQ sees the conflict on a poll and resolves it a scenario minute later.

Every home lists the other nodes' lab addresses as static peers (see
:func:`~meshdesk.drill._labnodes.set_static_peers`). A lab drill refuses more than
:data:`LAB_NODE_MAX` nodes and warns above :data:`LAB_NODE_WARN`.

A poller reads every node about once a second (``case list``, ``digest``,
``peers``, ``sync``) into :mod:`meshdesk.drill.labmetrics`. After the end, faults
are healed and polling continues until the stores are equal and idle (or the drain
time, at least :data:`MIN_DRAIN_S` wall seconds, is over); then the final check,
the nodes stop and the lab is torn down — on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import heapq
import itertools
import logging
import random
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from meshdesk import admin, control
from meshdesk.drill._labcalls import LabCalls
from meshdesk.drill._labconflicts import LabConflicts
from meshdesk.drill._labnet import LabNet, lab_problems, new_prefix
from meshdesk.drill._labnodes import PORT, LabNode, make_deployment, set_static_peers
from meshdesk.drill.labmetrics import NodeView, Snapshot, final_check, observe, quiet
from meshdesk.drill.metrics import CaseRecord, Recorder
from meshdesk.drill.model import (
    Action,
    Call,
    CallJoin,
    Consultations,
    Courier,
    LinkChange,
    LinkQuality,
    Power,
    Revoke,
    Scenario,
    edge,
)
from meshdesk.drill.sim import Progress
from meshdesk.errors import DrillError, MeshdeskError

__all__ = ["LAB_NODE_MAX", "LAB_NODE_WARN", "MIN_DRAIN_S", "POLL_S", "LabDrill", "play_lab"]

log = logging.getLogger(__name__)

#: Wall seconds between polls of the nodes.
POLL_S = 1.0
#: Real nodes need real seconds to notice restored links and reconnect.
MIN_DRAIN_S = 45.0
#: Wall seconds to wait at the start for the nodes the topology joins to link.
LINK_TIMEOUT_S = 30.0
#: Each lab node is a whole ``meshdesk run`` (~140 MB resident, CPU for TLS, sync and
#: polling). Above LAB_NODE_WARN nodes a lab drill warns; above LAB_NODE_MAX it
#: refuses (measured on 2 cores: docs/BENCHMARKS.md, "Drills (lab mode)").
LAB_NODE_WARN = 12
LAB_NODE_MAX = 24

Step = Callable[[], Awaitable[None]]


def _pending(count: object) -> int:
    """A link's outbox or inbox count; unknown (None: heads not yet exchanged) is 1.

    An unknown count is not an idle link, so a drain never ends on one.
    """
    if count is None:
        return 1
    if isinstance(count, int):
        return count
    raise DrillError(f"a node reported a sync count {count!r}")


class LabDrill:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        log_dir: Path,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.sc = scenario
        self.rng = random.Random(f"workload-{seed}")
        self.rec = Recorder(scenario.sites)
        self.log_dir = log_dir
        self._progress = progress
        self.net = LabNet(new_prefix(), len(scenario.nodes))
        self.nodes: dict[str, LabNode] = {}
        self.hosts = {spec.name: f"h{i}" for i, spec in enumerate(scenario.nodes, 1)}
        self.up = set(scenario.edges)
        self.courier: dict[str, str] = {}
        self.revoked: dict[str, float] = {}
        self.deferred: dict[str, int] = {}
        self.draining = False
        self._queue: list[tuple[float, int, Step]] = []
        self._order = itertools.count()
        self._t0 = 0.0
        self._latency_noted = False
        self.last = Snapshot(0.0)
        self._poller: asyncio.Task[None] | None = None
        self.calls = LabCalls(self.rec, self.nodes, self.revoked, now=self.now, schedule=self.at)
        self.conflicts = LabConflicts(
            self.rec,
            random.Random(f"conflicts-{seed}"),
            now=self.now,
            hq=self._hq_node,
            schedule=self.at,
            nodes=self.nodes,
            writing={a.site for a in scenario.timeline if isinstance(a, Consultations)}
            - {n.site for n in scenario.hq_nodes},
        )

    # -- time ----------------------------------------------------------------------------

    def now(self) -> float:
        """Scenario seconds since the drill started."""
        return (asyncio.get_running_loop().time() - self._t0) / self.sc.time_scale

    def at(self, t: float, step: Step) -> None:
        heapq.heappush(self._queue, (t, next(self._order), step))

    # -- the whole run -------------------------------------------------------------------

    async def run(self) -> Recorder:
        work = Path(tempfile.mkdtemp(prefix="meshdesk-drill-"))
        try:
            homes = await make_deployment(
                work, self.sc.name, self.sc.nodes, now=dt.datetime.now(dt.UTC)
            )
            for spec in self.sc.nodes:  # shared with self.calls: fill, do not replace
                home = homes[spec.name]
                self.nodes[spec.name] = LabNode(spec, home, self.hosts[spec.name], self.log_dir)
            await self.net.up()
            for node in self.nodes.values():
                others = [n for n in self.nodes.values() if n is not node]
                set_static_peers(
                    node.home, [f"{self.net.addresses[n.host]}:{PORT}" for n in others]
                )
            await self._rewire()
            for node in self.nodes.values():
                node.start(self.net)
            for node in self.nodes.values():
                await node.wait_ready()
            await self._wait_linked()
            await self._play()
            return self.rec
        finally:
            await self._teardown(work)

    async def _teardown(self, work: Path) -> None:
        try:
            for node in self.nodes.values():
                await node.stop()
        finally:
            try:
                await self.net.down()
            finally:
                shutil.rmtree(work, ignore_errors=True)

    async def _wait_linked(self) -> None:
        """Wait until every pair the topology joins shows ``linked`` both ways."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINK_TIMEOUT_S
        want = self._node_pairs()
        while True:
            linked = await self._linked_pairs()
            if want <= linked:
                return
            if loop.time() > deadline:
                missing = ", ".join(f"{a}-{b}" for a, b in sorted(want - linked))
                raise DrillError(f"lab nodes did not link within {LINK_TIMEOUT_S:g} s: {missing}")
            await asyncio.sleep(0.5)

    async def _linked_pairs(self) -> set[tuple[str, str]]:
        pairs = set()
        for node in self.nodes.values():
            peers = await node.call("peers")
            for peer in peers:
                if peer.get("state") == "linked" and peer.get("name") in self.nodes:
                    pairs.add((node.name, peer["name"]))
        return {edge(a, b) for a, b in pairs if (b, a) in pairs}

    async def _play(self) -> None:
        sc = self.sc
        for action in sc.timeline:
            self.at(action.at, functools.partial(self._act, action))
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        poller = self._poller = asyncio.create_task(self._poll_loop(), name="drill-poller")
        try:
            while True:
                await self._run_due(sc.duration)
                if self.now() >= sc.duration:
                    break
                due = min(self._queue[0][0] if self._queue else sc.duration, sc.duration)
                # Steps may be queued meanwhile (a conflict to resolve): wake at least each poll.
                await asyncio.sleep(min(max(due - self.now(), 0.0) * sc.time_scale, POLL_S))
            self.rec.end_s = sc.duration
            await self._heal()
            drain_wall = max(sc.drain * sc.time_scale, MIN_DRAIN_S)
            deadline = loop.time() + drain_wall
            drained = False
            while loop.time() < deadline:
                await self._run_due(self.now())
                await asyncio.sleep(POLL_S)
                if not self.conflicts.busy and quiet(self.rec, sc, self.last, self.revoked):
                    drained = True
                    break
            self.rec.drained_s = self.now() - sc.duration
            if not drained:
                self.rec.notes.append(
                    f"replication was still busy {drain_wall:g} wall seconds after the end"
                )
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        final = await self._snapshot()
        self._observe(final, "drain")
        final_check(self.rec, sc, final, self.revoked)
        if self.deferred:
            self.rec.notes.append(
                f"consultations never recorded (site without power): {self.deferred}"
            )
        self.rec.notes.append(
            f"lab mode: {len(self.nodes)} meshdesk run processes in lab {self.net.prefix}; "
            f"times measured by polling every {POLL_S:g} wall s "
            f"(±{POLL_S / sc.time_scale:g} scenario s); records are consultation cases"
        )

    async def _run_due(self, until: float) -> None:
        """Run the queued steps due by now (and not after ``until``), in time order.

        A poller that failed fails the drill here, at once, with its own error.
        """
        if self._poller is not None and self._poller.done():
            self._poller.result()
            raise DrillError("the lab poller stopped")  # pragma: no cover - only we cancel it
        while self._queue and self._queue[0][0] <= min(self.now(), until):
            await heapq.heappop(self._queue)[2]()

    # -- polling -------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            snap = await self._snapshot()
            self._observe(snap, "drain" if self.draining else "drill")
            await self.conflicts.check(snap.t)
            await asyncio.sleep(POLL_S)

    async def _view(self, node: LabNode) -> NodeView | None:
        if not node.alive:
            return None
        try:
            cases = await node.call("case_list")
            digest = await node.call("digest")
            peers = await node.call("peers")
            sync = await node.call("sync")
        except MeshdeskError:
            return None  # down, or going down: absent from this poll
        return NodeView(
            case_ids=frozenset(c["id"] for c in cases),
            heads=dict(digest["heads"]),
            digest=str(digest["digest"]),
            linked=frozenset(p["name"] for p in peers if p.get("state") == "linked"),
            backlog=sum(_pending(p.get("outbox")) + _pending(p.get("inbox")) for p in sync),
            peer_states={str(p["name"]): str(p.get("state")) for p in peers if p.get("name")},
        )

    async def _snapshot(self) -> Snapshot:
        t = self.now()
        names = list(self.nodes)
        views = await asyncio.gather(*(self._view(self.nodes[n]) for n in names))
        return Snapshot(t, {n: v for n, v in zip(names, views, strict=True) if v is not None})

    def _observe(self, snap: Snapshot, phase: str) -> None:
        self.last = snap
        observe(self.rec, self.sc, snap)
        if self._progress is not None:
            backlog = self.rec.backlog[-1][1] if self.rec.backlog else {}
            reached = sum(1 for c in self.rec.cases.values() if c.reached_s is not None)
            links = sum(len(v.linked) for v in snap.nodes.values()) // 2
            self._progress(
                Progress(
                    snap.t,
                    self.sc.duration,
                    len(self.rec.cases),
                    reached,
                    sum(backlog.values()),
                    links,
                    phase,
                )
            )

    # -- the network ---------------------------------------------------------------------

    def _node_pairs(self) -> set[tuple[str, str]]:
        """Node pairs the topology joins now (as in sim mode, without power state)."""
        by_site: dict[str, list[str]] = {}
        for spec in self.sc.nodes:
            by_site.setdefault(spec.site, []).append(spec.name)
        pairs: set[tuple[str, str]] = set()
        for a_site, b_site in self.up:
            for a in by_site.get(a_site, ()):
                for b in by_site.get(b_site, ()):
                    if a != b:
                        pairs.add(edge(a, b))
        for courier, site in self.courier.items():
            for b in by_site.get(site, ()):
                if b != courier:
                    pairs.add(edge(courier, b))
        return pairs

    async def _rewire(self) -> None:
        await self.net.wire({(self.hosts[a], self.hosts[b]) for a, b in self._node_pairs()})

    async def _quality(self, action: LinkQuality) -> None:
        sites = {s for e in action.edges for s in e}
        for spec in self.sc.nodes:
            if spec.site in sites:
                applied = await self.net.impair(
                    self.hosts[spec.name], action.loss * 100, action.latency * 1000
                )
                if not applied and not self._latency_noted:
                    self._latency_noted = True
                    self.rec.notes.append(
                        f"latency not applied (kernel lacks sch_netem) at {action.at:g} s"
                        f" (line {action.line}); loss was"
                    )

    async def _heal(self) -> None:
        self.draining = True
        self.up = set(self.sc.edges)
        await self.net.clear_impairments()
        await self._rewire()
        for node in self.nodes.values():
            if not node.alive and node.name not in self.revoked:
                await self._power(node, True)

    # -- timeline ------------------------------------------------------------------------

    async def _act(self, action: Action) -> None:
        match action:
            case LinkChange(up=up, edges=edges):
                (self.up.update if up else self.up.difference_update)(edges)
                await self._rewire()
                await self._cut_off_edits()
            case LinkQuality() as quality:
                await self._quality(quality)
            case Power(node=name, on=on):
                await self._power(self.nodes[name], on)
                await self._cut_off_edits()
            case Consultations() as c:
                self._next_consultation(c, action.at)
            case Call() as call:
                await self.calls.call(call)
            case CallJoin() as join:
                await self.calls.join(join)
            case Courier(node=name, site=site):
                if site is None:
                    self.courier.pop(name, None)
                else:
                    self.courier[name] = site
                await self._rewire()
                await self._cut_off_edits()
            case Revoke(node=name, reason=reason):
                await self._revoke(name, reason)

    def _hq_node(self) -> LabNode | None:
        """The first HQ node that runs."""
        running = (self.nodes[n.name] for n in self.sc.hq_nodes)
        return next((node for node in running if node.alive), None)

    async def _cut_off_edits(self) -> None:
        """Sites the topology has just cut off from HQ get their conflict pair."""
        if not self.draining:
            running = {(a, b) for a, b in self._node_pairs() if self.nodes[a].alive}
            running = {(a, b) for a, b in running if self.nodes[b].alive}
            await self.conflicts.cut_off(self.now(), running, self.last, self.revoked)

    async def _power(self, node: LabNode, on: bool) -> None:
        if node.alive == on:
            return
        if not on:
            node.kill()
            return
        node.start(self.net)
        await node.wait_ready()
        for _ in range(self.deferred.pop(node.spec.site, 0)):
            await self._open_case(node, "other", "normal")

    def _next_consultation(self, c: Consultations, after: float) -> None:
        t = after + self.rng.expovariate(c.per_minute / 60.0)
        if t < c.until:
            self.at(t, functools.partial(self._consult, c, t))

    async def _consult(self, c: Consultations, t: float) -> None:
        self._next_consultation(c, t)
        names = [n for n, _ in c.categories]
        category = self.rng.choices(names, weights=[w for _, w in c.categories])[0]
        names = [n for n, _ in c.urgency]
        urgency = self.rng.choices(names, weights=[w for _, w in c.urgency])[0]
        alive = [n for n in self.nodes.values() if n.spec.site == c.site and n.alive]
        if not alive:
            self.deferred[c.site] = self.deferred.get(c.site, 0) + 1
            return
        await self._open_case(self.rng.choice(alive), category, urgency)

    async def _open_case(self, node: LabNode, category: str, urgency: str) -> None:
        t = self.now()
        args = {
            "operator": f"op-{node.name}",
            "category": category,
            "urgency": urgency,
            "name": f"drill {node.name} {len(self.rec.cases) + 1}",
        }
        try:
            view = await node.call("case_new", args)
        except MeshdeskError as exc:
            self.rec.notes.append(f"{node.name} did not record a consultation at {t:.1f} s: {exc}")
            return
        refused = node.name in self.revoked
        self.rec.case_created(
            CaseRecord(str(view["id"]), node.spec.site, node.name, t, urgency, None, refused)
        )

    async def _revoke(self, name: str, reason: str) -> None:
        t = self.now()
        hq = self.nodes[self.sc.hq_nodes[0].name]
        await admin.revoke_node(hq.home, name, reason=reason, now=dt.datetime.now(dt.UTC))
        self.revoked[name] = t
        self.rec.revoked.append(name)
        self.rec.notes.append(f"{name} revoked at {t:.1f} s ({reason})")
        try:
            await hq.call("reload_revocations")
        except MeshdeskError as exc:
            self.rec.notes.append(f"HQ did not reload its revocation list: {exc}")


def play_lab(
    scenario: Scenario,
    *,
    seed: int,
    log_dir: Path,
    progress: Callable[[Progress], None] | None = None,
) -> Recorder:
    """Play ``scenario`` with real nodes in a network lab.

    Raises:
        DrillError: not root / no lab tools, a sim-only scenario, or the lab failed.
    """
    problems = lab_problems()
    if problems:
        raise DrillError("; ".join(problems))
    if scenario.sim_only:
        raise DrillError(f"scenario {scenario.name} is sim only (run it with --mode sim)")
    if not scenario.hq_nodes:
        raise DrillError(f"scenario {scenario.name} has no HQ node")
    count = len(scenario.nodes)
    if count > LAB_NODE_MAX:
        raise DrillError(
            f"scenario {scenario.name} has {count} nodes; lab mode runs at most "
            f"{LAB_NODE_MAX} real nodes on one machine (run it with --mode sim)"
        )
    if count > LAB_NODE_WARN:
        log.warning(
            "scenario %s has %d nodes, more than the %d a lab drill was measured with: "
            "expect late reach-HQ times and polls that miss nodes under load",
            scenario.name,
            count,
            LAB_NODE_WARN,
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    drill = LabDrill(scenario, seed, log_dir, progress)
    try:
        return asyncio.run(drill.run())
    except control.NodeNotRunning as exc:
        raise DrillError(f"lab drill failed: {exc}") from exc
