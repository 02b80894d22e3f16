"""Announcements and USB bundle trips in sim mode.

**Announcements.** HQ's first powered node posts a real
:class:`~meshdesk.notices.events.Announcement` event on its chain; it replicates
like every other event. A node of an addressed site that stores it writes its
signed ``delivered`` receipt (as the node's notice board does); the first node of
each site to have it is where an operator reads it ``read_after`` seconds later
(a ``read`` receipt). Receipts replicate back; the report gives per site when the
site had it, when it was read, and when HQ learned of the reading.

**Bundle trips.** A person carries a USB stick: at departure, everything the first
powered node of the source site holds is taken, run by run, exactly as stored;
on arrival the first powered node of the target site checks every run with the
node's own verification (as sync does) and stores what it lacks, then passes it
on over its links. The report lists each trip: when, from, to, records carried,
records new at arrival.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from meshdesk.cases.ids import new_id
from meshdesk.drill._nodes import SimNode
from meshdesk.drill.metrics import Recorder
from meshdesk.drill.model import Announce, BundleTrip
from meshdesk.errors import SyncError
from meshdesk.notices.events import (
    Announcement,
    NoticeKind,
    Receipt,
    ReceiptState,
    decode_notice,
)
from meshdesk.store.records import Checkpoint, StoredEvent
from meshdesk.sync.messages import Run
from meshdesk.wire import WireEvent

__all__ = ["NoticeTracker"]

#: ``record(node, kind, body)``: the engine writes one event on the node's chain.
Record = Callable[[SimNode, int, bytes], None]
#: ``at(t, fn)``: the engine runs ``fn`` at scenario time ``t`` (also while draining).
At = Callable[[float, Callable[[], None]], None]


def _title_fields(title: str) -> tuple[str | None, str | None]:
    return (None, title) if title.isascii() else (title, None)


class NoticeTracker:
    """Carries out announcements and bundle trips; records what the report shows."""

    def __init__(
        self,
        rec: Recorder,
        nodes: Mapping[str, SimNode],
        *,
        record: Record,
        at: At,
        now: Callable[[], float],
        wall_ms: Callable[[], int],
        seed: int,
    ) -> None:
        self._rec = rec
        self._nodes = nodes
        self._record = record
        self._at = at
        self._now = now
        self._wall_ms = wall_ms
        self._rng = random.Random(f"notices-{seed}")
        self._by_author = {n.author: n for n in nodes.values()}
        #: notice id -> (the plan, the addressed sites)
        self._posted: dict[str, tuple[Announce, frozenset[str]]] = {}

    def _first(self, site: str, role: str | None = None) -> SimNode | None:
        for node in self._nodes.values():
            if node.alive and (node.spec.site == site if role is None else node.spec.role == role):
                return node
        return None

    # -- announcements ------------------------------------------------------------------

    def announce(self, plan: Announce) -> None:
        hq = self._first("", role="hq")
        if hq is None:
            self._rec.notes.append(f"announcement {plan.title!r} not posted: no HQ node had power")
            return
        sites = frozenset(plan.sites) or frozenset(
            n.spec.site for n in self._nodes.values() if n.spec.role != "hq"
        )
        title_ja, title_en = _title_fields(plan.title)
        payload = Announcement(
            notice_id=new_id(self._wall_ms(), self._rng),
            op=f"op-{hq.spec.name}",
            severity=plan.severity,  # type: ignore[arg-type]
            title_ja=title_ja,
            title_en=title_en,
            body_ja=None,
            body_en=None,
            sites=tuple(sorted(plan.sites)),
            exercise=True,
        )
        self._posted[payload.notice_id] = (plan, sites)
        self._rec.announcements[payload.notice_id] = {
            "title": plan.title,
            "severity": plan.severity,
            "posted_s": self._now(),
            "sites": {
                s: {"delivered_s": None, "read_s": None, "read_known_at_hq_s": None}
                for s in sorted(sites)
            },
        }
        self._record(hq, int(NoticeKind.ANNOUNCEMENT), payload.encode())

    def stored(self, node: SimNode, events: Sequence[StoredEvent]) -> None:
        """A node stored events from elsewhere: deliver, read, and HQ learns of reads."""
        for event in events:
            if event.case_id is not None or event.kind not in (
                NoticeKind.ANNOUNCEMENT,
                NoticeKind.RECEIPT,
            ):
                continue
            try:
                payload = decode_notice(event.kind, event.body)
            except SyncError:
                continue
            if isinstance(payload, Announcement):
                self._delivered(node, payload.notice_id)
            elif (
                isinstance(payload, Receipt)
                and payload.state is ReceiptState.READ
                and node.spec.role == "hq"
            ):
                self._read_known(payload.notice_id, event.author)

    def _delivered(self, node: SimNode, notice_id: str) -> None:
        posted = self._posted.get(notice_id)
        site = node.spec.site
        if posted is None or site not in posted[1]:
            return
        plan = posted[0]
        reach = self._rec.announcements[notice_id]["sites"][site]
        now = self._now()
        receipt = Receipt(notice_id, ReceiptState.DELIVERED)

        def deliver() -> None:
            self._write(node, receipt)

        self._at(now, deliver)
        if reach["delivered_s"] is None:
            reach["delivered_s"] = now
            read = Receipt(notice_id, ReceiptState.READ, f"op-{node.spec.name}")

            def read_it() -> None:
                if self._write(node, read):
                    reach["read_s"] = self._now()

            self._at(now + plan.read_after, read_it)

    def _write(self, node: SimNode, receipt: Receipt) -> bool:
        if not node.alive:
            return False
        self._record(node, int(NoticeKind.RECEIPT), receipt.encode())
        return True

    def _read_known(self, notice_id: str, author: str) -> None:
        reader = self._by_author.get(author)
        entry = self._rec.announcements.get(notice_id)
        if reader is None or entry is None:
            return
        reach = entry["sites"].get(reader.spec.site)
        if reach is not None and reach["read_known_at_hq_s"] is None:
            reach["read_known_at_hq_s"] = self._now()

    # -- bundle trips --------------------------------------------------------------------

    def depart(self, trip: BundleTrip) -> None:
        source = self._first(trip.source)
        record: dict[str, Any] = {
            "courier": trip.courier, "from": trip.source, "to": trip.target,
            "left_s": self._now(), "arrived_s": None, "events": 0, "new_events": 0,
        }  # fmt: skip
        self._rec.bundle_trips.append(record)
        if source is None:
            self._rec.notes.append(f"{trip.courier} found no powered node at {trip.source}")
            return
        runs: list[tuple[str, list[StoredEvent], Checkpoint]] = []
        for author, checkpoints in source.store.checkpoints.items():
            chain = source.store.events[author]
            start = 0
            for checkpoint in checkpoints:
                runs.append((author, chain[start : checkpoint.seq], checkpoint))
                start = checkpoint.seq
        record["events"] = sum(len(events) for _, events, _ in runs)
        self._at(self._now() + trip.travel, lambda: self._arrive(trip, runs, record))

    def _arrive(
        self,
        trip: BundleTrip,
        runs: list[tuple[str, list[StoredEvent], Checkpoint]],
        record: dict[str, Any],
    ) -> None:
        target = self._first(trip.target)
        if target is None:
            self._rec.notes.append(f"{trip.courier} found no powered node at {trip.target}")
            return
        before = sum(len(chain) for chain in target.store.events.values())
        for author, events, checkpoint in runs:
            run = Run(
                author,
                tuple(WireEvent(e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash)
                      for e in events),
                checkpoint,
            )  # fmt: skip
            try:
                verified = target.verify(run)
            except SyncError as exc:
                self._rec.notes.append(f"{trip.courier}'s bundle: a run was refused: {exc}")
                continue
            added = target.store_run(verified, checkpoint)
            if added is not None:
                target.broadcast(added)
        record["arrived_s"] = self._now()
        record["new_events"] = sum(len(c) for c in target.store.events.values()) - before
