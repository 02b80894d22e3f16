"""Lab-mode calls: the scenario's calls and joins as control ops on real nodes.

A call is ``call_start`` (audio only, synthetic media) from a running node of the
caller site to one of the callee site; a department or site joining is
``call_invite`` of a node listing it; ``call_hangup`` ends the call after its
duration. A call (or join) is completed when its member is connected at hang-up.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from meshdesk.drill._labnodes import LabNode
from meshdesk.drill.metrics import CallRecord, Recorder
from meshdesk.drill.model import Call, CallJoin
from meshdesk.errors import MeshdeskError

__all__ = ["LabCalls"]


@dataclass(slots=True)
class _Placed:
    """A call placed on ``caller``; ``members`` are the records to complete, and whom."""

    caller: LabNode
    call_id: str
    members: list[tuple[CallRecord, str]]


class LabCalls:
    """The calls of one lab drill over ``nodes`` (shared with the engine, by name)."""

    def __init__(
        self,
        rec: Recorder,
        nodes: Mapping[str, LabNode],
        revoked: Collection[str],
        *,
        now: Callable[[], float],
        schedule: Callable[[float, Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.rec = rec
        self.nodes = nodes
        self.revoked = revoked
        self._now = now
        self._schedule = schedule
        self.placed: dict[str, _Placed] = {}  # scenario call id -> the call placed

    def site_node(self, site: str | None, department: str | None) -> LabNode | None:
        for node in self.nodes.values():
            if not node.alive or node.name in self.revoked:
                continue
            if (site is not None and node.spec.site == site) or (
                department is not None and department in node.spec.departments
            ):
                return node
        return None

    async def call(self, call: Call) -> None:
        t = self._now()
        caller = self.site_node(call.caller, None)
        callee = self.site_node(call.callee, None)
        record = CallRecord(call.call_id, "call", call.caller, call.callee, t, placed=False)
        self.rec.calls.append(record)
        if caller is None or callee is None:
            record.note = "no powered node at " + (call.caller if caller is None else call.callee)
            return
        try:
            obj = await caller.call(
                "call_start", {"peer": callee.name, "audio_only": True, "media": "synthetic"}
            )
        except MeshdeskError as exc:
            record.note = str(exc)
            return
        record.placed = True
        self.placed[call.call_id] = _Placed(caller, str(obj["call_id"]), [(record, callee.name)])
        self._schedule(t + call.duration, functools.partial(self._hangup, call.call_id))

    async def join(self, join: CallJoin) -> None:
        t = self._now()
        who = join.department or join.site or "?"
        placed = self.placed.get(join.call_id)
        member = self.site_node(join.site, join.department)
        site = member.spec.site if member is not None else (join.site or "?")
        record = CallRecord(join.call_id, "join", site, who, t, placed=False)
        self.rec.calls.append(record)
        if placed is None or member is None:
            record.note = "the call is not running" if placed is None else f"no node for {who}"
            return
        try:
            await placed.caller.call(
                "call_invite", {"call_id": placed.call_id, "peer": member.name}
            )
        except MeshdeskError as exc:
            record.note = str(exc)
            return
        record.placed = True
        placed.members.append((record, member.name))

    async def _hangup(self, call_id: str) -> None:
        placed = self.placed.pop(call_id)
        try:
            calls: list[dict[str, Any]] = await placed.caller.call("calls")
            obj = next((c for c in calls if c["call_id"] == placed.call_id), None)
            if obj is not None and obj["state"] != "ended":
                await placed.caller.call("call_hangup", {"call_id": placed.call_id})
        except MeshdeskError as exc:
            for record, _ in placed.members:
                record.note = f"call lost before hang-up: {exc}"
            return
        state = "gone" if obj is None else str(obj["state"])
        connected = set()
        if obj is not None:
            connected = {p["name"] for p in obj["participants"] if p.get("state") == "connected"}
        for record, name in placed.members:
            record.completed = state == "active" and name in connected
            if not record.completed:
                record.note = f"at hang-up: call {state}, connected {sorted(connected)}"
