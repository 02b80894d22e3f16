"""Lab-mode conflicts: urgency re-set on both sides of an outage, then settled at HQ.

Sim mode lets a share of cases be re-assessed at their origin and re-triaged at HQ
at random times, so some writes land on both sides of an outage. Lab mode makes
that deterministic instead: the first time the topology cuts a site off from HQ
while both hold a case (the site's own first), that case gets its urgency set
through the real control op ``case set`` at a node of the site *and* at HQ, at the
same moment, to two different values. Neither write can have seen the other, so
when the site is back the fold shows a conflict on ``urgency``. Once per site and
drill: a later cut (a courier leaving HQ for the last time) may have no link left
to carry the two writes before the end. Each poll asks HQ
(``case show``) about the cases written so; a conflict seen there is raised in the
:class:`~meshdesk.drill.metrics.Recorder` (under the case's site), and an HQ
operator settles it :data:`RESOLVE_AFTER_S` scenario seconds later with ``case set``
of the newest candidate's value — ``set`` writes over every live candidate, which
is how an operator resolves a conflict (``meshdesk case set``).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshdesk.cases.model import CaseField, Urgency
from meshdesk.drill._labnodes import LabNode
from meshdesk.drill.labmetrics import Snapshot
from meshdesk.drill.metrics import Recorder
from meshdesk.drill.sim import RESOLVE_AFTER_S
from meshdesk.errors import MeshdeskError

__all__ = ["RESOLVE_AFTER_S", "LabConflicts", "Pair", "reachable"]

FIELD = CaseField.URGENCY.value


@dataclass(slots=True)
class Pair:
    """Two concurrent writes on one case: ``origin`` (cut off) and ``hq``."""

    case_id: str
    site: str
    origin: str
    hq: str
    written_s: float
    raised: bool = False
    resolved: bool = False


def _urgency_conflict(view: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for conflict in view.get("conflicts", []):
        if conflict.get("field") == FIELD:
            return dict(conflict)
    return None


def reachable(pairs: Iterable[tuple[str, str]], start: str) -> set[str]:
    """Nodes ``start`` reaches over ``pairs`` (directly or through others)."""
    adjacent: dict[str, set[str]] = {}
    for a, b in pairs:
        adjacent.setdefault(a, set()).add(b)
        adjacent.setdefault(b, set()).add(a)
    reach, frontier = {start}, [start]
    while frontier:
        for other in adjacent.get(frontier.pop(), ()):
            if other not in reach:
                reach.add(other)
                frontier.append(other)
    return reach


class LabConflicts:
    """The conflict pairs of one lab drill.

    ``now`` gives scenario seconds, ``hq`` the HQ node to ask (None while none runs),
    ``schedule`` runs a step at a scenario time; ``nodes`` are the drill's nodes by
    name and ``writing`` the non-HQ sites where consultations are made.
    """

    def __init__(
        self,
        rec: Recorder,
        rng: random.Random,
        *,
        now: Callable[[], float],
        hq: Callable[[], LabNode | None],
        schedule: Callable[[float, Callable[[], Awaitable[None]]], None],
        nodes: Mapping[str, LabNode],
        writing: Collection[str],
    ) -> None:
        self.rec = rec
        self.nodes = nodes
        self.writing = frozenset(writing)
        self.rng = rng
        self._now = now
        self._hq = hq
        self._schedule = schedule
        self.pairs: dict[str, Pair] = {}

    def sites(self) -> set[str]:
        """Sites that have had their pair (one per site and drill)."""
        return {p.site for p in self.pairs.values()}

    @property
    def busy(self) -> bool:
        """A pair is waiting to be seen at HQ or to be resolved."""
        return any(not p.resolved for p in self.pairs.values())

    async def cut_off(
        self,
        t: float,
        pairs: Iterable[tuple[str, str]],
        last: Snapshot,
        revoked: Collection[str],
    ) -> None:
        """Write the pair of every site that ``pairs`` (running nodes allowed to meet)
        no longer join to HQ, once per site, when a node of it and HQ hold a case in
        the ``last`` poll (revoked nodes never write one)."""
        hq = self._hq()
        hq_view = last.nodes.get(hq.name) if hq is not None else None
        if hq is None or hq_view is None:
            return
        reach = reachable(pairs, hq.name)
        for site in sorted(self.writing - self.sites()):
            members = [n for n in self.nodes.values() if n.spec.site == site]
            if any(n.name in reach for n in members):
                continue
            for node in members:
                view = last.nodes.get(node.name)
                if not node.alive or node.name in revoked or view is None:
                    continue
                case_id = self.pick(site, view.case_ids, hq_view.case_ids)
                if case_id is not None:
                    await self.write(t, case_id, node, hq)
                    break

    def pick(self, site: str, origin_holds: frozenset[str], hq_holds: frozenset[str]) -> str | None:
        """A case both sides hold and no pair used yet; the site's own cases first."""
        both = sorted(
            cid
            for cid in origin_holds & hq_holds
            if cid not in self.pairs and cid in self.rec.cases and not self.rec.cases[cid].refused
        )
        own = [cid for cid in both if self.rec.cases[cid].site == site]
        choices = own or both
        return self.rng.choice(choices) if choices else None

    async def write(self, t: float, case_id: str, origin: LabNode, hq: LabNode) -> None:
        """Set the case's urgency at ``origin`` and at ``hq`` at once, to two values."""
        try:
            view = await origin.call("case_show", {"id": case_id})
        except MeshdeskError as exc:
            self.rec.notes.append(f"conflict drill: {origin.name} cannot show {case_id}: {exc}")
            return
        values = [u.value for u in Urgency if u.value != view.get("urgency")]
        a, b = self.rng.sample(values, 2)
        results = await asyncio.gather(
            self._set(origin, case_id, a), self._set(hq, case_id, b), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for error in failed:
            if not isinstance(error, MeshdeskError):
                raise error
            self.rec.notes.append(f"conflict drill on {case_id} at {t:.1f} s: {error}")
        if not failed:
            site = self.rec.cases[case_id].site
            self.pairs[case_id] = Pair(case_id, site, origin.name, hq.name, t)

    async def _set(self, node: LabNode, case_id: str, value: str) -> Mapping[str, Any]:
        args = {"id": case_id, "operator": f"op-{node.name}", "field": FIELD, "value": value}
        view: Mapping[str, Any] = await node.call("case_set", args)
        return view

    async def check(self, t: float) -> None:
        """Ask HQ about every pair not raised yet; raise the conflicts it shows."""
        hq = self._hq()
        if hq is None:
            return
        for pair in self.pairs.values():
            if pair.raised:
                continue
            try:
                view = await hq.call("case_show", {"id": pair.case_id})
            except MeshdeskError:
                return  # HQ down or going down: ask again at the next poll
            if _urgency_conflict(view) is None:
                continue
            pair.raised = True
            self.rec.conflict_raised(pair.case_id, pair.site, FIELD, t)
            self._schedule(t + RESOLVE_AFTER_S, functools.partial(self._resolve, pair.case_id))

    async def _resolve(self, case_id: str) -> None:
        """An HQ operator settles the conflict: ``case set`` to the newest candidate."""
        t = self._now()
        hq = self._hq()
        if hq is None:
            self._schedule(t + RESOLVE_AFTER_S, functools.partial(self._resolve, case_id))
            return
        try:
            view = await hq.call("case_show", {"id": case_id})
            conflict = _urgency_conflict(view)
            if conflict is not None:
                value = str(conflict["candidates"][0]["value"])
                view = await self._set(hq, case_id, value)
        except MeshdeskError as exc:
            self.rec.notes.append(f"HQ could not resolve the conflict on {case_id}: {exc}")
            self._schedule(t + RESOLVE_AFTER_S, functools.partial(self._resolve, case_id))
            return
        if _urgency_conflict(view) is None:
            self.pairs[case_id].resolved = True
            self.rec.conflict_resolved(case_id, FIELD, t)
