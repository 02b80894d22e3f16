"""Lab mode: play a scenario with real ``meshdesk run`` processes in network namespaces.

What happens when is planned by the scenario's
:class:`~meshdesk.drill.world.World` (lab mode), the same plan sim mode carries out;
this engine carries it out on real nodes. A :class:`~meshdesk.drill._labfleet.Fleet`
holds them: a temporary deployment, one ``field-kit/lab`` LAN with a host per node,
wired as the topology says at time 0, and every node started. The plan is then
played in wall time — ``wall = scenario time × time_scale`` (the scenario's real
seconds per scenario second):

- link down/up, courier visits: the lab is rewired to the world's node pairs
  (``lab cut``/``restore`` for a host with no peer, an nftables pair filter in the
  switch for the rest);
- loss on a link: ``lab netem --loss`` on the hosts of both sites; latency where
  the kernel has sch_netem, otherwise a note in the report;
- power loss: SIGKILL to the node's process group; power back: the same home
  starts again;
- consultations (and deferred ones, when power returns): control op ``case new``
  on the node the world picked, with the category and urgency it drew;
- calls (:mod:`meshdesk.drill._labcalls`): ``call_start`` (audio only, synthetic
  media) from the first running node the world lists for the caller site to the
  first for the callee, ``call_invite`` for a joining department or site,
  ``call_hangup`` after the duration; completed = connected at hang-up time;
- revocation: ``deployment revoke`` on the HQ home, then ``reload_revocations`` on
  HQ; the stolen node keeps writing, and its later cases must reach no one;
- conflicts (:mod:`meshdesk.drill._labconflicts`): the first time the world says a
  consulting site is cut off from HQ while both hold a case, ``case set`` urgency
  on both sides at once; HQ sees the conflict on a poll and resolves it a scenario
  minute later.

Every control op is written in :mod:`meshdesk.drill._labops`.

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
import functools
import heapq
import itertools
import logging
import os
import random
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from meshdesk import control
from meshdesk.drill import _labops as ops
from meshdesk.drill._labcalls import LabCalls
from meshdesk.drill._labconflicts import LabConflicts
from meshdesk.drill._labfleet import Fleet, LabFleet, lab_problems
from meshdesk.drill._labnotices import LabNotices
from meshdesk.drill._labops import ControlNode
from meshdesk.drill.labmetrics import NodeView, Snapshot, final_check, observe, quiet
from meshdesk.drill.metrics import CaseRecord, Progress, Recorder
from meshdesk.drill.model import Announce, BundleTrip, LinkQuality, Power, Revoke, Scenario, edge
from meshdesk.drill.world import (
    RESOLVE_AFTER_S,
    CutOff,
    Heal,
    JoinCall,
    OpenCase,
    PlaceCall,
    Planned,
    Reassess,
    Topology,
    World,
)
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


class LabDrill:
    """One lab drill: the world's plan carried out on ``fleet``, measured by polling."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        fleet: Fleet,
        progress: Callable[[Progress], None] | None = None,
        bundles: Path | None = None,
    ) -> None:
        """``bundles``: where USB bundle trips leave their files (default: a temp folder)."""
        self.sc = scenario
        self.world = World(scenario, seed, "lab")
        if bundles is None:
            bundles = Path(tempfile.gettempdir()) / f"meshdesk-drill-bundles-{os.getpid()}"
        self.fleet = fleet
        self.rec = Recorder(scenario.sites)
        self.calls = LabCalls(self.rec)
        self.conflicts = LabConflicts(self.rec, random.Random(f"conflicts-{seed}"))
        self.notices = LabNotices(self.rec, bundles, self.after)
        self.last = Snapshot(0.0)
        self.draining = False
        # The engine's own steps (call hang-ups, conflict resolutions): (t, order, step).
        self._steps: list[tuple[float, int, Step]] = []
        self._order = itertools.count()
        self._t0 = 0.0
        self._latency_noted = False
        self._progress = progress
        self._poller: asyncio.Task[None] | None = None

    # -- time ----------------------------------------------------------------------------

    def now(self) -> float:
        """Scenario seconds since the drill started."""
        return (asyncio.get_running_loop().time() - self._t0) / self.sc.time_scale

    def after(self, t: float, step: Step) -> None:
        """Run ``step`` at scenario time ``t``."""
        heapq.heappush(self._steps, (t, next(self._order), step))

    # -- the whole run -------------------------------------------------------------------

    async def run(self) -> Recorder:
        try:
            await self.fleet.start(self.world.pairs)
            await self._wait_linked()
            await self._play()
            return self.rec
        finally:
            await self.fleet.aclose()

    async def _wait_linked(self) -> None:
        """Wait until every pair the topology joins shows ``linked`` both ways."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINK_TIMEOUT_S
        want = set(self.world.pairs)
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
        nodes = self.fleet.nodes
        for node in nodes.values():
            for peer in await ops.linked_peers(node):
                if peer in nodes:
                    pairs.add((node.name, peer))
        return {edge(a, b) for a, b in pairs if (b, a) in pairs}

    async def _play(self) -> None:
        sc = self.sc
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        poller = self._poller = asyncio.create_task(self._poll_loop(), name="drill-poller")
        try:
            while True:
                await self._run_due(sc.duration)
                if self.now() >= sc.duration:
                    break
                due = min(self._next_due(), sc.duration)
                # Steps may be queued meanwhile (a conflict to resolve): wake at least each poll.
                await asyncio.sleep(min(max(due - self.now(), 0.0) * sc.time_scale, POLL_S))
            await self._carry_out_all(self.world.due(sc.duration))  # the last of the timeline
            self.rec.end_s = sc.duration
            await self._carry_out_all(self.world.heal(self.now()))
            drain_wall = max(sc.drain * sc.time_scale, MIN_DRAIN_S)
            deadline = loop.time() + drain_wall
            drained = False
            while loop.time() < deadline:
                await self._run_due(self.now())
                await asyncio.sleep(POLL_S)
                revoked = self.world.revoked
                if not self.conflicts.busy and quiet(self.rec, sc, self.last, revoked):
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
        final_check(self.rec, sc, final, self.world.revoked)
        unrecorded = self.world.unrecorded
        if unrecorded:
            self.rec.notes.append(
                f"consultations never recorded (site without power): {unrecorded}"
            )
        self.rec.notes.append(
            f"lab mode: {len(sc.nodes)} meshdesk run processes in lab {self.fleet.prefix}; "
            f"times measured by polling every {POLL_S:g} wall s "
            f"(±{POLL_S / sc.time_scale:g} scenario s); records are consultation cases"
        )

    def _next_due(self) -> float:
        """When the next planned action or step of ours falls due (inf: none)."""
        planned = self.world.next_at()
        own = self._steps[0][0] if self._steps else None
        return min(t for t in (planned, own, float("inf")) if t is not None)

    async def _run_due(self, until: float) -> None:
        """Carry out the world's plan and run our steps due by now (and not after
        ``until``), in time order.

        A poller that failed fails the drill here, at once, with its own error.
        """
        if self._poller is not None and self._poller.done():
            self._poller.result()
            raise DrillError("the lab poller stopped")  # pragma: no cover - only we cancel it
        while True:
            now = min(self.now(), until)
            planned = self.world.next_at()
            own = self._steps[0][0] if self._steps else None
            if planned is not None and planned <= now and (own is None or planned <= own):
                await self._carry_out_all(self.world.due(planned))
            elif own is not None and own <= now:
                await heapq.heappop(self._steps)[2]()
            else:
                return

    # -- polling -------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            snap = await self._snapshot()
            self._observe(snap, "drain" if self.draining else "drill")
            for case_id in await self.conflicts.check(snap.t, self._hq()):
                self.after(snap.t + RESOLVE_AFTER_S, functools.partial(self._resolve, case_id))
            running = {s: self._running(self.world.members(s)) for s in self.sc.sites}
            await self.notices.check(snap.t, self._first(n.name for n in self.sc.hq_nodes), running)
            await asyncio.sleep(POLL_S)

    async def _view(self, node: ControlNode) -> NodeView | None:
        if not node.alive:
            return None
        try:
            return await ops.poll(node)
        except DrillError:
            raise
        except MeshdeskError:
            return None  # down, or going down: absent from this poll

    async def _snapshot(self) -> Snapshot:
        t = self.now()
        nodes = self.fleet.nodes
        names = list(nodes)
        views = await asyncio.gather(*(self._view(nodes[n]) for n in names))
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

    # -- carrying out the plan -----------------------------------------------------------

    async def _carry_out_all(self, actions: Iterable[Planned]) -> None:
        for action in actions:
            await self._carry_out(action)

    async def _carry_out(self, action: Planned) -> None:
        match action:
            case Topology(pairs=pairs):
                await self.fleet.wire(pairs)
            case LinkQuality() as quality:
                await self._impair(quality)
            case Power(node=name, on=on):
                await self.fleet.power(name, on)
            case OpenCase() as case:
                await self._open_case(case)
            case PlaceCall(call=call, caller=caller, callee=callee):
                t = self.now()
                if await self.calls.place(call, t, self._first(caller), self._first(callee)):
                    hang_up = functools.partial(self.calls.hang_up, call.call_id)
                    self.after(t + call.duration, hang_up)
            case JoinCall(join=join, members=members):
                member = self._first(members)
                site = self.sc.node_by_name[member.name].site if member else (join.site or "?")
                await self.calls.join(join, self.now(), member, site)
            case Revoke(node=name, reason=reason):
                await self._revoke(name, reason)
            case CutOff(hq=hq, sites=sites):
                writers = {site: self._running(self.world.members(site)) for site in sites}
                await self.conflicts.cut_off(self.now(), self.fleet.nodes[hq], writers, self.last)
            case Heal():
                self.draining = True
                await self.fleet.clear_impairments()
            case Reassess():
                raise DrillError("a lab-mode world planned a sim-mode re-assessment")
            case Announce() as plan:
                poster = self._first(n.name for n in self.sc.hq_nodes)
                others = sorted({n.site for n in self.sc.nodes if n.role != "hq"})
                await self.notices.announce(plan, poster, others, self.now())
            case BundleTrip() as trip:
                target = functools.partial(self._first, self.world.members(trip.target))
                source = self._first(self.world.members(trip.source))
                await self.notices.depart(trip, source, target, self.now())

    def _running(self, names: Iterable[str]) -> list[ControlNode]:
        return [node for node in (self.fleet.nodes[n] for n in names) if node.alive]

    def _first(self, names: Iterable[str]) -> ControlNode | None:
        return next(iter(self._running(names)), None)

    def _hq(self) -> ControlNode | None:
        """The first HQ node that runs."""
        return self._first(n.name for n in self.sc.hq_nodes)

    async def _impair(self, action: LinkQuality) -> None:
        sites = {s for e in action.edges for s in e}
        names = [n.name for n in self.sc.nodes if n.site in sites]
        applied = await self.fleet.impair(names, action.loss, action.latency)
        if not applied and not self._latency_noted:
            self._latency_noted = True
            self.rec.notes.append(
                f"latency not applied (kernel lacks sch_netem) at {action.at:g} s"
                f" (line {action.line}); loss was"
            )

    async def _open_case(self, case: OpenCase) -> None:
        t = self.now()
        node = self.fleet.nodes[case.node]
        try:
            case_id = await ops.open_case(
                node,
                category=case.category,
                urgency=case.urgency,
                name=f"drill {node.name} {case.number}",
            )
        except MeshdeskError as exc:
            self.rec.notes.append(f"{node.name} did not record a consultation at {t:.1f} s: {exc}")
            return
        self.rec.case_created(
            CaseRecord(case_id, case.site, node.name, t, case.urgency, None, case.refused)
        )

    async def _resolve(self, case_id: str) -> None:
        t = self.now()
        if not await self.conflicts.resolve(t, case_id, self._hq()):
            self.after(t + RESOLVE_AFTER_S, functools.partial(self._resolve, case_id))

    async def _revoke(self, name: str, reason: str) -> None:
        t = self.now()
        await self.fleet.revoke(name, reason)
        self.rec.revoked.append(name)
        self.rec.notes.append(f"{name} revoked at {t:.1f} s ({reason})")
        try:
            await ops.reload_revocations(self.fleet.nodes[self.sc.hq_nodes[0].name])
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
    drill = LabDrill(
        scenario, seed, LabFleet(scenario, log_dir), progress, log_dir.parent / "bundles"
    )
    try:
        return asyncio.run(drill.run())
    except control.NodeNotRunning as exc:
        raise DrillError(f"lab drill failed: {exc}") from exc
