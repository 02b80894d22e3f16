"""A case's row of the case index: its open metadata, folded from its events.

:func:`summarise` is a pure function of a case's stored events, in any order, so
every replica with the same events computes the same row, and the store can keep
the row in step in the transaction that stores the events, or rebuild it at any
time. It is the fold (:func:`meshdesk.cases.fold.fold`) read through a narrow
window: only open metadata, never a sealed block (the personal block is named by
a digest, so the search index knows when its terms are stale).

Two rules differ from :meth:`CaseBook.state`, which refuses a case holding an event
it cannot decode: here an event whose body does not decode (a buggy or hostile
author signed it) is left out of the metadata, and logged, rather than hiding the
whole case from the queue. Envelope facts (event count, newest time) count every
event.

Most cases hold an opening and events that touch no register (notes, key grants,
the call log); their row is read straight off the opening, which is what the fold
gives for them (a test compares the two on generated histories). Anything else
goes through the fold.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence

import msgpack

from meshdesk.cases.events import CaseOpened, ConsentAdded, EventKind
from meshdesk.cases.fold import Event, fold
from meshdesk.cases.model import Status, Urgency
from meshdesk.errors import SyncError
from meshdesk.store import Store
from meshdesk.store.records import CaseSummary, StoredEvent

__all__ = ["UNKNOWN_RANK", "CaseIndexing", "case_store", "personal_digest", "run_rank", "summarise"]

log = logging.getLogger(__name__)

#: Rank of an unknown urgency or status: after every known one.
UNKNOWN_RANK = 9
URGENCY_RANK = {str(u): i for i, u in enumerate(Urgency)}
STATUS_RANK = {str(s): i for i, s in enumerate(Status)}

#: Kinds that never touch a register nor the consent: the fast path skips their bodies.
_INERT = frozenset({EventKind.NOTE_ADDED, EventKind.KEY_GRANT, EventKind.CALL_LOGGED})
_FAST = _INERT | {EventKind.CASE_OPENED, EventKind.CONSENT_ADDED}


def personal_digest(sealed: bytes | None) -> bytes | None:
    """What the index keeps of a sealed personal block: 16 bytes of its SHA-256."""
    return None if sealed is None else hashlib.sha256(sealed).digest()[:16]


def _decode(events: Iterable[StoredEvent]) -> list[Event]:
    out = []
    for stored in events:
        try:
            out.append(Event.from_stored(stored))
        except SyncError as exc:
            log.warning(
                "case %s: event %s#%d left out of the case index: %s",
                stored.case_id,
                stored.author,
                stored.seq,
                exc,
            )
    return out


def summarise(case_id: str, events: Sequence[StoredEvent]) -> CaseSummary:
    """The index row of ``case_id`` from all of its stored events (any order).

    Raises:
        ValueError: no events, or an event of another case (a caller's bug).
    """
    if not events:
        raise ValueError(f"case {case_id}: a summary needs at least one event")
    if any(e.case_id != case_id for e in events):
        raise ValueError(f"case {case_id}: summarise got events of another case")
    updated = max(e.hlc for e in events)
    oldest = min(e.hlc for e in events)
    grants = sum(1 for e in events if e.kind == EventKind.KEY_GRANT)
    openings = [e for e in events if e.kind == EventKind.CASE_OPENED]
    if len(openings) == 1 and all(e.kind in _FAST for e in events):
        fast = _fast(case_id, events, openings[0], updated, grants)
        if fast is not None:
            return fast
    # Inert events touch no field of the row: the fold needs only the others.
    decoded = _decode(e for e in events if e.kind not in _INERT)
    if not decoded:
        return _empty(case_id, oldest, updated, len(events), grants)
    state = fold(decoded)
    urgency = "" if state.urgency is None else str(state.urgency)
    status = "" if state.status is None else str(state.status)
    return CaseSummary(
        case_id=case_id,
        opened=state.opened,
        created_hlc=state.created_hlc if state.created_hlc is not None else oldest,
        updated_hlc=updated,
        events=len(events),
        origin=state.origin or "",
        site=state.site or "",
        category="" if state.category is None else str(state.category),
        urgency=urgency,
        urgency_rank=URGENCY_RANK.get(urgency, UNKNOWN_RANK),
        status=status,
        status_rank=STATUS_RANK.get(status, UNKNOWN_RANK),
        department=state.department or "",
        consent=state.consent,
        referrals=tuple((r.department, str(r.state)) for r in state.referrals),
        conflicts=tuple(c.field for c in state.conflicts),
        personal=personal_digest(state.personal_sealed),
        grants=grants,
    )


def _fast(
    case_id: str,
    events: Sequence[StoredEvent],
    opening: StoredEvent,
    updated: int,
    grants: int,
) -> CaseSummary | None:
    """The row of an opening plus inert events and consents; None if one does not
    decode (the fold then decides what is left)."""
    try:
        opened = Event.from_stored(opening)
        consent = set()
        for e in events:
            if e.kind == EventKind.CONSENT_ADDED:
                added = Event.from_stored(e).payload
                assert isinstance(added, ConsentAdded)
                consent.add(added.department)
    except SyncError:
        return None
    p = opened.payload
    assert isinstance(p, CaseOpened)
    consent.update(p.consent)
    urgency = str(p.urgency)
    return CaseSummary(
        case_id=case_id,
        opened=True,
        created_hlc=opened.hlc,
        updated_hlc=updated,
        events=len(events),
        origin=opened.node,
        site=p.site,
        category=str(p.category),
        urgency=urgency,
        urgency_rank=URGENCY_RANK[urgency],
        status=str(Status.NEW),
        status_rank=STATUS_RANK[str(Status.NEW)],
        department=p.department or "",
        consent=tuple(sorted(consent)),
        referrals=(),
        conflicts=(),
        personal=personal_digest(p.sealed),
        grants=grants,
    )


def _empty(case_id: str, oldest: int, updated: int, count: int, grants: int) -> CaseSummary:
    """A case none of whose events decode: only its envelope facts."""
    return CaseSummary(
        case_id=case_id,
        opened=False,
        created_hlc=oldest,
        updated_hlc=updated,
        events=count,
        origin="",
        site="",
        category="",
        urgency="",
        urgency_rank=UNKNOWN_RANK,
        status="",
        status_rank=UNKNOWN_RANK,
        department="",
        consent=(),
        referrals=(),
        conflicts=(),
        personal=None,
        grants=grants,
    )


def run_rank(events: Iterable[StoredEvent]) -> int:
    """The most urgent urgency an event of a signed batch sets (0 = immediate).

    Orders sending only (``LocalRun.rank``); a batch that sets no urgency ranks as
    normal. Reads only openings and urgency writes, without full validation.
    """
    best = URGENCY_RANK[str(Urgency.NORMAL)]
    for event in events:
        if event.kind != EventKind.CASE_OPENED and event.kind != EventKind.FIELD_SET:
            continue
        try:
            body = msgpack.unpackb(event.body, raw=False, max_bin_len=1 << 20)
        except (ValueError, msgpack.UnpackException):
            continue
        if not isinstance(body, dict):
            continue
        if event.kind == EventKind.CASE_OPENED:
            value = body.get("urgency")
        else:
            value = body.get("value") if body.get("field") == "urgency" else None
        rank = URGENCY_RANK.get(value) if isinstance(value, str) else None
        if rank is not None and rank < best:
            best = rank
    return best


class CaseIndexing:
    """The store's :class:`~meshdesk.store.records.CaseIndexer` for case events."""

    def summarise(self, case_id: str, events: Sequence[StoredEvent]) -> CaseSummary:
        return summarise(case_id, events)

    def rank(self, events: Sequence[StoredEvent]) -> int:
        return run_rank(events)


def case_store(path: str | os.PathLike[str], *, create: bool = False) -> Store:
    """A :class:`Store` that keeps the case index: how nodes, the CLI and benches open
    a home's database (``async with case_store(home.store_path) as store``)."""
    return Store.open(path, create=create, indexer=CaseIndexing())
