"""Calls in the simulation: placed when live links join the sites, completed if they last.

Media is not simulated: a call stands for "the two sites could talk for its whole
duration". A call is placed when a path of live links joins an alive node of the
calling site to one of the called site; it completes when that path lasts the
call's duration, and is dropped (not completed) the first step it is broken. A
department (every alive node that lists it) or a site joins a running call when a
path joins it to the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshdesk.drill._nodes import SimNode
from meshdesk.drill.metrics import CallRecord, Recorder
from meshdesk.drill.model import Call, CallJoin

__all__ = ["CallTracker"]

PathFn = Callable[[Iterable[SimNode], Iterable[SimNode]], bool]


@dataclass
class _Active:
    record: CallRecord
    caller: list[SimNode]
    callee: list[SimNode]
    end: float
    joins: list[tuple[CallRecord, list[SimNode]]] = field(default_factory=list)


class CallTracker:
    def __init__(self, rec: Recorder, path: PathFn) -> None:
        self._rec = rec
        self._path = path
        self._active: dict[str, _Active] = {}

    def act(
        self,
        action: Call | CallJoin,
        t: float,
        site_nodes: Mapping[str, Sequence[SimNode]],
        nodes: Iterable[SimNode],
    ) -> None:
        if isinstance(action, Call):
            caller = [n for n in site_nodes[action.caller] if n.alive]
            callee = [n for n in site_nodes[action.callee] if n.alive]
            placed = bool(caller and callee) and self._path(caller, callee)
            record = CallRecord(action.call_id, "call", action.caller, action.callee, t, placed)
            if not placed:
                record.note = "no path between the sites"
            self._rec.calls.append(record)
            if placed:
                self._active[action.call_id] = _Active(record, caller, callee, t + action.duration)
            return
        active = self._active.get(action.call_id)
        if action.department is not None:
            members = [n for n in nodes if n.alive and action.department in n.spec.departments]
        else:
            members = [n for n in site_nodes[action.site or ""] if n.alive]
        by_site: dict[str, list[SimNode]] = {}
        for node in members:
            by_site.setdefault(node.spec.site, []).append(node)
        who = action.department or action.site or ""
        if not by_site:
            record = CallRecord(action.call_id, "join", action.site or "-", who, t, False)
            record.note = f"nobody of {who} is up"
            self._rec.calls.append(record)
            return
        for site, group in sorted(by_site.items()):
            placed = active is not None and self._path(group, active.caller + active.callee)
            record = CallRecord(action.call_id, "join", site, who, t, placed)
            if active is None:
                record.note = "the call is not running"
            elif not placed:
                record.note = "no path to the call"
            self._rec.calls.append(record)
            if active is not None and placed:
                active.joins.append((record, group))

    def check(self, t: float) -> None:
        """Drop calls and joins whose path broke; complete those that lasted."""
        for call_id in sorted(self._active):
            active = self._active[call_id]
            everyone = active.caller + active.callee
            if not self._path(active.caller, active.callee):
                active.record.note = f"dropped at {t:g} s (no path)"
                for join, _ in active.joins:
                    join.note = join.note or f"call dropped at {t:g} s"
                del self._active[call_id]
                continue
            for join, group in active.joins:
                if not join.note and not self._path(group, everyone):
                    join.note = f"dropped at {t:g} s (no path)"
            if t >= active.end - 1e-9:
                active.record.completed = True
                for join, _ in active.joins:
                    join.completed = not join.note
                del self._active[call_id]
