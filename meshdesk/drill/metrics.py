"""What a drill measures, and the report data built from it (shared by sim and lab).

A :class:`Recorder` collects facts as the drill runs — cases created and when each
reached HQ, backlog and HQ connectivity per site at each sample, calls, conflicts —
and the final check (store digests, records missing). :func:`summarise` turns it
into the JSON-safe report dict that ``report.json`` holds and the Markdown, HTML
and charts are drawn from. Nothing here reads a clock: times are scenario seconds
given by the engine, so a seeded simulation gives identical numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshdesk.stats import percentile
from meshdesk.store.records import digest_of

__all__ = [
    "CallRecord",
    "CaseRecord",
    "ConflictRecord",
    "Progress",
    "Recorder",
    "digest_of",
    "reach_times",
    "summarise",
    "sync_cost",
]


def reach_times(rec: Recorder) -> list[float]:
    """Seconds from creation to HQ of every case that reached HQ."""
    return [
        c.reached_s - c.created_s
        for c in rec.cases.values()
        if c.reached_s is not None and not c.refused
    ]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running drill is, for a live display (both modes)."""

    t: float
    duration: float
    cases: int
    reached: int
    backlog: int
    links: int
    phase: str


@dataclass(slots=True)
class CaseRecord:
    case_id: str
    site: str
    node: str
    created_s: float
    urgency: str
    reached_s: float | None = None
    #: Written by a node after its revocation: must be refused, never reach HQ.
    refused: bool = False


@dataclass(slots=True)
class CallRecord:
    """A call placed by ``site`` (kind "call") or a join by ``site`` (kind "join")."""

    call_id: str
    kind: str
    site: str
    peer: str
    at_s: float
    placed: bool
    completed: bool = False
    note: str = ""


@dataclass(slots=True)
class ConflictRecord:
    case_id: str
    site: str
    register: str
    raised_s: float
    resolved_s: float | None = None


@dataclass
class Recorder:
    """Facts of one drill run, in scenario seconds."""

    sites: Sequence[str]
    cases: dict[str, CaseRecord] = field(default_factory=dict)
    events_created: int = 0
    #: (t, {site: events the site holds that HQ lacks})
    backlog: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    #: (t, {site: linked to HQ, directly or through others})
    connected: list[tuple[float, dict[str, bool]]] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    conflicts: dict[tuple[str, str], ConflictRecord] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Filled by the final check.
    digests: dict[str, str] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    lost_records: int = 0
    expected_records: int = 0
    refused_writes: int = 0
    refused_writes_accepted: int = 0
    revoked: list[str] = field(default_factory=list)
    #: revoked node -> {other node: how it sees the revoked one at the end ("refused")}
    revoked_peers: dict[str, dict[str, str]] = field(default_factory=dict)
    end_s: float = 0.0
    drained_s: float = 0.0
    #: Bytes of sync frames each node sent, over every link it had (sim mode).
    sync_bytes: dict[str, int] = field(default_factory=dict)
    #: Events each node stored from its peers (its backlog, as it was delivered).
    events_received: dict[str, int] = field(default_factory=dict)
    #: Announcements (sim mode): notice id -> title, severity, posted_s and per
    #: addressed site delivered_s, read_s, read_known_at_hq_s (None: not yet).
    announcements: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: USB bundle trips: courier, from, to, left_s, arrived_s, events, new_events.
    bundle_trips: list[dict[str, Any]] = field(default_factory=list)

    def case_created(self, record: CaseRecord) -> None:
        self.cases[record.case_id] = record

    def reached_hq(self, case_id: str, t: float) -> None:
        record = self.cases.get(case_id)
        if record is not None and record.reached_s is None:
            record.reached_s = t

    def conflict_raised(self, case_id: str, site: str, register: str, t: float) -> bool:
        key = (case_id, register)
        if key in self.conflicts and self.conflicts[key].resolved_s is None:
            return False
        self.conflicts[key] = ConflictRecord(case_id, site, register, t)
        return True

    def conflict_resolved(self, case_id: str, register: str, t: float) -> None:
        record = self.conflicts.get((case_id, register))
        if record is not None and record.resolved_s is None:
            record.resolved_s = t

    @property
    def converged(self) -> bool:
        return len(set(self.digests.values())) == 1


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _reach(records: Sequence[CaseRecord]) -> dict[str, float | int | None]:
    records = [r for r in records if not r.refused]
    times = [r.reached_s - r.created_s for r in records if r.reached_s is not None]
    return {
        "reach_hq_p50_s": _r(percentile(times, 50) if times else None),
        "reach_hq_p95_s": _r(percentile(times, 95) if times else None),
        "reach_hq_max_s": _r(max(times) if times else None),
        "not_reached": sum(1 for r in records if r.reached_s is None),
    }


def _after(then: float | None, start: float) -> float | None:
    return None if then is None else _r(then - start)


def _announcements(rec: Recorder) -> list[dict[str, object]]:
    """Per announcement and addressed site: seconds from posting until the site had
    it, until an operator there read it, and until HQ held that read receipt."""
    out: list[dict[str, object]] = []
    for notice_id, a in rec.announcements.items():
        posted = float(a["posted_s"])
        out.append(
            {
                "id": notice_id,
                "title": a["title"],
                "severity": a["severity"],
                "posted_at_s": _r(posted),
                "sites": {
                    site: {
                        "delivered_after_s": _after(reach["delivered_s"], posted),
                        "read_after_s": _after(reach["read_s"], posted),
                        "read_known_at_hq_after_s": _after(reach["read_known_at_hq_s"], posted),
                    }
                    for site, reach in a["sites"].items()
                },
            }
        )
    return out


def sync_cost(rec: Recorder, nodes: int) -> dict[str, object] | None:
    """What replication cost the nodes: sync bytes sent per node, against the events
    each received (its own backlog); None when not measured (lab mode)."""
    if not rec.sync_bytes:
        return None
    sent = sorted(rec.sync_bytes.values())
    received = [rec.events_received.get(n, 0) for n in rec.sync_bytes]
    per_event = [
        rec.sync_bytes[n] / rec.events_received[n]
        for n in rec.sync_bytes
        if rec.events_received.get(n)
    ]
    return {
        "nodes": nodes,
        "events_created": rec.events_created,
        "bytes_sent_per_node_mean": round(sum(sent) / len(sent)),
        "bytes_sent_per_node_p50": round(percentile(sent, 50)),
        "bytes_sent_per_node_max": sent[-1],
        "events_received_per_node_mean": round(sum(received) / len(received), 1),
        "bytes_sent_per_event_received_p50": round(percentile(per_event, 50), 1)
        if per_event
        else None,
    }


def summarise(
    rec: Recorder, *, scenario: str, mode: str, seed: int, nodes: int
) -> dict[str, object]:
    """The report as a JSON-safe dict (``report.json``)."""
    sites: dict[str, object] = {}
    for site in rec.sites:
        cases = [c for c in rec.cases.values() if c.site == site and not c.refused]
        calls = [c for c in rec.calls if c.site == site]
        conflicts = [c for c in rec.conflicts.values() if c.site == site]
        sites[site] = {
            "cases_created": len(cases),
            **_reach(cases),
            "calls_placed": sum(1 for c in calls if c.kind == "call" and c.placed),
            "calls_completed": sum(1 for c in calls if c.kind == "call" and c.completed),
            "calls_failed": sum(1 for c in calls if c.kind == "call" and not c.placed),
            "joins_placed": sum(1 for c in calls if c.kind == "join" and c.placed),
            "joins_completed": sum(1 for c in calls if c.kind == "join" and c.completed),
            "conflicts_raised": len(conflicts),
            "conflicts_resolved": sum(1 for c in conflicts if c.resolved_s is not None),
            "backlog": [[_r(t), values.get(site, 0)] for t, values in rec.backlog],
            "linked_to_hq": [[_r(t), values.get(site, False)] for t, values in rec.connected],
        }
    all_cases = [c for c in rec.cases.values() if not c.refused]
    calls = [c for c in rec.calls if c.kind == "call"]
    conflicts = list(rec.conflicts.values())
    return {
        "scenario": scenario,
        "mode": mode,
        "seed": seed,
        "nodes": nodes,
        "duration_s": _r(rec.end_s),
        "drained_s": _r(rec.drained_s),
        "ok": rec.lost_records == 0 and rec.converged,
        "lost_records": rec.lost_records,
        "converged": rec.converged,
        "expected_records": rec.expected_records,
        "events_created": rec.events_created,
        "cases_created": len(all_cases),
        **_reach(all_cases),
        "calls_placed": sum(1 for c in calls if c.placed),
        "calls_completed": sum(1 for c in calls if c.completed),
        "conflicts_raised": len(conflicts),
        "conflicts_resolved": sum(1 for c in conflicts if c.resolved_s is not None),
        "revoked": sorted(rec.revoked),
        "refused_writes": rec.refused_writes,
        "refused_writes_accepted": rec.refused_writes_accepted,
        "revoked_peers": {
            name: dict(sorted(states.items())) for name, states in sorted(rec.revoked_peers.items())
        },
        "digests": dict(sorted(rec.digests.items())),
        "missing_by_node": {k: v for k, v in sorted(rec.missing.items()) if v},
        "calls": [
            {
                "call_id": c.call_id,
                "kind": c.kind,
                "site": c.site,
                "peer": c.peer,
                "at_s": _r(c.at_s),
                "placed": c.placed,
                "completed": c.completed,
                "note": c.note,
            }
            for c in rec.calls
        ],
        "notes": list(rec.notes),
        "sync_cost": sync_cost(rec, nodes),
        "announcements": _announcements(rec),
        "bundle_trips": [
            {**trip, "left_s": _r(trip["left_s"]), "arrived_s": _r(trip["arrived_s"])}
            for trip in rec.bundle_trips
        ],
        "sites": sites,
    }
