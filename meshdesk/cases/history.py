"""A case's audit trail, read from its signed events (``meshdesk case history ID``).

Every change of a case is an event its author's chain signed, so the trail needs
nothing but the events: when (the event's HLC), which node, which operator, what.
Nothing personal is shown: a note or personal block appears as "note added", never
its text. Pure: the caller passes the stored events and node names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meshdesk.cases.chain import author_node
from meshdesk.cases.events import (
    CallLogged,
    CaseErased,
    CaseOpened,
    ConsentAdded,
    ConsentWithdrawn,
    ErasureReceipt,
    EventKind,
    Exported,
    FieldSet,
    Payload,
    ReferralAdded,
    ReferralStateSet,
    decode_body,
    is_redacted,
)
from meshdesk.cases.hlc import to_datetime
from meshdesk.errors import SyncError
from meshdesk.store.records import StoredEvent

__all__ = ["ACTIONS", "history"]

#: What each kind of event did, as the trail names it.
ACTIONS: Mapping[int, str] = {
    EventKind.CASE_OPENED: "opened",
    EventKind.FIELD_SET: "set",
    EventKind.NOTE_ADDED: "note added",
    EventKind.REFERRAL_ADDED: "referred",
    EventKind.REFERRAL_STATE: "referral state",
    EventKind.CONSENT_ADDED: "consent added",
    EventKind.CALL_LOGGED: "call logged",
    EventKind.PERSONAL_SET: "personal data changed",
    EventKind.KEY_GRANT: "keys granted",
    EventKind.CASE_ERASED: "erased",
    EventKind.ERASURE_RECEIPT: "erasure applied",
    EventKind.EXPORTED: "exported",
    EventKind.CONSENT_WITHDRAWN: "consent withdrawn",
}


def _detail(payload: Payload) -> str:
    match payload:
        case CaseOpened(site=site, category=category, urgency=urgency, consent=consent):
            shared = f", consent: {', '.join(consent)}" if consent else ""
            return f"at {site}: {category}, {urgency}{shared}"
        case FieldSet(field=field, value=value, seen=seen):
            settled = " (settles a conflict)" if len(seen) > 1 else ""
            return f"{field} = {value or '-'}{settled}"
        case ReferralAdded(department=department, reason=reason):
            return f"to {department}" + (f": {reason}" if reason else "")
        case ReferralStateSet(state=state):
            return str(state)
        case ConsentAdded(department=department) | ConsentWithdrawn(department=department):
            return department
        case Exported(format=fmt, personal=personal, scope=scope, rows=rows, file=file):
            fields = f", personal: {', '.join(personal)}" if personal else ""
            return f"{rows} cases to {file} ({fmt}{fields}; filters {scope})"
        case CallLogged(participants=participants, duration_s=duration):
            return f"{len(participants)} participants, {duration} s"
        case CaseErased(reason=reason):
            return reason
        case ErasureReceipt(dropped=dropped):
            return f"{dropped} sealed items dropped"
        case _:
            return ""


def history(
    events: Iterable[StoredEvent], names: Mapping[str, str] | None = None
) -> list[dict[str, object]]:
    """The trail of one case, oldest first: ``{at, node, name, op, action, detail}``.

    An event whose body was redacted by an erasure (an old body that held sealed data)
    keeps its place with action ``"(redacted)"``; one that does not decode says so.
    """
    names = names or {}
    rows: list[dict[str, object]] = []
    for event in sorted(events, key=lambda e: (e.hlc, e.author, e.seq)):
        node = author_node(event.author)
        action = ACTIONS.get(event.kind, f"kind {event.kind}")
        op = detail = ""
        if is_redacted(event.body):
            detail = "(redacted by the erasure)"
        else:
            try:
                payload = decode_body(event.kind, event.body)
            except SyncError as exc:
                detail = f"(unreadable: {exc})"
            else:
                op, detail = payload.op, _detail(payload)
        at = to_datetime(event.hlc).isoformat(timespec="seconds").replace("+00:00", "Z")
        rows.append(
            {
                "at": at,
                "node": node,
                "name": names.get(node, ""),
                "op": op,
                "action": action,
                "detail": detail,
            }
        )
    return rows
