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

Most cases are written in a line: one opening, then edits each made by someone who
had seen the previous value (and notes, key grants and the call log, which touch no
field of the row). Their row is read off the last write of each field, which is what
the fold gives for them, at a fraction of its cost (a test compares the two on
generated histories). Anything else (concurrent writes, a late opening) goes
through the fold.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence

import msgpack

from meshdesk.cases.chain import author_node
from meshdesk.cases.events import (
    CaseOpened,
    ConsentAdded,
    ConsentWithdrawn,
    EventKind,
    EventRef,
    FieldSet,
    OpeningFields,
    PersonalSet,
    ReferralAdded,
    ReferralStateSet,
    is_redacted,
    opening_fields,
)
from meshdesk.cases.fold import Event, fold
from meshdesk.cases.ids import is_valid_id
from meshdesk.cases.model import CaseField, ReferralState, Status, Urgency, referral_register
from meshdesk.errors import SyncError
from meshdesk.store import Store
from meshdesk.store.records import CaseSummary, StoredEvent

__all__ = [
    "ANNOUNCEMENT_KIND",
    "BACKGROUND_CHECK_ABOVE",
    "UNKNOWN_RANK",
    "CaseIndexing",
    "case_store",
    "fold_run",
    "personal_digest",
    "run_rank",
    "summarise",
]

log = logging.getLogger(__name__)

#: Rank of an unknown urgency or status: after every known one.
UNKNOWN_RANK = 9
URGENCY_RANK = {str(u): i for i, u in enumerate(Urgency)}
STATUS_RANK = {str(s): i for i, s in enumerate(Status)}
_NEW = str(Status.NEW)
_NEW_RANK = STATUS_RANK[_NEW]

_KEY_GRANT = int(EventKind.KEY_GRANT)
_OPENED = int(EventKind.CASE_OPENED)
_NORMAL_RANK = URGENCY_RANK[str(Urgency.NORMAL)]
#: Kinds that never touch a register nor the consent: their bodies are not read.
_INERT = frozenset(
    int(kind)
    for kind in (
        EventKind.NOTE_ADDED,
        EventKind.KEY_GRANT,
        EventKind.CALL_LOGGED,
        EventKind.CASE_ERASED,
        EventKind.ERASURE_RECEIPT,
        EventKind.EXPORTED,
    )
)


def personal_digest(sealed: bytes | None) -> bytes | None:
    """What the index keeps of a sealed personal block: 16 bytes of its SHA-256."""
    return None if sealed is None else hashlib.sha256(sealed).digest()[:16]


def _decode(events: Iterable[StoredEvent]) -> list[Event]:
    out = []
    for stored in events:
        if is_redacted(stored.body):
            continue  # an old body whose sealed blob an erasure dropped: nothing to read
        try:  # the row names sealed blocks by reference, however read
            out.append(Event.from_stored(stored, attach=False))
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
    return _summarise(case_id, events)[0]


def fold_run(events: Sequence[StoredEvent]) -> tuple[int, dict[str, CaseSummary]]:
    """A verified run's sending rank (:func:`run_rank`) and the index rows of the
    cases it touches as if these were all their events, each body decoded once (sync
    works both out for every run of a catch-up). A body that does not decode sets no
    urgency here (``run_rank`` reads it without full validation)."""
    best = _NORMAL_RANK
    cases: dict[str, list[StoredEvent]] = {}
    for event in events:
        if event.case_id is not None:
            cases.setdefault(event.case_id, []).append(event)
        elif event.kind == ANNOUNCEMENT_KIND and _severe(event.body):
            best = 0  # a severe announcement goes first, like an immediate case
    rows: dict[str, CaseSummary] = {}
    for case_id, mine in cases.items():
        row, decoded = _summarise(case_id, mine)
        rows[case_id] = row
        if decoded is None:  # read off the opening alone: its urgency is the row's
            best = min(best, row.urgency_rank)
            continue
        for d in decoded:
            p = d.payload
            if isinstance(p, CaseOpened):
                rank = URGENCY_RANK[str(p.urgency)]
            elif isinstance(p, FieldSet) and p.field is CaseField.URGENCY:
                rank = URGENCY_RANK.get(p.value, _NORMAL_RANK)
            else:
                continue
            best = min(best, rank)
    return best, rows


def _summarise(
    case_id: str, events: Sequence[StoredEvent]
) -> tuple[CaseSummary, list[Event] | None]:
    """:func:`summarise`, and the events it decoded (None: the row was read straight
    off the case's one event with fields, its opening, which decoded nothing)."""
    if not events:
        raise ValueError(f"case {case_id}: a summary needs at least one event")
    updated = oldest = events[0].hlc
    grants = 0
    live = []  # inert events touch no field of the row: only the others are decoded
    for e in events:  # one pass: a catch-up summarises every case it receives
        if e.case_id != case_id:
            raise ValueError(f"case {case_id}: summarise got events of another case")
        hlc, kind = e.hlc, e.kind
        if hlc > updated:
            updated = hlc
        if hlc < oldest:
            oldest = hlc
        if kind == _KEY_GRANT:
            grants += 1
        if kind not in _INERT:
            live.append(e)
    if len(live) == 1 and live[0].kind == _OPENED:  # most cases of a catch-up
        row = _opening_row(case_id, live[0], updated, len(events), grants)
        if row is not None:
            return row, None
    decoded = _decode(live)
    if not decoded:
        return _empty(case_id, oldest, updated, len(events), grants), decoded
    if len(decoded) == 1 and isinstance(p := decoded[0].payload, CaseOpened):
        fields = OpeningFields(p.op, p.site, str(p.category), str(p.urgency), p.consent,
                               p.department, p.sealed)  # fmt: skip
        return _opened(case_id, decoded[0].hlc, decoded[0].node, fields, updated, len(events),
                       grants), decoded  # fmt: skip
    decoded.sort(key=lambda e: (e.hlc, e.author, e.seq))
    linear = _linear(case_id, decoded, updated, len(events), grants)
    if linear is not None:
        return linear, decoded
    state = fold(decoded)
    urgency = "" if state.urgency is None else str(state.urgency)
    status = "" if state.status is None else str(state.status)
    summary = CaseSummary(
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
    return summary, decoded


def _opening_row(
    case_id: str, opening: StoredEvent, updated: int, count: int, grants: int
) -> CaseSummary | None:
    """:func:`_opened` of ``opening``, read without decoding it into an event (a
    catch-up makes one row per case it receives); None when the opening does not
    decode, which the caller then decodes to log why."""
    fields = opening_fields(opening.body)
    if fields is None or not is_valid_id(case_id):
        return None
    try:
        origin = author_node(opening.author)
    except ValueError:
        return None
    return _opened(case_id, opening.hlc, origin, fields, updated, count, grants)


def _opened(
    case_id: str,
    created: int,
    origin: str,
    fields: OpeningFields,
    updated: int,
    count: int,
    grants: int,
) -> CaseSummary:
    """The row of a case whose only event with fields is its opening."""
    return CaseSummary(
        case_id=case_id,
        opened=True,
        created_hlc=created,
        updated_hlc=updated,
        events=count,
        origin=origin,
        site=fields.site,
        category=fields.category,
        urgency=fields.urgency,
        urgency_rank=URGENCY_RANK[fields.urgency],
        status=_NEW,
        status_rank=_NEW_RANK,
        department=fields.department or "",
        consent=tuple(sorted(set(fields.consent))),
        referrals=(),
        conflicts=(),
        personal=personal_digest(fields.sealed),
        grants=grants,
    )


def _register(p: FieldSet | PersonalSet | ReferralStateSet) -> str:
    if isinstance(p, FieldSet):
        return p.field.value
    if isinstance(p, PersonalSet):
        return "personal"
    return referral_register(p.referral_id)


def _linear(
    case_id: str, ordered: Sequence[Event], updated: int, count: int, grants: int
) -> CaseSummary | None:
    """The row of a case written in a line, or None when only the fold can tell.

    In a line the first event (in fold order) is the one opening, and every later
    write has seen the live write of its register, so each write supersedes the
    one before: the fold's value is the last write, and nothing conflicts.
    """
    opening = ordered[0]
    p = opening.payload
    if not isinstance(p, CaseOpened):
        return None
    values: dict[str, object] = {
        "category": str(p.category),
        "urgency": str(p.urgency),
        "status": str(Status.NEW),
        "department": p.department,
        "personal": p.sealed,
    }
    heads: dict[str, EventRef | None] = dict.fromkeys(values, opening.ref)
    if p.sealed is None:
        heads["personal"] = None
    consent = set(p.consent)
    referrals: dict[str, list[str]] = {}  # id -> [department, state]
    for e in ordered[1:]:
        q = e.payload
        if isinstance(q, FieldSet | PersonalSet | ReferralStateSet):
            if isinstance(q, ReferralStateSet) and q.referral_id not in referrals:
                return None  # its referral comes later in fold order, or never
            name = _register(q)
            head = heads.get(name)
            if head is not None and head not in q.seen:
                return None  # written without seeing the live value: maybe a conflict
            heads[name] = e.ref
            if isinstance(q, FieldSet):
                dept = q.field is CaseField.DEPARTMENT
                values[name] = (q.value or None) if dept else str(q.value)
            elif isinstance(q, PersonalSet):
                values[name] = q.sealed
            else:
                referrals[q.referral_id][1] = str(q.state)
        elif isinstance(q, ReferralAdded):
            if q.referral_id not in referrals:  # the fold keeps the first
                referrals[q.referral_id] = [q.department, str(ReferralState.REQUESTED)]
                heads[referral_register(q.referral_id)] = e.ref
        elif isinstance(q, ConsentAdded):
            consent.add(q.department)
        elif isinstance(q, ConsentWithdrawn):
            consent.discard(q.department)
        else:
            return None  # a second opening
    urgency, status = str(values["urgency"]), str(values["status"])
    department, sealed = values["department"], values["personal"]
    return CaseSummary(
        case_id=case_id,
        opened=True,
        created_hlc=opening.hlc,
        updated_hlc=updated,
        events=count,
        origin=opening.node,
        site=p.site,
        category=str(values["category"]),
        urgency=urgency,
        urgency_rank=URGENCY_RANK.get(urgency, UNKNOWN_RANK),
        status=status,
        status_rank=STATUS_RANK.get(status, UNKNOWN_RANK),
        department=department if isinstance(department, str) else "",
        consent=tuple(sorted(consent)),
        referrals=tuple((d, s) for d, s in referrals.values()),
        conflicts=(),
        personal=personal_digest(sealed if isinstance(sealed, bytes) else None),
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


#: ``meshdesk.notices.events.NoticeKind.ANNOUNCEMENT`` (not imported: notices build on
#: cases; a test checks the two agree).
ANNOUNCEMENT_KIND = 20


def _severe(body: bytes) -> bool:
    try:
        obj = msgpack.unpackb(body, raw=False, max_bin_len=1 << 20)
    except (ValueError, msgpack.UnpackException):
        return False
    return isinstance(obj, dict) and obj.get("severity") == "severe"


def run_rank(events: Iterable[StoredEvent]) -> int:
    """The most urgent urgency an event of a signed batch sets (0 = immediate); a
    batch with a severe announcement ranks 0 too.

    Orders sending only (``LocalRun.rank``); a batch that sets no urgency ranks as
    normal. Reads only openings and urgency writes, without full validation.
    """
    best = URGENCY_RANK[str(Urgency.NORMAL)]
    for event in events:
        if event.kind == ANNOUNCEMENT_KIND and event.case_id is None:
            if _severe(event.body):
                return 0  # a severe announcement goes first, like an immediate case
            continue
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

    def fold_run(self, events: Sequence[StoredEvent]) -> tuple[int, dict[str, CaseSummary]]:
        return fold_run(events)


#: Above this size a home's database is checked for damage in the background (a check
#: reads every page, ≈ 2 ms per MiB): a large HQ is ready in seconds, not minutes.
BACKGROUND_CHECK_ABOVE = 256 * 2**20


def case_store(path: str | os.PathLike[str], *, create: bool = False) -> Store:
    """A :class:`Store` that keeps the case index: how nodes, the CLI and benches open
    a home's database (``async with case_store(home.store_path) as store``)."""
    return Store.open(
        path,
        create=create,
        indexer=CaseIndexing(),
        check_in_background_above=BACKGROUND_CHECK_ABOVE,
        check_delay=5.0,  # the node comes up first; the check reads the whole file
    )
