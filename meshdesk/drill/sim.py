"""Play a scenario in one process, on a virtual clock, reproducibly from a seed.

What happens when — topology, power, consultations, deferred cases, revocations,
calls and the re-assessments that make conflicts — is planned by the scenario's
:class:`~meshdesk.drill.world.World` (sim mode); this engine carries the plan out.
Every node is a :class:`~meshdesk.drill._nodes.SimNode`: real case events, hash
chains and signed checkpoints, replicated by the real sans-IO sync core through
the wire codec (:mod:`meshdesk.sync.sim`). The loop advances in steps of
``scenario.tick`` virtual seconds: due timeline actions and workload happen, the
revocation list spreads along live links (a node that learns it cuts links to the
revoked node and refuses its runs), then every link delivers what is on its wires
and every node does its store work until nothing moves; stalled cores get a tick.
Links exist only between pairs the world allows, while both nodes run and neither
has learned that the other is revoked; a link with
latency delivers once per latency interval, a lossy link drops frames with a
seeded random draw. Nothing reads the wall clock or unseeded randomness, so the
same seed gives the same report numbers.

At the end, everything is healed (links restored, nodes restarted, faults
cleared; a courier stays where it is) and the loop drains until every link is
idle: the final check then compares every store's digest and counts records that
never reached HQ. Calls are placed when a path of live links joins the two sites
and complete when it lasts the call's duration; media is not simulated.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Sequence

from meshdesk.cases.fold import Draft
from meshdesk.cases.model import CaseField, Urgency
from meshdesk.cases.state import CaseState
from meshdesk.drill._nodes import Directory, SimNode
from meshdesk.drill.metrics import CaseRecord, Progress, Recorder, digest_of
from meshdesk.drill.model import Announce, BundleTrip, LinkQuality, Power, Revoke, Scenario, edge
from meshdesk.drill.simcalls import CallTracker
from meshdesk.drill.simnotices import NoticeTracker
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
    reachable,
)
from meshdesk.errors import DrillError, SyncError, UsageError
from meshdesk.store.records import StoredEvent
from meshdesk.sync.sim import Link

__all__ = ["NodeFactory", "Progress", "Simulation", "simulate"]

#: 2026-03-11 14:46 JST: the virtual epoch of every drill's HLC times.
EPOCH_MS = 1_773_207_960_000
_MAX_ROUNDS = 100_000

NodeFactory = Callable[..., SimNode]


class _Link(Link):
    """A sim link with the faults of the site link it runs over."""

    sites: tuple[str, str] = ("", "")
    loss: float = 0.0
    latency: float = 0.0
    next_pump: float = 0.0
    #: Had traffic since it was last seen idle (only such links are checked and ticked).
    dirty: bool = True
    tracing = False


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        factory: NodeFactory = SimNode,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.sc = scenario
        self.world = World(scenario, seed, "sim")
        #: The values of re-assessments and re-triages (they depend on what a node holds).
        self.edits = random.Random(f"edits-{seed}")
        self.faults = random.Random(f"faults-{seed}")
        self.rec = Recorder(scenario.sites)
        self.directory = Directory()
        keys = random.Random(f"keys-{seed}")
        self.nodes: dict[str, SimNode] = {
            spec.name: factory(spec, keys, self.directory, self._stored) for spec in scenario.nodes
        }
        self.by_author = {n.author: n for n in self.nodes.values()}
        self.hq = [n for n in self.nodes.values() if n.spec.role == "hq"]
        self.site_nodes: dict[str, list[SimNode]] = {s: [] for s in scenario.sites}
        for node in self.nodes.values():
            self.site_nodes[node.spec.site].append(node)
        self.links: dict[tuple[str, str], _Link] = {}
        self._case_ids: dict[int, str] = {}  # consultation number -> case id
        self._triage_after: dict[str, float] = {}  # case id -> planned re-triage delay
        #: Revoked node -> the step HQ revoked it in: its events from then on are the thief's.
        self._revoked_at: dict[str, float] = {}
        self._event_times: dict[tuple[str, int], float] = {}
        self.t = 0.0
        self.draining = False
        # The engine's own reactions (re-triage, conflict resolution): (t, order, drain, fn).
        self._queue: list[tuple[float, int, bool, Callable[[], None]]] = []
        self._order = itertools.count()
        self._progress = progress
        self.calls = CallTracker(self.rec, self._path)
        self.notices = NoticeTracker(
            self.rec, self.nodes, record=self._record, at=lambda t, fn: self.at(t, fn, drain=True),
            now=lambda: self.t, wall_ms=self._wall, seed=seed,
        )  # fmt: skip

    # -- scheduling ----------------------------------------------------------------------

    def at(self, t: float, fn: Callable[[], None], *, drain: bool = False) -> None:
        """Run ``fn`` at ``t``; only ``drain`` reactions still run after the end."""
        heapq.heappush(self._queue, (t, next(self._order), drain, fn))

    def run(self) -> Recorder:
        sc = self.sc
        self._relink()
        next_sample = 0.0
        while self.t <= sc.duration + 1e-9:
            self._step()
            if self.t >= next_sample - 1e-9:
                self._sample("drill")
                next_sample += sc.sample
            self.t = round(self.t + sc.tick, 6)
        self.rec.end_s = sc.duration
        for action in self.world.heal(self.t):
            self._carry_out(action)
        limit = sc.duration + sc.drain
        while self.t <= limit:
            self._step()
            if self.t >= next_sample - 1e-9:
                self._sample("drain")
                next_sample += sc.sample
            if self._quiet():
                break
            self.t = round(self.t + sc.tick, 6)
        self._sample("drain")
        self.rec.drained_s = self.t - sc.duration
        if not self._quiet():
            self.rec.notes.append(f"replication was still busy {sc.drain:g} s after the end")
        self._final_check()
        return self.rec

    def _step(self) -> None:
        """The world's plan and our own reactions due by now, in time order."""
        while True:
            planned = self.world.next_at()
            own = self._queue[0][0] if self._queue else None
            if planned is not None and planned <= self.t + 1e-9 and (own is None or planned <= own):
                for action in self.world.due(planned):
                    self._carry_out(action)
            elif own is not None and own <= self.t + 1e-9:
                _, _, drain, fn = heapq.heappop(self._queue)
                if drain or not self.draining:
                    fn()
            else:
                break
        self._spread_revocations()
        self._settle()
        self.calls.check(self.t)

    def _quiet(self) -> bool:
        limit = self.sc.duration + self.sc.drain
        pending = any(t <= limit and drain for t, _, drain, _ in self._queue)
        return not pending and not any(link.dirty for link in self.links.values())

    # -- the network ---------------------------------------------------------------------

    def _wanted(self) -> set[tuple[str, str]]:
        out = set()
        for a_name, b_name in self.world.pairs:
            a, b = self.nodes[a_name], self.nodes[b_name]
            if a.alive and b.alive and a.author not in b.revoked and b.author not in a.revoked:
                out.add((a_name, b_name))
        return out

    def _relink(self) -> None:
        wanted = self._wanted()
        for pair in sorted(set(self.links) - wanted):
            self._count(self.links.pop(pair))
        for pair in sorted(wanted - set(self.links)):
            a, b = self.nodes[pair[0]], self.nodes[pair[1]]
            link = self.links[pair] = _Link(a, b)
            link.sites = edge(a.spec.site, b.spec.site)
            link.loss, link.latency = self.world.quality(link.sites)

    def _count(self, link: _Link) -> None:
        """Close a link; what each end sent on it is added to its node's total."""
        link.close()
        for side, node in enumerate(link.ends):
            sent = self.rec.sync_bytes
            sent[node.name] = sent.get(node.name, 0) + link.sent_bytes[side]

    def _settle(self) -> None:
        links = [self.links[p] for p in sorted(self.links)]
        for _ in range(_MAX_ROUNDS):
            moved = False
            for link in links:
                if link.closed or not (link.wires[0] or link.wires[1]):
                    continue
                if link.latency and self.t < link.next_pump - 1e-9:
                    continue
                if link.latency:
                    link.next_pump = self.t + link.latency
                moved = link.dirty = True
                for side in (0, 1):
                    for _ in range(len(link.wires[side])):
                        if link.loss and self.faults.random() < link.loss:
                            link.drop(side)
                        elif not link.closed:
                            link.deliver(side)
            for node in self.nodes.values():
                if node.work:
                    moved = node.run_work() > 0 or moved
            if not moved:
                break
        else:
            raise DrillError("replication did not settle (a livelock in the simulation)")
        for link in links:
            if link.dirty and not link.closed:
                if link.idle:
                    link.dirty = False
                else:
                    link.tick()

    def _path(self, a: Iterable[SimNode], b: Iterable[SimNode]) -> bool:
        """Is any of ``a`` joined to any of ``b`` by live links?"""
        reach = self._reach(a)
        return any(n.alive and n.name in reach for n in b)

    def _reach(self, start: Iterable[SimNode]) -> set[str]:
        """Names of the nodes that live links join to any live node of ``start``."""
        return reachable(self.links, [n.name for n in start if n.alive])

    def _spread_revocations(self) -> None:
        revoked = self._revoked_at
        if not revoked:
            return
        changed = True
        while changed:
            changed = False
            for a_name, b_name in list(self.links):
                if a_name in revoked or b_name in revoked:
                    continue
                a, b = self.nodes[a_name], self.nodes[b_name]
                for src, dst in ((a, b), (b, a)):
                    fresh = src.revoked - dst.revoked
                    if fresh:
                        dst.revoked |= fresh
                        changed = True
            if changed:
                self._relink()

    # -- carrying out the plan -----------------------------------------------------------

    def _carry_out(self, action: Planned) -> None:
        match action:
            case Topology():
                self._relink()
            case LinkQuality(edges=edges, loss=loss, latency=latency):
                for link in self.links.values():
                    if link.sites in edges:
                        link.loss, link.latency = loss, latency
            case Power(node=name, on=on):
                self._power(self.nodes[name], on)
            case OpenCase() as case:
                self._open_case(case)
            case Reassess(number=number, node=name):
                self._reassess(self.nodes[name], self._case_ids[number])
            case PlaceCall() | JoinCall():
                self.calls.act(action, self.t, self.nodes)
            case Revoke(node=name, reason=reason):
                stolen = self.nodes[name]
                self._revoked_at[name] = self.t
                self.rec.revoked.append(name)
                self.rec.notes.append(f"{name} revoked at {self.t:g} s ({reason})")
                for node in self.hq:
                    node.revoked.add(stolen.author)
                self._relink()
            case Heal():
                self.draining = True
                for link in self.links.values():
                    link.loss = link.latency = 0.0
            case Announce():
                self.notices.announce(action)
            case BundleTrip():
                self.notices.depart(action)
            case CutOff():
                raise DrillError("a sim-mode world planned a lab-mode conflict pair")

    def _power(self, node: SimNode, on: bool) -> None:
        if node.alive == on:
            return
        node.alive = on
        if not on:
            node.crash()
        self._relink()

    # -- workload ------------------------------------------------------------------------

    def _wall(self) -> int:
        return EPOCH_MS + int(self.t * 1000)

    def _open_case(self, case: OpenCase) -> None:
        node = self.nodes[case.node]
        draft = node.writer.open_case(
            wall_ms=self._wall(), site=case.site, category=case.category, urgency=case.urgency
        )
        node.own_cases.add(draft.case_id)
        self._case_ids[case.number] = draft.case_id
        if case.triage_after is not None:
            self._triage_after[draft.case_id] = case.triage_after
        record = CaseRecord(
            draft.case_id, case.site, node.name, self.t, case.urgency, None, case.refused
        )
        self.rec.case_created(record)
        self._write(node, [draft])

    def _write(self, node: SimNode, drafts: Sequence[Draft]) -> None:
        events = node.write(drafts)
        self.rec.events_created += len(events)
        for event in events:
            self._event_times[(event.author, event.seq)] = self.t
        if node.name in self._revoked_at:
            self.rec.refused_writes += len(events)

    def _reassess(self, node: SimNode, case_id: str) -> None:
        """The origin changes the urgency it first gave (on what it holds of the case)."""
        state = node.case_state(case_id)
        if self.draining or not node.alive or state is None or not state.opened:
            return
        self._set_urgency(node, state, case_id)

    def _set_urgency(self, node: SimNode, state: CaseState, case_id: str) -> None:
        choices = [u for u in Urgency if u is not state.urgency]
        try:
            draft = node.writer.set_field(
                state, CaseField.URGENCY, self.edits.choice(choices), wall_ms=self._wall()
            )
        except UsageError:
            return  # the drawn value is what the case already holds: nothing to write
        self._write(node, [draft])

    def _record(self, node: SimNode, kind: int, body: bytes) -> None:
        """A notice event written on ``node``'s chain (counted like every record)."""
        for event in node.record(kind, body, self._wall()):
            self.rec.events_created += 1
            self._event_times[(event.author, event.seq)] = self.t

    def _stored(self, node: SimNode, events: Sequence[StoredEvent]) -> None:
        self.notices.stored(node, events)
        if not node.index_all:
            return
        touched = set()
        for event in events:
            if event.case_id is None:
                continue
            if SimNode.opens_case(event):
                if event.case_id in self.rec.cases:
                    first = self.rec.cases[event.case_id].reached_s is None
                    self.rec.reached_hq(event.case_id, self.t)
                    after = self._triage_after.get(event.case_id)
                    if first and after is not None and not self.draining:
                        case_id = event.case_id
                        self.at(self.t + after, functools.partial(self._triage, node, case_id))
            else:
                touched.add(event.case_id)
        for case_id in sorted(touched):
            self._check_conflicts(node, case_id)

    def _triage(self, node: SimNode, case_id: str) -> None:
        state = node.case_state(case_id)
        if self.draining or not node.alive or state is None or not state.opened:
            return
        self._set_urgency(node, state, case_id)

    def _check_conflicts(self, node: SimNode, case_id: str) -> None:
        state = node.case_state(case_id)
        record = self.rec.cases.get(case_id)
        if state is None or record is None:
            return
        for conflict in state.conflicts:
            if self.rec.conflict_raised(case_id, record.site, conflict.field, self.t):
                register = conflict.field
                self.at(
                    self.t + RESOLVE_AFTER_S,
                    functools.partial(self._resolve, node, case_id, register),
                    drain=True,
                )

    def _resolve(self, node: SimNode, case_id: str, register: str) -> None:
        """An HQ operator settles a conflict by writing the newest candidate's value."""
        state = node.case_state(case_id)
        if state is None or not node.alive:
            return
        conflict = state.conflict(register)
        if conflict is None:
            self.rec.conflict_resolved(case_id, register, self.t)
            return
        value = conflict.candidates[0].value
        draft = node.writer.resolve_conflict(state, register, value, wall_ms=self._wall())
        self._write(node, [draft])
        self.rec.conflict_resolved(case_id, register, self.t)

    # -- measuring -----------------------------------------------------------------------

    def _sample(self, phase: str) -> None:
        hq_heads: dict[str, int] = {}
        for hq in self.hq:
            for author, chain in hq.store.events.items():
                hq_heads[author] = max(hq_heads.get(author, 0), len(chain))
        backlog: dict[str, int] = {}
        linked: dict[str, bool] = {}
        # One search from HQ answers every site's _path(members, self.hq).
        reach = self._reach(self.hq)
        for site, members in self.site_nodes.items():
            best: dict[str, int] = {}
            for node in members:
                for author, chain in node.store.events.items():
                    best[author] = max(best.get(author, 0), len(chain))
            backlog[site] = sum(max(0, n - hq_heads.get(a, 0)) for a, n in best.items())
            linked[site] = any(n.alive and n.name in reach for n in members)
        self.rec.backlog.append((round(self.t, 3), backlog))
        self.rec.connected.append((round(self.t, 3), linked))
        if self._progress is not None:
            reached = sum(1 for c in self.rec.cases.values() if c.reached_s is not None)
            self._progress(
                Progress(
                    self.t,
                    self.sc.duration,
                    len(self.rec.cases),
                    reached,
                    sum(backlog.values()),
                    len(self.links),
                    phase,
                )
            )

    def _final_check(self) -> None:
        rec = self.rec
        for pair in sorted(self.links):
            self._count(self.links.pop(pair))
        for node in self.nodes.values():
            rec.sync_bytes.setdefault(node.name, 0)
            rec.events_received[node.name] = sum(
                len(chain) for author, chain in node.store.events.items() if author != node.author
            )
        revoked = self._revoked_at
        expected: set[tuple[str, int]] = set()
        thief: set[tuple[str, int]] = set()
        for node in self.nodes.values():
            cutoff = revoked.get(node.name)
            for event in node.store.events.get(node.author, ()):
                created = self._event_times.get((node.author, event.seq), 0.0)
                key = (node.author, event.seq)
                (thief if cutoff is not None and created >= cutoff else expected).add(key)
        rec.expected_records = len(expected)
        at_hq = {
            (a, e.seq) for hq in self.hq for a, chain in hq.store.events.items() for e in chain
        }
        rec.lost_records = len(expected - at_hq)
        for node in self.nodes.values():
            if node.name in revoked:
                continue
            held = {(a, e.seq) for a, chain in node.store.events.items() for e in chain}
            rec.missing[node.name] = len(expected - held)
            rec.refused_writes_accepted += len(thief & held)
            rec.digests[node.name] = digest_of(
                (a, e.seq, e.hash) for a, chain in node.store.events.items() for e in chain
            )
        for stolen in self.nodes.values():
            if stolen.name in revoked:
                rec.revoked_peers[stolen.name] = {
                    node.name: "refused"
                    for node in self.nodes.values()
                    if node.name not in revoked and stolen.author in node.revoked
                }
        unrecorded = self.world.unrecorded
        if unrecorded:
            rec.notes.append(f"consultations never recorded (site without power): {unrecorded}")


def simulate(
    scenario: Scenario,
    *,
    seed: int | None = None,
    factory: NodeFactory = SimNode,
    progress: Callable[[Progress], None] | None = None,
) -> Recorder:
    """Play ``scenario`` in memory; the :class:`Recorder` holds everything measured.

    Raises:
        DrillError: replication livelocked (a bug the drill exists to catch).
    """
    sim = Simulation(scenario, scenario.seed if seed is None else seed, factory, progress)
    try:
        return sim.run()
    except SyncError as exc:
        raise DrillError(f"simulation failed at {sim.t:g} s: {exc}") from exc
