"""Calls in the simulation: placed when live links join the sites, completed if they last.

Media is not simulated: a call stands for "the two sites could talk for its whole
duration". Who can take part is the world's rule (the powered, unrevoked nodes of
each site, see :class:`~meshdesk.drill.world.PlaceCall`). A call is placed when a
path of live links joins one of the calling site's to one of the called site's;
it completes when that path lasts the call's duration, and is dropped (not
completed) the first step it is broken. A department (every such node that lists
it) or a site joins a running call when a path joins it to the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from meshdesk.drill._nodes import SimNode
from meshdesk.drill.metrics import CallRecord, Recorder
from meshdesk.drill.world import JoinCall, PlaceCall

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

    def act(self, action: PlaceCall | JoinCall, t: float, nodes: Mapping[str, SimNode]) -> None:
        """Place a call, or join one, with the nodes the world says can take part."""
        if isinstance(action, PlaceCall):
            call = action.call
            caller = [nodes[n] for n in action.caller]
            callee = [nodes[n] for n in action.callee]
            placed = bool(caller and callee) and self._path(caller, callee)
            record = CallRecord(call.call_id, "call", call.caller, call.callee, t, placed)
            if not placed:
                record.note = "no path between the sites"
            self._rec.calls.append(record)
            if placed:
                self._active[call.call_id] = _Active(record, caller, callee, t + call.duration)
            return
        join = action.join
        active = self._active.get(join.call_id)
        by_site: dict[str, list[SimNode]] = {}
        for name in action.members:
            node = nodes[name]
            by_site.setdefault(node.spec.site, []).append(node)
        who = join.department or join.site or ""
        if not by_site:
            record = CallRecord(join.call_id, "join", join.site or "-", who, t, False)
            record.note = f"nobody of {who} is up"
            self._rec.calls.append(record)
            return
        for site, group in sorted(by_site.items()):
            placed = active is not None and self._path(group, active.caller + active.callee)
            record = CallRecord(join.call_id, "join", site, who, t, placed)
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
