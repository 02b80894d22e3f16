"""Every control operation lab mode sends to a node, in one place.

A lab drill drives real ``meshdesk run`` processes through their control socket.
The shape of each op it uses (``case`` new/list/show/set, ``digest``, ``peers``,
``sync``, ``call_start``/``call_invite``/``calls``/``call_hangup`` and
``reload_revocations``) is written here once; the engine and its helpers
(:mod:`~meshdesk.drill._labcalls`, :mod:`~meshdesk.drill._labconflicts`) call these
functions, never ``node.call`` with a literal op. A node is anything with a name
and an async ``call`` (:class:`ControlNode`): the real
:class:`~meshdesk.drill._labnodes.LabNode`, or a fake in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from meshdesk.cases.model import CaseField
from meshdesk.drill.labmetrics import NodeView
from meshdesk.errors import DrillError
from meshdesk.ops.cases import every_case

__all__ = [
    "URGENCY",
    "ControlNode",
    "acknowledge",
    "announce",
    "announcement_ids",
    "announcement_reach",
    "bundle_export",
    "bundle_import",
    "hang_up",
    "invite",
    "linked_peers",
    "open_case",
    "poll",
    "reload_revocations",
    "set_urgency",
    "show_case",
    "start_call",
    "the_call",
    "urgency_conflict",
]

URGENCY = CaseField.URGENCY.value


class ControlNode(Protocol):
    """A running node as lab mode reaches it: a name and its control socket."""

    @property
    def name(self) -> str: ...

    @property
    def alive(self) -> bool: ...

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any: ...


def _operator(node: ControlNode) -> str:
    return f"op-{node.name}"


async def open_case(node: ControlNode, *, category: str, urgency: str, name: str) -> str:
    """``case new`` by the node's operator; the new case's id."""
    args = {"operator": _operator(node), "category": category, "urgency": urgency, "name": name}
    view = await node.call("case_new", args)
    return str(view["id"])


async def show_case(node: ControlNode, case_id: str) -> Mapping[str, Any]:
    """``case show``: the case as the node folds it (``urgency``, ``conflicts``, …)."""
    view: Mapping[str, Any] = await node.call("case_show", {"id": case_id})
    return view


async def set_urgency(node: ControlNode, case_id: str, value: str) -> Mapping[str, Any]:
    """``case set`` urgency by the node's operator (over every live candidate)."""
    args = {"id": case_id, "operator": _operator(node), "field": URGENCY, "value": value}
    view: Mapping[str, Any] = await node.call("case_set", args)
    return view


def urgency_conflict(view: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The conflict on urgency a ``case show`` view holds, if any."""
    for conflict in view.get("conflicts", []):
        if conflict.get("field") == URGENCY:
            return dict(conflict)
    return None


def _pending(count: object) -> int:
    """A link's outbox or inbox count; unknown (None: heads not yet exchanged) is 1.

    An unknown count is not an idle link, so a drain never ends on one.
    """
    if count is None:
        return 1
    if isinstance(count, int):
        return count
    raise DrillError(f"a node reported a sync count {count!r}")


async def poll(node: ControlNode) -> NodeView:
    """One poll of a node: ``case list``, ``digest``, ``peers`` and ``sync``.

    Raises:
        MeshdeskError: the node did not answer (down, or going down).
        DrillError: it answered a sync count that is not a count.
    """
    cases = [case async for case in every_case(node.call)]
    digest = await node.call("digest")
    peers = await node.call("peers")
    sync = await node.call("sync")
    return NodeView(
        case_ids=frozenset(c["id"] for c in cases),
        heads=dict(digest["heads"]),
        digest=str(digest["digest"]),
        linked=frozenset(p["name"] for p in peers if p.get("state") == "linked"),
        backlog=sum(_pending(p.get("outbox")) + _pending(p.get("inbox")) for p in sync),
        peer_states={str(p["name"]): str(p.get("state")) for p in peers if p.get("name")},
    )


async def linked_peers(node: ControlNode) -> set[str]:
    """Names of the peers the node is linked to now (``peers``)."""
    peers = await node.call("peers")
    return {str(p["name"]) for p in peers if p.get("state") == "linked" and p.get("name")}


async def start_call(caller: ControlNode, callee: str) -> str:
    """``call_start``, audio only with synthetic media; the call's id at the caller."""
    args = {"peer": callee, "audio_only": True, "media": "synthetic"}
    obj = await caller.call("call_start", args)
    return str(obj["call_id"])


async def invite(caller: ControlNode, call_id: str, peer: str) -> None:
    """``call_invite``: ``peer`` joins the caller's call."""
    await caller.call("call_invite", {"call_id": call_id, "peer": peer})


async def the_call(caller: ControlNode, call_id: str) -> Mapping[str, Any] | None:
    """The call ``call_id`` in the caller's ``calls`` list (None: gone)."""
    calls: list[dict[str, Any]] = await caller.call("calls")
    return next((c for c in calls if c["call_id"] == call_id), None)


async def hang_up(caller: ControlNode, call_id: str) -> None:
    await caller.call("call_hangup", {"call_id": call_id})


async def reload_revocations(node: ControlNode) -> None:
    """The node re-reads its home's revocation list (after ``deployment revoke``)."""
    await node.call("reload_revocations")


async def announce(hq: ControlNode, *, title: str, severity: str, sites: tuple[str, ...]) -> str:
    """``announce_new`` (a drill announcement: CAP ``Exercise``); its id."""
    args: dict[str, Any] = {
        "operator": _operator(hq), "title": title, "severity": severity, "exercise": True,
        "lang": "en" if title.isascii() else "ja", "to": [f"site:{s}" for s in sites],
    }  # fmt: skip
    view = await hq.call("announce_new", args)
    return str(view["id"])


async def announcement_ids(node: ControlNode) -> set[str]:
    """Ids of the announcements the node shows (``announce_list``)."""
    listed = await node.call("announce_list", {})
    return {str(a["id"]) for a in listed["announcements"]}


async def announcement_reach(hq: ControlNode, notice_id: str) -> Mapping[str, Any]:
    """``announce_show`` at HQ: per site, who has it and who read it."""
    view: Mapping[str, Any] = await hq.call("announce_show", {"id": notice_id})
    return view


async def acknowledge(node: ControlNode, notice_id: str) -> None:
    """``announce_ack`` by the node's operator (a signed read receipt)."""
    await node.call("announce_ack", {"id": notice_id, "operator": _operator(node)})


async def bundle_export(node: ControlNode, path: str) -> int:
    """``bundle_export`` of everything the node holds to ``path``; events written."""
    result = await node.call("bundle_export", {"out": path})
    return int(result["events"])


async def bundle_import(node: ControlNode, path: str) -> int:
    """``bundle_import`` of ``path``; events that were new to the node."""
    result = await node.call("bundle_import", {"file": path})
    return int(result["new_events"])
