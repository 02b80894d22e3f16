"""The notice board of one node: announcements, messages and their receipts.

Everything here is an event of the node's own signed chain (written through
:meth:`CaseBook.record`), so it replicates like case events: sync, hop by hop,
store-and-forward, or on a USB stick (:mod:`meshdesk.bundles`). The board folds
every notice event the store holds into memory (they are few beside cases) and
keeps the fold in step with each commit, local or received.

When events addressed to this node arrive, the board writes one signed
``delivered`` receipt per notice; an operator reading one writes ``read`` (with
their name). Receipts travel back like everything else, so HQ sees per node when
an announcement arrived and who read it — also when the receipt came on a stick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from meshdesk._lifecycle import AsyncResource, cancel_and_wait
from meshdesk.cases.book import CaseBook
from meshdesk.cases.chain import author_node
from meshdesk.cases.hlc import to_datetime
from meshdesk.cases.ids import new_id
from meshdesk.cases.sealing import Recipient, open_sealed, seal
from meshdesk.config import NodeSettings
from meshdesk.errors import AuthError, MeshdeskError, SyncError, UsageError
from meshdesk.identity import NodeInfo, NodeKit
from meshdesk.notices.events import (
    Announcement,
    Message,
    NoticeKind,
    Receipt,
    ReceiptState,
    Severity,
    decode_notice,
)
from meshdesk.store import Store, StoredEvent

__all__ = ["NoticeBoard", "addressed", "message_aad", "parse_expiry", "parse_targets"]

log = logging.getLogger(__name__)

Directory = Callable[[], Awaitable[list[NodeInfo]]]
_KINDS = [int(k) for k in NoticeKind]
_DURATION = re.compile(r"(\d{1,4})\s*([mhd])")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def message_aad(notice_id: str) -> bytes:
    return f"meshdesk:message:{notice_id}".encode()


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")[:19] + "Z"


def _iso(hlc: int) -> str:
    return to_datetime(hlc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_expiry(text: str, now_ms: int) -> int:
    """``6h``, ``30m``, ``2d`` from now, or an ISO date/time (UTC unless it says)."""
    value = text.strip()
    if match := _DURATION.fullmatch(value):
        return now_ms + int(match[1]) * _UNIT_MS[match[2]]
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"expires: {text!r} is neither 6h/30m/2d nor an ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    ms = int(when.timestamp() * 1000)
    if ms <= now_ms:
        raise UsageError(f"expires: {text!r} is already past")
    return ms


def parse_targets(items: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``--to`` values (``all``, ``site:NAME``, ``role:ROLE``, ``dept:NAME``) as
    ``(sites, roles, departments)``; all empty means everyone."""
    sites: list[str] = []
    roles: list[str] = []
    depts: list[str] = []
    for item in items:
        kind, sep, name = item.partition(":")
        if item.strip() == "all":
            continue
        target = {"site": sites, "role": roles, "dept": depts}.get(kind.strip())
        if not sep or target is None or not name.strip():
            raise UsageError(f"--to {item!r}: write all, site:NAME, role:ROLE or dept:NAME")
        if name.strip() not in target:
            target.append(name.strip())
    return tuple(sites), tuple(roles), tuple(depts)


def _severity(text: str) -> Severity:
    try:
        return Severity(text)
    except ValueError:
        allowed = ", ".join(Severity)
        raise UsageError(f"severity cannot be {text!r}; allowed: {allowed}") from None


def addressed(a: Announcement, node: NodeInfo) -> bool:
    """Whether an announcement is for ``node`` (see :class:`Announcement`)."""
    if not (a.sites or a.roles or a.departments):
        return True
    return (
        node.site in a.sites
        or str(node.role) in a.roles
        or any(d in a.departments for d in node.departments)
    )


@dataclasses.dataclass
class _Track:
    """What the board knows of one announcement or message."""

    author: str  # node id
    hlc: int
    payload: Announcement | Message
    delivered: dict[str, int] = dataclasses.field(default_factory=dict)  # node -> hlc
    read: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # node -> (hlc, op)


class NoticeBoard(AsyncResource):
    """Announcements and messages of one node (the ``notice`` ops' context).

    As an async context manager (the running node) it loads the fold and then writes
    delivery receipts in the background whenever received events address this node
    (:meth:`received`); without one (the CLI on a store), :meth:`load` does both once.
    """

    def __init__(
        self,
        store: Store,
        book: CaseBook,
        kit: NodeKit,
        *,
        directory: Directory,
        wall_ms: Callable[[], int],
        config: NodeSettings | None = None,
        seen: Callable[[str], int | None] | None = None,
        publish: Callable[[str, dict[str, object]], None] | None = None,
        exercise: bool = False,
    ) -> None:
        self._store = store
        self._book = book
        self._kit = kit
        self._me = str(kit.node_id)
        self._directory = directory
        self._wall_ms = wall_ms
        self._announce_roles = (config or NodeSettings()).announce_roles
        self._last_seen = seen
        #: Announcements posted from here are CAP ``Exercise`` (drills).
        self.exercise = exercise
        self._tracks: dict[str, _Track] = {}
        #: Receipts that arrived before their notice (another author's chain).
        self._orphans: list[tuple[str, StoredEvent, Receipt]] = []
        #: Announcements from nodes whose role may not post (logged once each).
        self._refused: set[str] = set()
        self._loaded = False
        #: Called with the notice ids that changed (the node publishes them).
        self.on_change: Callable[[list[str]], None] | None = None
        if publish is not None:
            self.on_change = lambda ids: publish("notice", {"ids": ids})
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NoticeBoard:
        await self.load()
        self._task = asyncio.create_task(self._receipts_forever(), name="notice receipts")
        return self

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _receipts_forever(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            try:
                await self.acknowledge_deliveries()
            except MeshdeskError as exc:  # a full disk: the next arrival tries again
                log.warning("could not write delivery receipts: %s", exc)

    def received(self, events: Sequence[StoredEvent]) -> None:
        """Events from a peer were stored: fold them now; receipts follow soon."""
        changed = self._fold(events)
        if changed:
            if self.on_change is not None:
                self.on_change(changed)
            self._due.set()

    # -- keeping the fold ------------------------------------------------------------

    async def load(self) -> None:
        """Fold every notice event in the store, then acknowledge deliveries."""
        if self._loaded:
            return
        self._loaded = True
        self._fold(await self._store.events_of_kinds(_KINDS))
        await self.acknowledge_deliveries()

    def _fold(self, events: Iterable[StoredEvent]) -> list[str]:
        changed: list[str] = []
        receipts: list[tuple[str, StoredEvent, Receipt]] = []
        for event in events:
            if event.case_id is not None or event.kind not in _KINDS:
                continue
            try:
                payload = decode_notice(event.kind, event.body)
                node = author_node(event.author)
            except (SyncError, ValueError) as exc:  # signed, so its author wrote it
                log.warning("ignored notice %s/%d: %s", event.author, event.seq, exc)
                continue
            if isinstance(payload, Receipt):
                receipts.append((node, event, payload))
                continue
            known = self._tracks.get(payload.notice_id)
            if known is not None:
                if known.author != node or known.payload != payload:
                    log.warning("ignored a second notice with id %s", payload.notice_id)
                continue
            self._tracks[payload.notice_id] = _Track(node, event.hlc, payload)
            changed.append(payload.notice_id)
        for node, event, receipt in receipts:
            track = self._tracks.get(receipt.notice_id)
            if track is None:
                self._orphans.append((node, event, receipt))
                continue
            self._apply(track, node, event.hlc, receipt)
            changed.append(receipt.notice_id)
        still: list[tuple[str, StoredEvent, Receipt]] = []
        for node, event, receipt in self._orphans:
            track = self._tracks.get(receipt.notice_id)
            if track is None:
                still.append((node, event, receipt))
            else:
                self._apply(track, node, event.hlc, receipt)
                changed.append(receipt.notice_id)
        self._orphans = still
        return sorted(set(changed))

    @staticmethod
    def _apply(track: _Track, node: str, hlc: int, receipt: Receipt) -> None:
        if node not in track.delivered or hlc < track.delivered[node]:
            track.delivered[node] = hlc
        read = receipt.state is ReceiptState.READ and receipt.op is not None
        if read and (node not in track.read or hlc < track.read[node][0]):
            assert receipt.op is not None
            track.read[node] = (hlc, receipt.op)

    async def stored(self, events: Sequence[StoredEvent]) -> None:
        """Events were stored without a running board (a bundle imported by the CLI):
        fold them and write the delivery receipts at once."""
        if self._fold(events):
            await self.acknowledge_deliveries()

    def _mine(self, track: _Track, me: NodeInfo) -> bool:
        if track.author == self._me:
            return False
        p = track.payload
        if isinstance(p, Announcement):
            return addressed(p, me)
        return p.to_node == self._me or (p.to_dept is not None and p.to_dept in me.departments)

    async def acknowledge_deliveries(self) -> int:
        """Write a ``delivered`` receipt for every notice addressed here that has none."""
        me = self._kit.info
        due = [
            notice_id
            for notice_id, track in self._tracks.items()
            if self._me not in track.delivered and self._mine(track, me)
        ]
        if due:
            await self._write(
                [Receipt(notice_id, ReceiptState.DELIVERED) for notice_id in sorted(due)]
            )
        return len(due)

    async def _write(self, payloads: Sequence[Announcement | Message | Receipt]) -> None:
        events = await self._book.record([(int(p.KIND), p.encode()) for p in payloads])
        changed = self._fold(events)
        if changed and self.on_change is not None:
            self.on_change(changed)

    # -- announcements ---------------------------------------------------------------

    def _track(self, text: str, kind: type[Announcement | Message]) -> tuple[str, _Track]:
        wanted = text.strip().lower()
        if len(wanted) < 4:
            raise UsageError(f"id {text!r} is too short; give at least 4 characters")
        found = [
            (notice_id, t)
            for notice_id, t in self._tracks.items()
            if isinstance(t.payload, kind)
            and (notice_id.startswith(wanted) or notice_id[24:].startswith(wanted))
        ]
        what = "announcement" if kind is Announcement else "message"
        if not found:
            raise UsageError(f"no {what} {text!r} on this node")
        if len(found) > 1:
            raise UsageError(f"{text!r} matches {len(found)} {what}s; give more of the id")
        return found[0]

    async def announce(
        self,
        *,
        op: str,
        title: str,
        body: str | None,
        lang: str,
        title_en: str | None = None,
        body_en: str | None = None,
        severity: str = "info",
        targets: Iterable[str] = (),
        expires: str | None = None,
        exercise: bool | None = None,
    ) -> dict[str, Any]:
        """Post an announcement from this node (its role must be allowed to)."""
        role = str(self._kit.info.role)
        if role not in self._announce_roles:
            allowed = ", ".join(self._announce_roles) or "none"
            raise UsageError(
                f"this node's role ({role}) may not post announcements (allowed: {allowed};"
                " [node] announce_roles in config.toml)"
            )
        now = self._wall_ms()
        sites, roles, depts = parse_targets(targets)
        texts: dict[str, str | None] = {"ja": None, "en": None}
        bodies: dict[str, str | None] = {"ja": None, "en": None}
        texts[lang], bodies[lang] = title, body
        if title_en is not None or body_en is not None:
            texts["en"], bodies["en"] = title_en or texts["en"], body_en or bodies["en"]
        payload = Announcement(
            notice_id=new_id(now),
            op=op,
            severity=_severity(severity),
            title_ja=texts["ja"],
            title_en=texts["en"],
            body_ja=bodies["ja"],
            body_en=bodies["en"],
            sites=sites,
            roles=roles,
            departments=depts,
            expires_ms=None if expires is None else parse_expiry(expires, now),
            exercise=self.exercise if exercise is None else exercise,
        )
        await self._write([payload])
        return await self.announcement_view(payload.notice_id, detail=True)

    def announcement(self, text: str) -> tuple[str, int, Announcement]:
        """``(author node, hlc, payload)`` of an announcement by (a start of) its id."""
        _, track = self._track(text, Announcement)
        assert isinstance(track.payload, Announcement)
        return track.author, track.hlc, track.payload

    def expired(self, a: Announcement) -> bool:
        return a.expires_ms is not None and a.expires_ms <= self._wall_ms()

    async def announcements(self, *, include_expired: bool = False) -> list[dict[str, Any]]:
        """What this node shows: announcements addressed here or written here (HQ:
        every one it holds), newest first; expired ones only when asked. One from a
        node whose role may not post (``[node] announce_roles``: a desk posting to
        everyone) is not shown, and logged once."""
        me = self._kit.info
        hq = str(me.role) == "hq"
        roles = {str(n.node_id): str(n.role) for n in await self._directory()}
        out = []
        for notice_id, track in sorted(self._tracks.items(), key=lambda kv: -kv[1].hlc):
            a = track.payload
            if not isinstance(a, Announcement):
                continue
            if not (hq or track.author == self._me or addressed(a, me)):
                continue
            if roles.get(track.author) not in self._announce_roles:
                if notice_id not in self._refused:
                    self._refused.add(notice_id)
                    log.warning(
                        "not showing announcement %s: its node %s (role %s) may not post",
                        notice_id, track.author, roles.get(track.author, "unknown"),
                    )  # fmt: skip
                continue
            if self.expired(a) and not include_expired:
                continue
            out.append(await self.announcement_view(notice_id, detail=False))
        return out

    async def banner(self) -> list[dict[str, Any]]:
        """Severe announcements addressed here, not expired, that nobody here read:
        the console shows them until an operator acknowledges."""
        return [
            a
            for a in await self.announcements()
            if a["severity"] == "severe" and not a["acknowledged"] and a["from_node"] != self._me
        ]

    async def _names(self) -> dict[str, NodeInfo]:
        return {str(n.node_id): n for n in await self._directory()}

    async def announcement_view(self, text: str, *, detail: bool) -> dict[str, Any]:
        notice_id, track = self._track(text, Announcement)
        a = track.payload
        assert isinstance(a, Announcement)
        names = await self._names()
        author = names.get(track.author)
        mine = self._me in track.read
        view: dict[str, Any] = {
            "id": notice_id,
            "from_node": track.author,
            "from": author.name if author is not None else track.author,
            "from_site": author.site if author is not None else None,
            "op": a.op,
            "severity": str(a.severity),
            "title_ja": a.title_ja,
            "title_en": a.title_en,
            "body_ja": a.body_ja,
            "body_en": a.body_en,
            "to": {
                "sites": list(a.sites),
                "roles": list(a.roles),
                "departments": list(a.departments),
            },
            "posted_at": _iso(track.hlc),
            "expires_at": None if a.expires_ms is None else _iso_ms(a.expires_ms),
            "expired": self.expired(a),
            "exercise": a.exercise,
            "acknowledged": mine,
            "delivered_count": len(track.delivered),
            "read_count": len(track.read),
        }
        if detail:
            view.update(self._reach(track, a, names))
        return view

    def _reach(self, track: _Track, a: Announcement, names: dict[str, NodeInfo]) -> dict[str, Any]:
        """Per site: who has it (delivered at), who read it (at, by whom), who not yet."""
        sites: dict[str, list[dict[str, Any]]] = {}
        waiting = []
        for node_id, info in sorted(names.items(), key=lambda kv: (kv[1].site, kv[1].name)):
            if node_id == track.author or not addressed(a, info):
                continue
            delivered = track.delivered.get(node_id)
            read = track.read.get(node_id)
            row = {
                "node": node_id,
                "name": info.name,
                "delivered_at": None if delivered is None else _iso(delivered),
                "read_at": None if read is None else _iso(read[0]),
                "read_by": None if read is None else read[1],
            }
            sites.setdefault(info.site, []).append(row)
            if delivered is None:
                seen = self._last_seen(node_id) if self._last_seen is not None else None
                waiting.append(
                    {
                        "node": node_id,
                        "name": info.name,
                        "site": info.site,
                        "last_seen": None if seen is None else _iso_ms(seen),
                    }
                )
        return {"sites": sites, "not_delivered": waiting}

    async def acknowledge(self, text: str, *, op: str) -> dict[str, Any]:
        """An operator read an announcement: a signed ``read`` receipt (once per node)."""
        notice_id, track = self._track(text, Announcement)
        if self._me not in track.read:
            await self._write([Receipt(notice_id, ReceiptState.READ, op)])
        return await self.announcement_view(notice_id, detail=False)

    # -- messages --------------------------------------------------------------------

    async def _find_node(self, text: str) -> NodeInfo:
        wanted = text.strip()
        nodes = await self._directory()
        exact = [n for n in nodes if str(n.node_id) == wanted or n.name == wanted]
        found = exact or [
            n
            for n in nodes
            if str(n.node_id).startswith(wanted.upper()) or n.name.lower() == wanted.lower()
        ]
        if not found:
            raise UsageError(f"no node {text!r} in this node's directory")
        if len(found) > 1:
            raise UsageError(f"{text!r} names {len(found)} nodes; give more of the id")
        return found[0]

    async def send(
        self,
        *,
        op: str,
        text: str,
        to_node: str | None = None,
        to_dept: str | None = None,
        case_id: str | None = None,
    ) -> dict[str, Any]:
        """A sealed line to one node or every node serving a department."""
        if (to_node is None) == (to_dept is None):
            raise UsageError("say whom: --to NODE or --dept DEPARTMENT (one of them)")
        if not text.strip():
            raise UsageError("a message must not be empty")
        nodes = await self._directory()
        if to_node is not None:
            target = await self._find_node(to_node)
            people = [target]
            to_node = str(target.node_id)
        else:
            people = [n for n in nodes if to_dept in n.departments]
            if not people:
                raise UsageError(f"no node in this node's directory serves {to_dept!r}")
        me = [n for n in nodes if str(n.node_id) == self._me]
        recipients = [
            Recipient(str(n.node_id), n.sealing_key)
            for n in {str(n.node_id): n for n in [*people, *me]}.values()
            if n.sealing_key is not None
        ]
        if not any(r.node_id != self._me for r in recipients):
            raise AuthError("no recipient has a sealing key: the message cannot be sealed")
        if case_id is not None:
            case_id = await self._book.resolve_id(case_id)
        notice_id = new_id(self._wall_ms())
        sealed = seal(text.encode(), recipients, aad=message_aad(notice_id))
        await self._write([Message(notice_id, op, to_node, to_dept, case_id, sealed)])
        return await self.message_view(notice_id)

    def _open(self, notice_id: str, m: Message) -> str | None:
        key = self._kit.sealing_key
        if key is None:
            return None
        try:
            return open_sealed(m.sealed, self._me, key, aad=message_aad(notice_id)).decode(
                "utf-8", "replace"
            )
        except (AuthError, SyncError):
            return None

    async def message_view(self, text: str) -> dict[str, Any]:
        notice_id, track = self._track(text, Message)
        m = track.payload
        assert isinstance(m, Message)
        names = await self._names()
        author = names.get(track.author)
        target = names.get(m.to_node) if m.to_node is not None else None
        recipients = (
            [m.to_node]
            if m.to_node is not None
            else [n for n, info in names.items() if m.to_dept in info.departments]
        )
        return {
            "id": notice_id,
            "from_node": track.author,
            "from": author.name if author is not None else track.author,
            "op": m.op,
            "to_node": m.to_node,
            "to": target.name if target is not None else (m.to_node or f"dept:{m.to_dept}"),
            "to_dept": m.to_dept,
            "case": m.case_id,
            "text": self._open(notice_id, m),
            "sent_at": _iso(track.hlc),
            "outgoing": track.author == self._me,
            "read_here": self._me in track.read,
            "recipients": [
                {
                    "node": node,
                    "name": names[node].name if node in names else node,
                    "delivered_at": _iso(track.delivered[node])
                    if node in track.delivered
                    else None,
                    "read_at": _iso(track.read[node][0]) if node in track.read else None,
                    "read_by": track.read[node][1] if node in track.read else None,
                }
                for node in recipients
                if node != track.author
            ],
        }

    async def messages(self) -> list[dict[str, Any]]:
        """Messages to or from this node, newest first."""
        me = self._kit.info
        out = []
        for notice_id, track in sorted(self._tracks.items(), key=lambda kv: -kv[1].hlc):
            if isinstance(track.payload, Message) and (
                track.author == self._me or self._mine(track, me)
            ):
                out.append(await self.message_view(notice_id))
        return out

    async def mark_read(self, text: str, *, op: str) -> dict[str, Any]:
        notice_id, track = self._track(text, Message)
        if track.author == self._me:
            raise UsageError("that is a message this node sent")
        if self._me not in track.read:
            await self._write([Receipt(notice_id, ReceiptState.READ, op)])
        return await self.message_view(notice_id)
