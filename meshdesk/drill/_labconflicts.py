"""Lab-mode conflicts: urgency re-set on both sides of an outage, then settled at HQ.

Sim mode lets a share of cases be re-assessed at their origin and re-triaged at HQ
at random times, so some writes land on both sides of an outage. Lab mode makes
that deterministic instead: the first time the topology cuts a site off from HQ
while both hold a case (the site's own first), that case gets its urgency set
through the real control op ``case set`` at a node of the site *and* at HQ, at the
same moment, to two different values. Neither write can have seen the other, so
when the site is back the fold shows a conflict on ``urgency``. Once per site and
drill: a later cut (a courier leaving HQ for the last time) may have no link left
to carry the two writes before the end. When a site is cut off is the world's rule
(:class:`~meshdesk.drill.world.CutOff`). Each poll asks HQ (``case show``) about
the cases written so; a conflict seen there is raised in the
:class:`~meshdesk.drill.metrics.Recorder` (under the case's site), and an HQ
operator settles it :data:`~meshdesk.drill.world.RESOLVE_AFTER_S` scenario seconds
later with ``case set`` of the newest candidate's value — ``set`` writes over every
live candidate, which is how an operator resolves a conflict (``meshdesk case set``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshdesk.cases.model import Urgency
from meshdesk.drill import _labops as ops
from meshdesk.drill._labops import URGENCY, ControlNode
from meshdesk.drill.labmetrics import Snapshot
from meshdesk.drill.metrics import Recorder
from meshdesk.errors import MeshdeskError

__all__ = ["LabConflicts", "Pair"]


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


class LabConflicts:
    """The conflict pairs of one lab drill; facts go to ``rec``, choices come from ``rng``.

    The engine says when (:meth:`cut_off`, from the world's
    :class:`~meshdesk.drill.world.CutOff`), polls (:meth:`check` returns the cases
    newly in conflict at HQ) and schedules each :meth:`resolve` itself.
    """

    def __init__(self, rec: Recorder, rng: random.Random) -> None:
        self._rec = rec
        self._rng = rng
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
        hq: ControlNode,
        writers: Mapping[str, Sequence[ControlNode]],
        last: Snapshot,
    ) -> None:
        """Write the pair of each cut-off site of ``writers`` that has had none yet.

        ``writers`` maps each site the world says HQ cannot reach to its running,
        unrevoked nodes; the first of them that holds, as HQ does, a case no pair used
        (in the ``last`` poll) writes it with ``hq``.
        """
        hq_view = last.nodes.get(hq.name)
        if hq_view is None:
            return
        done = self.sites()
        for site in sorted(writers):
            if site in done:
                continue
            for node in writers[site]:
                view = last.nodes.get(node.name)
                if view is None:
                    continue
                case_id = self.pick(site, view.case_ids, hq_view.case_ids)
                if case_id is not None:
                    await self.write(t, case_id, node, hq)
                    break

    def pick(self, site: str, origin_holds: frozenset[str], hq_holds: frozenset[str]) -> str | None:
        """A case both sides hold and no pair used yet; the site's own cases first."""
        cases = self._rec.cases
        both = sorted(
            cid
            for cid in origin_holds & hq_holds
            if cid not in self.pairs and cid in cases and not cases[cid].refused
        )
        own = [cid for cid in both if cases[cid].site == site]
        choices = own or both
        return self._rng.choice(choices) if choices else None

    async def write(self, t: float, case_id: str, origin: ControlNode, hq: ControlNode) -> None:
        """Set the case's urgency at ``origin`` and at ``hq`` at once, to two values."""
        try:
            view = await ops.show_case(origin, case_id)
        except MeshdeskError as exc:
            self._rec.notes.append(f"conflict drill: {origin.name} cannot show {case_id}: {exc}")
            return
        values = [u.value for u in Urgency if u.value != view.get("urgency")]
        a, b = self._rng.sample(values, 2)
        results = await asyncio.gather(
            ops.set_urgency(origin, case_id, a),
            ops.set_urgency(hq, case_id, b),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for error in failed:
            if not isinstance(error, MeshdeskError):
                raise error
            self._rec.notes.append(f"conflict drill on {case_id} at {t:.1f} s: {error}")
        if not failed:
            site = self._rec.cases[case_id].site
            self.pairs[case_id] = Pair(case_id, site, origin.name, hq.name, t)

    async def check(self, t: float, hq: ControlNode | None) -> list[str]:
        """Ask ``hq`` about every pair not raised yet; raise the conflicts it shows.

        Returns the cases raised now: an HQ operator resolves each a little later.
        """
        raised: list[str] = []
        if hq is None:
            return raised
        for pair in self.pairs.values():
            if pair.raised:
                continue
            try:
                view = await ops.show_case(hq, pair.case_id)
            except MeshdeskError:
                break  # HQ down or going down: ask again at the next poll
            if ops.urgency_conflict(view) is None:
                continue
            pair.raised = True
            self._rec.conflict_raised(pair.case_id, pair.site, URGENCY, t)
            raised.append(pair.case_id)
        return raised

    async def resolve(self, t: float, case_id: str, hq: ControlNode | None) -> bool:
        """An HQ operator settles the conflict: ``case set`` to the newest candidate.

        Returns False when it could not (no HQ node runs, or it failed): try again later.
        """
        if hq is None:
            return False
        try:
            view = await ops.show_case(hq, case_id)
            conflict = ops.urgency_conflict(view)
            if conflict is not None:
                value = str(conflict["candidates"][0]["value"])
                view = await ops.set_urgency(hq, case_id, value)
        except MeshdeskError as exc:
            self._rec.notes.append(f"HQ could not resolve the conflict on {case_id}: {exc}")
            return False
        if ops.urgency_conflict(view) is None:
            self.pairs[case_id].resolved = True
            self._rec.conflict_resolved(case_id, URGENCY, t)
        return True
