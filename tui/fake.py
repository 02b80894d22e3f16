""":class:`FakeNode`: an in-memory node with the console's :class:`NodeApi`.

It behaves rather than answers constants: it keeps cases and applies the case
operations with the real vocabulary and checks (``Personal`` validation, status
transitions), keeps peers, sync counters and calls, and publishes events to its
subscribers as a node does. Requests name the registry's operations
(:data:`meshdesk.ops.OPS`) and are checked by it before the fake's handler runs, so
the fake refuses a bad argument exactly as a node does; the few operations it does
not offer are listed in :attr:`FakeNode.NOT_OFFERED`. Ids and clock are
deterministic, so snapshot tests see the same screen every run. ``stop()`` and
``start()`` simulate a node that goes away and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from meshdesk.cases.model import Category, Personal, Status, Urgency, check_transition
from meshdesk.errors import UsageError
from meshdesk.ops import OPS, Args
from meshdesk.tui._fake_calls import FakeCalls
from meshdesk.tui._fake_invites import FakeInvites
from meshdesk.tui._fake_notices import FakeNotices
from meshdesk.tui.api import ConnectionLost, Event, call_op, case_op

__all__ = ["FIXED_MS", "FakeNode"]

#: 2025-09-01 09:00:00 UTC, the fake's default clock.
FIXED_MS = 1_756_717_200_000


def _iso(ms: int) -> str:
    import datetime as dt

    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


_RANK = {str(u): i for i, u in enumerate(Urgency)}
_STATUS_RANK = {str(s): i for i, s in enumerate(Status)}
#: ``case_list`` orders, as the node's index sorts (ties by id here).
_SORTS: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
    "urgency": lambda c: (_RANK.get(str(c["urgency"]), 9), str(c["created_at"]), c["id"]),
    "status": lambda c: (
        _STATUS_RANK.get(str(c["status"]), 9),
        _RANK.get(str(c["urgency"]), 9),
        str(c["created_at"]),
        c["id"],
    ),
    "opened": lambda c: (str(c["created_at"]), c["id"]),
    "site": lambda c: (
        str(c["site"]),
        _RANK.get(str(c["urgency"]), 9),
        str(c["created_at"]),
        c["id"],
    ),
}


def _texts(case: dict[str, Any]) -> list[str]:
    """What a search word may match in a case (lower-case): as the node, roughly."""
    out = [str(case.get(k) or "").lower() for k in ("id", "name", "site", "department")]
    for kind, enum in (("category", Category), ("urgency", Urgency), ("status", Status)):
        value = str(case.get(kind) or "")
        out.append(value)
        with contextlib.suppress(ValueError):
            member = enum(value)
            out += [member.label("ja").lower(), member.label("en").lower()]
    return out


class FakeNode(FakeCalls, FakeInvites, FakeNotices):
    """A node in memory: cases, peers, sync counters, calls and an event bus."""

    #: Registry operations the fake does not serve (a test checks all others are).
    NOT_OFFERED = frozenset({"digest", "reload_revocations"})

    def __init__(
        self,
        *,
        name: str = "本部 HQ",
        site: str = "市役所 City Hall",
        role: str = "hq",
        departments: Collection[str] = ("welfare", "housing"),
        now_ms: Callable[[], int] = lambda: FIXED_MS,
    ) -> None:
        self.node_id = "FAKEHQ0-AAAAAAA-BBBBBBB-CCCCCC1"
        self.name, self.site, self.role = name, site, role
        self.departments = list(departments)
        self.now_ms = now_ms
        self.cases: dict[str, dict[str, Any]] = {}
        #: Every `case_export` request, in order (no file is written).
        self.exports: list[dict[str, Any]] = []
        self.peer_list: list[dict[str, Any]] = []
        #: What ``status`` says of this node's clock (see meshdesk.clock.ClockView).
        self.clock: dict[str, Any] = {
            "skew_ms": 0,
            "reference": "",
            "correction_ms": 0,
            "warning": None,
            "peers_off": [],
        }
        self.sync_list: list[dict[str, Any]] = []
        self.directory_list: list[dict[str, Any]] = [
            self._info(self.node_id, name, site, role, self.departments)
        ]
        self.calls_by_id: dict[str, dict[str, Any]] = {}
        self.invites: dict[str, dict[str, Any]] = {}
        self.announcements: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.running = True
        self.requests: list[tuple[str, str]] = []
        self._subscribers: list[tuple[asyncio.Queue[Event | None], Collection[str] | None]] = []
        #: What a search word may match, per case (forgotten when the case changes).
        self._text_cache: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._counter = 0
        self.handlers: dict[str, Callable[[Args], Any]] = {
            "status": self._status,
            "peers": lambda _: [dict(p) for p in self.peer_list],
            "sync": lambda _: [dict(p) for p in self.sync_list],
            "directory": lambda _: [dict(p) for p in self.directory_list],
            "case_new": self._case_new,
            "case_list": self._case_list,
            "case_counts": self._case_counts,
            "case_show": self._find,
            "case_note": self._case_note,
            "case_refer": self._case_refer,
            "case_status": self._case_status,
            "case_resolve": self._case_resolve,
            "case_consent": self._case_consent,
            "case_set": self._case_set,
            "case_settle": self._case_settle,
            "case_erase": self._case_erase,
            "case_withdraw": self._case_withdraw,
            "case_history": self._case_history,
            "case_export": self._case_export,
            **self.call_handlers(),
            **self.invite_handlers(),
            **self.notice_handlers(),
        }

    @property
    def where(self) -> str:
        return f"fake node {self.name}"

    @staticmethod
    def _info(
        node_id: str, name: str, site: str, role: str, depts: Collection[str]
    ) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "name": name,
            "site": site,
            "role": role,
            "departments": list(depts),
        }

    # -- test controls -----------------------------------------------------------

    def add_peer(
        self,
        name: str,
        site: str,
        *,
        state: str = "linked",
        departments: Collection[str] = (),
        outbox: int = 0,
        inbox: int = 0,
    ) -> dict[str, Any]:
        """Add (or update) a peer; publishes a ``peer`` event and the sync state."""
        node_id = f"FAKE{len(self.peer_list) + 1:03d}-PEER{len(self.peer_list):03d}-XXXXXXX-YYYYYY1"
        peer = {
            "node_id": node_id,
            "name": name,
            "site": site,
            "role": "center",
            "addresses": ["127.0.0.1:7000"],
            "found_by": ["static"],
            "state": state,
            "last_seen_ms": self.now_ms(),
            "rtt_ms": 1.5,
            "reason": None,
        }
        self.peer_list.append(peer)
        self.directory_list.append(self._info(node_id, name, site, "center", departments))
        self.sync_list.append(
            {
                "node_id": node_id,
                "name": name,
                "site": site,
                "outbox": outbox,
                "inbox": inbox,
                "sent_events": 0,
                "received_events": 0,
                "last_exchange_ms": self.now_ms(),
                "idle": outbox == 0 and inbox == 0,
            }
        )
        self.publish("peer", {"change": state, "peer": peer})
        self.publish("sync", {"peers": self.sync_list})
        return peer

    def set_peer_state(self, name: str, state: str) -> None:
        for peer in self.peer_list:
            if peer["name"] == name:
                peer["state"] = state
                peer["last_seen_ms"] = self.now_ms()
                self.publish("peer", {"change": state, "peer": peer})

    def set_backlog(self, name: str, outbox: int, inbox: int = 0) -> None:
        for row in self.sync_list:
            if row["name"] == name:
                sent = max(0, row["outbox"] - outbox)
                row.update(outbox=outbox, inbox=inbox, idle=outbox == 0 and inbox == 0)
                row["sent_events"] += sent
                row["last_exchange_ms"] = self.now_ms()
        self.publish("sync", {"peers": self.sync_list})

    def inject_conflict(self, case_id: str, field: str, values: list[tuple[str, str]]) -> None:
        """Make ``field`` of a case conflicted between ``(value, node name)`` writes."""
        case = self.cases[case_id]
        case["conflicts"] = [c for c in case["conflicts"] if c["field"] != field] + [
            {
                "field": field,
                "candidates": [
                    {"value": v, "node": node, "at": _iso(self.now_ms()), "op": "someone"}
                    for v, node in values
                ],
            }
        ]
        case[field] = values[0][0]
        self._text_cache.pop(case_id, None)
        self.publish("case", {"case_ids": [case_id], "source": "sync"})

    def stop(self) -> None:
        """The node goes away: requests fail and event streams end."""
        self.running = False
        for queue, _ in self._subscribers:
            queue.put_nowait(None)

    def start(self) -> None:
        self.running = True

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        event = Event(kind, dict(data), self.now_ms())
        for queue, kinds in self._subscribers:
            if kinds is None or kind in kinds:
                queue.put_nowait(event)

    def _next_id(self) -> str:
        self._counter += 1
        return f"01990000-0000-7000-8000-{self._counter:012x}"

    def _check(self, what: str) -> None:
        if not self.running:
            raise ConnectionLost(f"no node is running in {self.where}")
        self.requests.append(("op", what))

    # -- NodeApi -------------------------------------------------------------------

    async def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Run registry operation ``op`` on the fake's data (checked by the registry)."""
        self._check(op)
        spec, checked = OPS.check(op, args)
        handler = self.handlers.get(op)
        if handler is None:
            raise spec.error(f"the fake node does not offer {op}")
        return handler(checked)

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("status", {})
        return result

    async def peers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("peers", {})
        return result

    async def sync_state(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("sync", {})
        return result

    async def directory(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("directory", {})
        return result

    async def case(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self.request(case_op(op), args)

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        return await self.request(call_op(op), args)

    @contextlib.asynccontextmanager
    async def events(
        self, kinds: Collection[str] | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        self._check("subscribe")
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        entry = (queue, None if kinds is None else frozenset(kinds))
        self._subscribers.append(entry)

        async def stream() -> AsyncIterator[Event]:
            while (event := await queue.get()) is not None:
                yield event

        try:
            yield stream()
        finally:
            self._subscribers.remove(entry)

    def _status(self, _: Args) -> dict[str, Any]:
        linked = sum(1 for p in self.peer_list if p["state"] == "linked")
        return {
            "node_id": self.node_id,
            "name": self.name,
            "site": self.site,
            "role": self.role,
            "departments": self.departments,
            "deployment": "デモ市 Demo City",
            "running": True,
            "uptime_s": 0.0,
            "listen_port": 0,
            "peers_known": len(self.peer_list),
            "peers_linked": linked,
            "store": {"events": len(self.cases), "authors": 1, "cases": len(self.cases)},
            "clock": dict(self.clock),
        }

    # -- cases -------------------------------------------------------------------------

    def _find(self, args: Args) -> dict[str, Any]:
        wanted = args.text("id").lower()
        matches = [c for c in self.cases if c.startswith(wanted) or c[24:].startswith(wanted)]
        if len(wanted) < 4 or len(matches) != 1:
            raise UsageError(f"no case {wanted!r} on this node")
        return self.cases[matches[0]]

    def _saved(self, case: dict[str, Any], args: Args, kind: int) -> dict[str, Any]:
        """Record an edit in the history and tell subscribers, as a commit does."""
        self._text_cache.pop(case["id"], None)
        case["history"].append(
            {
                "at": _iso(self.now_ms()),
                "node": self.node_id,
                "op": args.text("operator"),
                "kind": kind,
            }
        )
        self.publish("case", {"case_ids": [case["id"]], "source": "local"})
        return case

    def _case_new(self, args: Args) -> dict[str, Any]:
        personal = Personal(
            name=args.text("name"),
            furigana=args.maybe_text("furigana"),
            age=args.maybe("age", int),
            phone=args.maybe_text("phone"),
            shelter=args.maybe_text("shelter"),
        )
        case_id = self._next_id()
        case: dict[str, Any] = {
            "id": case_id,
            "category": args.text("category"),
            "urgency": args.text("urgency"),
            "status": "new",
            "department": args.maybe_text("department"),
            "site": self.site,
            "origin": self.node_id,
            "created_at": _iso(self.now_ms()),
            "consent": args.texts("consent"),
            "readable": True,
            "personal": {
                "name": personal.name,
                "furigana": personal.furigana,
                "age": personal.age,
                "phone": personal.phone,
                "shelter": personal.shelter,
            },
            "conflicts": [],
            "name": personal.name,
            "phone": personal.phone,
            "shelter": personal.shelter,
            "notes": [],
            "referrals": [],
            "calls": [],
            "history": [],
        }
        summary = args.maybe_text("summary")
        if summary:
            case["notes"].append(self._note(summary, args))
        self.cases[case_id] = case
        return self._saved(case, args, 1)

    def _note(self, text: str, args: Args) -> dict[str, Any]:
        return {
            "id": self._next_id(),
            "text": text,
            "sealed": False,
            "by": args.text("operator"),
            "node": self.node_id,
            "at": _iso(self.now_ms()),
        }

    def _case_list(self, args: Args) -> dict[str, Any]:
        """``case_list`` over the fake's cases: the node's filters, words, orders and
        keyset cursors, done in memory."""
        words = (args.maybe_text("search") or "").lower().split()
        exact = {k: args.maybe_text(k) for k in ("status", "urgency", "site", "category")}
        department = args.maybe_text("department")
        matching = [
            c
            for c in self.cases.values()
            if all(v is None or c.get(k) == v for k, v in exact.items())
            and (department is None or c.get("department") == department)
            and (not args.flag("conflicts") or c["conflicts"])
            and all(any(w in t for t in self._texts(c)) for w in words)
        ]
        key = _SORTS[args.text("sort") if args.get("sort") else "urgency"]
        ordered = sorted(matching, key=key, reverse=args.flag("reverse"))
        ids = [c["id"] for c in ordered]
        limit = int(args.maybe("limit", int) or 100)
        after, before = args.maybe_text("after"), args.maybe_text("before")
        for cursor in (after, before):
            if cursor is not None and cursor not in self.cases:
                raise UsageError(f"no case {cursor!r} on this node")
        if before is not None:
            end = ids.index(before) if before in ids else len(ids)
            start = max(0, end - limit)
        else:
            start = ids.index(after) + 1 if after in ids else 0
            end = start + limit
        page = ordered[start:end]
        out: dict[str, Any] = {
            "cases": [
                {k: v for k, v in c.items() if k not in ("notes", "calls", "history", "personal")}
                for c in page
            ],
            "next": page[-1]["id"] if page and end < len(ordered) else None,
            "prev": page[0]["id"] if page and start > 0 else None,
        }
        if args.flag("count"):
            cap = int(args.maybe("count_cap", int) or len(ordered))
            out.update(matched=min(cap, len(ordered)), matched_capped=len(ordered) > cap)
        return out

    def _texts(self, case: dict[str, Any]) -> list[str]:
        cached = self._text_cache.get(case["id"])
        if cached is None or cached[0] is not case:
            cached = self._text_cache[case["id"]] = (case, _texts(case))
        return cached[1]

    def _case_counts(self, _: Args) -> dict[str, Any]:
        grid: dict[tuple[str, str], int] = {}
        for c in self.cases.values():
            key = (str(c["urgency"]), str(c["status"]))
            grid[key] = grid.get(key, 0) + 1
        return {
            "counts": [
                {"urgency": u, "status": s, "cases": n} for (u, s), n in sorted(grid.items())
            ],
            "total": len(self.cases),
        }

    def _case_note(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        text = args.text("text")
        if not text.strip():
            raise UsageError("a note must not be empty")
        case["notes"].append(self._note(text, args))
        return self._saved(case, args, 5)

    def _case_refer(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        case["referrals"].append(
            {
                "id": self._next_id(),
                "department": args.text("department"),
                "reason": args.maybe_text("reason") or "",
                "state": "requested",
                "by": args.text("operator"),
                "at": _iso(self.now_ms()),
            }
        )
        return self._saved(case, args, 6)

    def _set_status(self, args: Args, status: str) -> dict[str, Any]:
        case = self._find(args)
        check_transition(Status(case["status"]), Status(status))
        case["status"] = status
        return self._saved(case, args, 2)

    def _case_status(self, args: Args) -> dict[str, Any]:
        return self._set_status(args, args.text("status"))

    def _case_resolve(self, args: Args) -> dict[str, Any]:
        return self._set_status(args, "resolved")

    def _case_consent(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        department = args.text("department")
        if department not in case["consent"]:
            case["consent"].append(department)
        return self._saved(case, args, 7)

    def _case_withdraw(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        department = args.text("department")
        if department not in case["consent"]:
            raise UsageError(f"{department} is not in the case's consent")
        case["consent"].remove(department)
        return self._saved(case, args, 33)

    def _case_set(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        field, value = args.text("field"), args.text("value")
        vocabulary = {"category": Category, "urgency": Urgency, "status": Status}.get(field)
        known = [str(m) for m in vocabulary] if vocabulary is not None else None
        if known is not None and value not in known:
            raise UsageError(f"unknown value {value!r}; choose one of: {', '.join(known)}")
        conflicted = any(c["field"] == field for c in case["conflicts"])
        if not conflicted and case[field] == value:
            raise UsageError(f"{field} is already {value}")
        case[field] = value
        case["conflicts"] = [c for c in case["conflicts"] if c["field"] != field]
        return self._saved(case, args, 3)

    def _case_erase(self, args: Args) -> dict[str, Any]:
        """As a node: personal fields and note texts gone, one receipt (this node's)."""
        case = self._find(args)
        if case.get("erasure"):
            raise UsageError(f"case {case['id']} is erased already (see `case history`)")
        for key in ("name", "phone", "shelter", "personal"):
            case[key] = None
        case["readable"] = False
        for note in case["notes"]:
            note.update(text=None, sealed=True)
        case["erasure"] = {
            "line": f"erased on 1 of 1 nodes ({args.text('reason')})",
            "erased": 1,
            "nodes": 1,
            "waiting": [],
            "here": True,
        }
        return self._saved(case, args, 30)

    def _case_export(self, args: Args) -> dict[str, Any]:
        """Counts what a node would write (the fake writes no file) and keeps the
        request in :attr:`exports`."""
        wanted = {k: args[k] for k in ("status", "urgency", "site", "category") if args[k]}
        rows = sum(1 for c in self.cases.values() if all(c.get(k) == v for k, v in wanted.items()))
        self.exports.append({key: args[key] for key in args})
        return {"path": args.text("out"), "format": args.text("format"), "rows": rows,
                "personal": args.flag("personal"), "readable": rows}  # fmt: skip

    def _case_history(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        return {
            "id": case["id"],
            "events": [
                {"at": h["at"], "node": h["node"], "name": self.name, "op": h["op"],
                 "action": f"kind {h['kind']}", "detail": ""}
                for h in case["history"]
            ],
        }  # fmt: skip

    def _case_settle(self, args: Args) -> dict[str, Any]:
        case = self._find(args)
        if not any(c["field"] == args["field"] for c in case["conflicts"]):
            raise UsageError(f"{args['field']} has no conflict to resolve")
        return self._case_set(args)
