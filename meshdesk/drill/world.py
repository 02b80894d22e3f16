"""The scenario world: what a drill scenario says happens, and when, as one pure model.

Both engines play a scenario through a :class:`World` — sim mode
(:mod:`~meshdesk.drill.sim`, replicas on a virtual clock) and lab mode
(:mod:`~meshdesk.drill.lab`, real nodes in wall time). The engine passes the time
in: :meth:`World.due` returns the actions planned up to then, in time order, and
moves the world on; :meth:`World.heal` ends the scenario. Nothing here reads a
clock, does IO or looks at what the nodes hold, so the plan depends only on the
scenario, the seed and the mode — not on when or how often the engine asks — and
two engines given the same seed carry out the same plan.

The rules, written down once:

- **Topology.** Node pairs allowed to meet (:attr:`World.pairs`): every two nodes
  of two sites whose link is up (a site's own LAN is the edge ``(site, site)``),
  and a courier with every node of the site it visits. Power is not part of it:
  an engine joins a pair only while both nodes run. Every link change and courier
  move plans a :class:`Topology` with the new pairs.
- **Power.** Every node starts powered. ``power_loss``/``restart`` plan a
  :class:`~meshdesk.drill.model.Power` only when they change something.
- **Workload.** Each ``consultations`` entry is a Poisson stream (seeded): an
  arrival draws the next arrival time, then the category and urgency from the
  entry's weights, then one of the site's powered nodes, which writes the case
  (:class:`OpenCase`) — revoked or not (after a theft, that is the thief).
- **Deferred cases.** A consultation that arrives while no node of its site has
  power is kept on paper and written, with the category and urgency it arrived
  with, by the first node of the site that gets power back (at that moment, in
  arrival order). What a site never got power back for is :attr:`World.unrecorded`.
- **Revocation.** HQ revokes the node at the planned time
  (:class:`~meshdesk.drill.model.Revoke`); how the list spreads is the engine's
  (replicas in sim, real nodes in the lab).
- **Calls.** A call (or join) is planned with the nodes that can take part: the
  powered, unrevoked nodes of the site (or listing the department), in scenario
  order. How a call is carried is the engine's (a path of live links in sim; a
  real call from the first caller to the first callee in the lab).
- **The end.** :meth:`World.heal` plans :class:`Heal` (link faults cleared), the
  whole topology back (a courier stays where it is), and every unpowered node
  that was not revoked powered on, with its site's deferred cases.

Conflicts are made differently by each mode, which is why a world is made for a
mode (and the only thing the mode changes):

- ``sim``: a share (:data:`FOLLOWUP_SHARE`) of cases is re-assessed at the origin a
  few minutes on (:class:`Reassess`), and a share (:data:`TRIAGE_SHARE`) of the
  cases not written at HQ are re-triaged at HQ a little after HQ first holds them
  (:attr:`OpenCase.triage_after`), so writes on both sides of an outage conflict.
  These draws come from a stream of their own, so the rest of the plan is the
  same as lab mode's.
- ``lab``: after every link change, courier move and power change of the
  timeline, :class:`CutOff` names the consulting sites no powered node of which
  the first powered HQ node reaches over allowed pairs; the lab engine writes one
  conflicting pair per such site (:mod:`~meshdesk.drill._labconflicts`).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from meshdesk.drill.model import (
    Action,
    Announce,
    BundleTrip,
    Call,
    CallJoin,
    Consultations,
    Courier,
    Edge,
    LinkChange,
    LinkQuality,
    Power,
    Revoke,
    Scenario,
    edge,
)

__all__ = [
    "FOLLOWUP_SHARE",
    "REASSESS_AFTER_S",
    "RESOLVE_AFTER_S",
    "TRIAGE_AFTER_S",
    "TRIAGE_SHARE",
    "CutOff",
    "Heal",
    "JoinCall",
    "Mode",
    "OpenCase",
    "Pair",
    "PlaceCall",
    "Planned",
    "Reassess",
    "Topology",
    "World",
    "reachable",
]

Mode = Literal["sim", "lab"]
#: Two node names, sorted: a pair of nodes the topology lets meet.
Pair = tuple[str, str]

#: Sim mode: share of cases re-assessed at their origin, and re-triaged at HQ.
FOLLOWUP_SHARE = 0.25
TRIAGE_SHARE = 0.25
#: Seconds after writing a case that its origin re-assesses it (sim mode).
REASSESS_AFTER_S = (60.0, 300.0)
#: Seconds after HQ first holds a case that it re-triages it (sim mode).
TRIAGE_AFTER_S = (30.0, 180.0)
#: An HQ operator resolves a conflict this long after seeing it (both modes).
RESOLVE_AFTER_S = 60.0
#: Slack when comparing planned times with the time passed in.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Topology:
    """The node pairs allowed to meet are now ``pairs`` (power not considered)."""

    at: float
    pairs: frozenset[Pair]


@dataclass(frozen=True, slots=True)
class OpenCase:
    """``node`` writes a new case for consultation ``number`` (1, 2, … in arrival order).

    ``arrived`` is when the consultation came in: earlier than ``at`` for a
    deferred one. ``refused``: the node is revoked, so every other node must refuse
    the case. ``triage_after`` (sim mode): HQ re-triages the case this many seconds
    after it first holds it; None for no re-triage.
    """

    at: float
    number: int
    site: str
    node: str
    category: str
    urgency: str
    arrived: float
    refused: bool = False
    triage_after: float | None = None

    @property
    def deferred(self) -> bool:
        return self.arrived < self.at


@dataclass(frozen=True, slots=True)
class Reassess:
    """Sim mode: ``node``, the origin, changes the urgency it gave case ``number``."""

    at: float
    number: int
    node: str


@dataclass(frozen=True, slots=True)
class PlaceCall:
    """Place ``call``; ``caller``/``callee``: the nodes of each site that can take part."""

    at: float
    call: Call
    caller: tuple[str, ...]
    callee: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JoinCall:
    """``join`` is due; ``members``: the nodes of its site or department that can join."""

    at: float
    join: CallJoin
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CutOff:
    """Lab mode: the consulting ``sites`` the running HQ node ``hq`` cannot reach."""

    at: float
    hq: str
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Heal:
    """The scenario is over: link faults (loss, latency) are cleared."""

    at: float


#: Everything a world plans; engines ``match`` on it.
Planned = (
    Topology | LinkQuality | Power | OpenCase | Reassess | PlaceCall | JoinCall | Revoke | CutOff
    | Announce | BundleTrip
    | Heal
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Arrival:
    """The next consultation of a ``consultations`` stream."""

    stream: Consultations


@dataclass(frozen=True, slots=True)
class _Consultation:
    """One consultation as it arrived (kept on paper while its site has no power)."""

    number: int
    arrived: float
    category: str
    urgency: str


_Item = Action | _Arrival | Reassess


def reachable(pairs: Iterable[tuple[str, str]], start: Iterable[str]) -> set[str]:
    """Names ``pairs`` join to any of ``start`` (directly or through others), and ``start``."""
    adjacent: dict[str, list[str]] = {}
    for a, b in pairs:
        adjacent.setdefault(a, []).append(b)
        adjacent.setdefault(b, []).append(a)
    reach = set(start)
    frontier = list(reach)
    while frontier:
        for other in adjacent.get(frontier.pop(), ()):
            if other not in reach:
                reach.add(other)
                frontier.append(other)
    return reach


def _pick(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    names = [name for name, _ in mix]
    return rng.choices(names, weights=[w for _, w in mix])[0]


class World:
    """One scenario's world for one seed and mode; see the module docstring.

    Random streams (each seeded from ``seed``, never shared with an engine):
    ``workload-SEED`` for arrivals, categories, urgencies and the writing node;
    ``followups-SEED`` for sim mode's re-assessments and re-triages.
    """

    def __init__(self, scenario: Scenario, seed: int, mode: Mode) -> None:
        if mode not in ("sim", "lab"):
            raise ValueError(f"unknown mode {mode!r}")
        self.scenario = scenario
        self.mode: Mode = mode
        self._rng = random.Random(f"workload-{seed}")
        self._followups = random.Random(f"followups-{seed}")
        self._site_nodes: dict[str, tuple[str, ...]] = {
            site: tuple(n.name for n in scenario.nodes if n.site == site) for site in scenario.sites
        }
        self._hq = tuple(n.name for n in scenario.hq_nodes)
        self._writing = sorted(
            {a.site for a in scenario.timeline if isinstance(a, Consultations)}
            - {n.site for n in scenario.hq_nodes}
        )
        self._up: set[Edge] = set(scenario.edges)
        self._courier: dict[str, str] = {}
        self._pairs = self._topology_pairs()
        self._powered = {n.name for n in scenario.nodes}
        self._revoked: dict[str, float] = {}
        self._quality: dict[Edge, tuple[float, float]] = {}
        self._paper: dict[str, list[_Consultation]] = {}
        self._numbers = itertools.count(1)
        self._queue: list[tuple[float, int, _Item]] = []
        self._order = itertools.count()
        self._ended = False
        for action in scenario.timeline:
            self._push(action.at, action)

    # -- what the world is now -----------------------------------------------------------

    @property
    def pairs(self) -> frozenset[Pair]:
        """Node pairs the topology lets meet now (whether they run or not)."""
        return self._pairs

    def powered(self, node: str) -> bool:
        return node in self._powered

    @property
    def revoked(self) -> Mapping[str, float]:
        """Revoked node -> the planned time of its revocation."""
        return MappingProxyType(self._revoked)

    def quality(self, link: Edge) -> tuple[float, float]:
        """(loss, latency) on the site link ``link`` now."""
        return self._quality.get(link, (0.0, 0.0))

    @property
    def unrecorded(self) -> dict[str, int]:
        """Consultations kept on paper at sites that have had no power since, by site."""
        return {site: len(papers) for site, papers in sorted(self._paper.items()) if papers}

    @property
    def ended(self) -> bool:
        return self._ended

    def next_at(self) -> float | None:
        """When the next planned item falls due (None: nothing more is planned)."""
        return self._queue[0][0] if self._queue and not self._ended else None

    # -- moving on -----------------------------------------------------------------------

    def due(self, now: float) -> list[Planned]:
        """Every action planned up to ``now``, in time order (ties: scenario order)."""
        out: list[Planned] = []
        while self._queue and not self._ended and self._queue[0][0] <= now + _EPS:
            t, _, item = heapq.heappop(self._queue)
            self._handle(t, item, out)
        return out

    def heal(self, now: float) -> list[Planned]:
        """End the scenario at ``now``: faults cleared, topology back, nodes powered.

        Whatever was still planned (follow-ups past the end) is dropped.
        """
        self._ended = True
        self._queue.clear()
        self._up = set(self.scenario.edges)
        self._quality.clear()
        self._pairs = self._topology_pairs()
        out: list[Planned] = [Heal(now), Topology(now, self._pairs)]
        for spec in self.scenario.nodes:
            if spec.name not in self._powered and spec.name not in self._revoked:
                self._power(now, spec.name, True, out)
        return out

    def _push(self, t: float, item: _Item) -> None:
        heapq.heappush(self._queue, (t, next(self._order), item))

    def _handle(self, t: float, item: _Item, out: list[Planned]) -> None:
        match item:
            case LinkChange(up=up, edges=edges):
                (self._up.update if up else self._up.difference_update)(edges)
                self._pairs = self._topology_pairs()
                out.append(Topology(t, self._pairs))
                self._cut_off(t, out)
            case Courier(node=name, site=site):
                if site is None:
                    self._courier.pop(name, None)
                else:
                    self._courier[name] = site
                self._pairs = self._topology_pairs()
                out.append(Topology(t, self._pairs))
                self._cut_off(t, out)
            case LinkQuality(edges=edges, loss=loss, latency=latency):
                for link in edges:
                    if loss or latency:
                        self._quality[link] = (loss, latency)
                    else:
                        self._quality.pop(link, None)
                out.append(item)
            case Power(node=name, on=on):
                self._power(t, name, on, out)
                self._cut_off(t, out)
            case Consultations():
                self._next_arrival(item, t)
            case _Arrival(stream=stream):
                self._arrive(t, stream, out)
            case Reassess():
                out.append(item)
            case Call(caller=caller, callee=callee):
                out.append(PlaceCall(t, item, self.members(caller), self.members(callee)))
            case CallJoin(site=site, department=department):
                out.append(JoinCall(t, item, self.members(site, department=department)))
            case Revoke(node=name):
                self._revoked[name] = t
                out.append(item)
            case Announce() | BundleTrip():
                out.append(item)  # what nodes hold decides the rest: the engine's

    def _power(self, t: float, name: str, on: bool, out: list[Planned]) -> None:
        if (name in self._powered) == on:
            return
        if not on:
            self._powered.discard(name)
            out.append(Power(t, name, False))
            return
        self._powered.add(name)
        out.append(Power(t, name, True))
        site = self.scenario.node_by_name[name].site
        for consultation in self._paper.pop(site, []):
            self._open(t, site, name, consultation, out)

    # -- workload ------------------------------------------------------------------------

    def _next_arrival(self, stream: Consultations, after: float) -> None:
        t = after + self._rng.expovariate(stream.per_minute / 60.0)
        if t < stream.until:
            self._push(t, _Arrival(stream))

    def _arrive(self, t: float, stream: Consultations, out: list[Planned]) -> None:
        self._next_arrival(stream, t)
        consultation = _Consultation(
            next(self._numbers),
            t,
            _pick(self._rng, stream.categories),
            _pick(self._rng, stream.urgency),
        )
        powered = [n for n in self._site_nodes[stream.site] if n in self._powered]
        if not powered:
            self._paper.setdefault(stream.site, []).append(consultation)
            return
        self._open(t, stream.site, self._rng.choice(powered), consultation, out)

    def _open(self, t: float, site: str, node: str, c: _Consultation, out: list[Planned]) -> None:
        triage_after = None
        if self.mode == "sim":
            rng = self._followups
            if rng.random() < FOLLOWUP_SHARE:
                when = t + rng.uniform(*REASSESS_AFTER_S)
                self._push(when, Reassess(when, c.number, node))
            if self.scenario.node_by_name[node].role != "hq" and rng.random() < TRIAGE_SHARE:
                triage_after = rng.uniform(*TRIAGE_AFTER_S)
        refused = node in self._revoked
        out.append(
            OpenCase(
                t, c.number, site, node, c.category, c.urgency, c.arrived, refused, triage_after
            )
        )

    # -- who -----------------------------------------------------------------------------

    def members(self, site: str | None, *, department: str | None = None) -> tuple[str, ...]:
        """The powered, unrevoked nodes of ``site`` or listing ``department``."""
        return tuple(
            n.name
            for n in self.scenario.nodes
            if n.name in self._powered
            and n.name not in self._revoked
            and (n.site == site or (department is not None and department in n.departments))
        )

    def _topology_pairs(self) -> frozenset[Pair]:
        pairs: set[Pair] = set()
        for a_site, b_site in self._up:
            for a in self._site_nodes[a_site]:
                for b in self._site_nodes[b_site]:
                    if a != b:
                        pairs.add(edge(a, b))
        for courier, site in self._courier.items():
            for b in self._site_nodes[site]:
                if b != courier:
                    pairs.add(edge(courier, b))
        return frozenset(pairs)

    def _cut_off(self, t: float, out: list[Planned]) -> None:
        if self.mode != "lab":
            return
        hq = next((n for n in self._hq if n in self._powered), None)
        if hq is None:
            return
        running = ((a, b) for a, b in self._pairs if a in self._powered and b in self._powered)
        reach = reachable(running, [hq])
        sites = tuple(s for s in self._writing if not any(n in reach for n in self._site_nodes[s]))
        if sites:
            out.append(CutOff(t, hq, sites))
