"""Lab-mode measurements: what polling real nodes says, turned into :class:`Recorder` facts.

The lab engine polls every running node through its control socket about once a
second of wall time and builds a :class:`Snapshot` (scenario seconds): the case ids
each node holds (op ``case list``), each author's head seq and the store digest
(op ``digest``), which peers each node is linked to (op ``peers``) and its sync
backlog (op ``sync``). :func:`observe` records from a snapshot when cases first
appear at HQ (so reach-HQ times are exact to one poll interval), the per-site
backlog (events the site holds that HQ lacks, as in sim mode) and whether each
site is linked to HQ. :func:`final_check` judges the last snapshot after the drain:
a record is a consultation case the node acknowledged; it is lost when no HQ node
holds it, missing at a node that does not; the stores converged when every
non-revoked node's digest is equal. Cases written by a revoked node after its
revocation must be held by no other node; how every other node that knows a revoked
node sees it at the end (its ``peers`` state, ``refused`` once cut off) is kept.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from meshdesk.drill.metrics import Recorder
from meshdesk.drill.model import Scenario
from meshdesk.drill.world import reachable

__all__ = ["NodeView", "Snapshot", "final_check", "observe", "quiet"]


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as one poll saw it."""

    case_ids: frozenset[str]
    heads: Mapping[str, int]
    digest: str
    linked: frozenset[str] = frozenset()
    #: Events waiting to go out or come in, summed over the node's links.
    backlog: int = 0
    #: Every peer the node knows, by name: its state (``linked``, ``refused``, ...).
    peer_states: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    t: float
    #: Nodes that answered; a node that is down (or did not answer) is absent.
    nodes: Mapping[str, NodeView] = field(default_factory=dict)


def _linked_to_hq(scenario: Scenario, snap: Snapshot) -> dict[str, bool]:
    links = [
        (name, other)
        for name, view in snap.nodes.items()
        for other in view.linked
        if other in snap.nodes
    ]
    reach = reachable(links, [n.name for n in scenario.hq_nodes if n.name in snap.nodes])
    out: dict[str, bool] = {}
    for spec in scenario.nodes:
        out[spec.site] = out.get(spec.site, False) or spec.name in reach
    return out


def observe(rec: Recorder, scenario: Scenario, snap: Snapshot) -> None:
    """Record what ``snap`` shows: cases newly at HQ, backlog and HQ links per site."""
    hq_views = [snap.nodes[n.name] for n in scenario.hq_nodes if n.name in snap.nodes]
    for view in hq_views:
        for case_id in view.case_ids:
            rec.reached_hq(case_id, snap.t)
    hq_heads: dict[str, int] = {}
    for view in hq_views:
        for author, seq in view.heads.items():
            hq_heads[author] = max(hq_heads.get(author, 0), seq)
    best: dict[str, dict[str, int]] = {site: {} for site in scenario.sites}
    for spec in scenario.nodes:
        seen = snap.nodes.get(spec.name)
        if seen is None:
            continue
        site_best = best[spec.site]
        for author, seq in seen.heads.items():
            site_best[author] = max(site_best.get(author, 0), seq)
    backlog = {
        site: sum(max(0, seq - hq_heads.get(author, 0)) for author, seq in heads.items())
        for site, heads in best.items()
    }
    rec.backlog.append((round(snap.t, 3), backlog))
    rec.connected.append((round(snap.t, 3), _linked_to_hq(scenario, snap)))


def quiet(rec: Recorder, scenario: Scenario, snap: Snapshot, revoked: Collection[str]) -> bool:
    """Drained: every node that is not revoked answered, nothing is in flight, their
    stores are equal, and each holds every case that must reach everyone."""
    names = [n.name for n in scenario.nodes if n.name not in revoked]
    views = [snap.nodes[n] for n in names if n in snap.nodes]
    if len(views) < len(names) or any(v.backlog for v in views):
        return False
    if len({v.digest for v in views}) != 1:
        return False
    expected = {cid for cid, c in rec.cases.items() if not c.refused}
    return all(expected <= v.case_ids for v in views)


def final_check(
    rec: Recorder, scenario: Scenario, snap: Snapshot, revoked: Mapping[str, float]
) -> None:
    """Judge the last snapshot: lost and missing records, refused writes, digests.

    ``revoked`` maps a revoked node's name to the scenario time of its revocation.
    A node absent from ``snap`` (it did not answer at the end) holds nothing.
    """
    expected = {cid for cid, c in rec.cases.items() if not c.refused}
    thief = {cid for cid, c in rec.cases.items() if c.refused}
    rec.expected_records = len(expected)
    at_hq: set[str] = set()
    for spec in scenario.hq_nodes:
        view = snap.nodes.get(spec.name)
        if view is not None:
            at_hq |= view.case_ids
    rec.lost_records = len(expected - at_hq)
    authors: dict[str, int] = {}
    for spec in scenario.nodes:
        if spec.name in revoked:
            continue
        view = snap.nodes.get(spec.name)
        held = view.case_ids if view is not None else frozenset()
        rec.missing[spec.name] = len(expected - held)
        rec.refused_writes_accepted += len(thief & held)
        rec.digests[spec.name] = view.digest if view is not None else "(did not answer)"
        if view is not None:
            for author, seq in view.heads.items():
                authors[author] = max(authors.get(author, 0), seq)
    rec.refused_writes = len(thief)
    for name in revoked:
        rec.revoked_peers[name] = {
            other: view.peer_states[name]
            for other, view in snap.nodes.items()
            if other not in revoked and name in view.peer_states
        }
    rec.events_created = sum(authors.values())
    for name in sorted(revoked):
        if name not in rec.revoked:
            rec.revoked.append(name)
