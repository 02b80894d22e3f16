"""Lab-mode calls: the scenario's calls and joins as control ops on real nodes.

The engine picks the nodes (the first of those the world says can take part, see
:class:`~meshdesk.drill.world.PlaceCall`) and hands them in. A call is
``call_start`` (audio only, synthetic media) from the caller to the callee; a
department or site joining is ``call_invite`` of its node; the engine hangs the
call up after its duration (:meth:`LabCalls.hang_up`: ``call_hangup``). A call
(or join) is completed when its member is connected at hang-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshdesk.drill import _labops as ops
from meshdesk.drill._labops import ControlNode
from meshdesk.drill.metrics import CallRecord, Recorder
from meshdesk.drill.model import Call, CallJoin
from meshdesk.errors import MeshdeskError

__all__ = ["LabCalls"]


@dataclass(slots=True)
class _Placed:
    """A call placed on ``caller``; ``members`` are the records to complete, and whom."""

    caller: ControlNode
    call_id: str
    members: list[tuple[CallRecord, str]]


class LabCalls:
    """The calls of one lab drill; what happens to each goes to ``rec``."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec
        self._placed: dict[str, _Placed] = {}  # scenario call id -> the call placed

    async def place(
        self, call: Call, t: float, caller: ControlNode | None, callee: ControlNode | None
    ) -> bool:
        """Place ``call`` at scenario time ``t``; True when it rings (hang it up later)."""
        record = CallRecord(call.call_id, "call", call.caller, call.callee, t, placed=False)
        self._rec.calls.append(record)
        if caller is None or callee is None:
            record.note = "no powered node at " + (call.caller if caller is None else call.callee)
            return False
        try:
            call_id = await ops.start_call(caller, callee.name)
        except MeshdeskError as exc:
            record.note = str(exc)
            return False
        record.placed = True
        self._placed[call.call_id] = _Placed(caller, call_id, [(record, callee.name)])
        return True

    async def join(self, join: CallJoin, t: float, member: ControlNode | None, site: str) -> None:
        """``member`` (of ``site``) joins the running call, or the join is recorded as failed."""
        who = join.department or join.site or "?"
        placed = self._placed.get(join.call_id)
        record = CallRecord(join.call_id, "join", site, who, t, placed=False)
        self._rec.calls.append(record)
        if placed is None or member is None:
            record.note = "the call is not running" if placed is None else f"no node for {who}"
            return
        try:
            await ops.invite(placed.caller, placed.call_id, member.name)
        except MeshdeskError as exc:
            record.note = str(exc)
            return
        record.placed = True
        placed.members.append((record, member.name))

    async def hang_up(self, call_id: str) -> None:
        """End the scenario call ``call_id``; its members connected now completed it."""
        placed = self._placed.pop(call_id)
        try:
            obj = await ops.the_call(placed.caller, placed.call_id)
            if obj is not None and obj["state"] != "ended":
                await ops.hang_up(placed.caller, placed.call_id)
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
