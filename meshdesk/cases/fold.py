"""Fold a case's events into its current state: deterministic, order-independent.

Replicas receive a case's events in any order, some twice, some late (even the
CASE_OPENED), so the state is a function of the *set* of events: duplicates by
``(author, seq)`` are dropped and the rest sorted by ``(hlc, author, seq)`` before
anything is read.

Scalar fields (category, urgency, status, department, the sealed personal block and
each referral's state) are multi-value registers. A write supersedes exactly the
writes named in its ``seen`` (the heads its author had); the live values are the
writes nobody superseded. Two live values with different contents are a real
conflict: it is shown (:class:`Conflict`) with every candidate, the displayed value
is the newest by ``(hlc, author)``, and nothing is dropped until an operator writes
a value that has seen them all. Notes, referrals, consent, key grants and the call
log only grow, so they merge by union.

:class:`CaseWriter` is the other half of the same rule: it builds the next event
from the current state (``seen`` = the heads, an HLC after everything the state
holds, a checked status transition), so no caller has to get ``seen`` right by hand.
The two live together because a change to one is a change to the other.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from meshdesk.cases.chain import author_node
from meshdesk.cases.events import (
    OP_MAX,
    CallLogged,
    CaseErased,
    CaseOpened,
    ConsentAdded,
    ConsentWithdrawn,
    ErasureReceipt,
    EventKind,
    EventRef,
    FieldSet,
    KeyGranted,
    NoteAdded,
    Payload,
    PersonalSet,
    ReferralAdded,
    ReferralStateSet,
    decode_body,
    sealed_ref,
)
from meshdesk.cases.hlc import Clock, hlc_wall_ms
from meshdesk.cases.ids import is_valid_id, new_id
from meshdesk.cases.model import (
    PERSONAL_REGISTER,
    CaseField,
    Category,
    ReferralState,
    Status,
    Urgency,
    Value,
    check_text,
    check_transition,
    referral_register,
)
from meshdesk.cases.state import (
    CallEntry,
    Candidate,
    CaseState,
    Conflict,
    Erasure,
    Grant,
    HistoryEntry,
    Note,
    Receipt,
    Referral,
)
from meshdesk.errors import SyncError, UsageError
from meshdesk.store.records import StoredEvent

__all__ = ["CaseWriter", "Draft", "Event", "fold"]


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded case event: what the fold reads (the envelope minus the chain)."""

    case_id: str
    author: str
    seq: int
    hlc: int
    payload: Payload

    @property
    def kind(self) -> EventKind:
        return self.payload.KIND

    @property
    def ref(self) -> EventRef:
        return EventRef(self.author, self.seq)

    @property
    def node(self) -> str:
        """The node that wrote it (``author`` names the node's chain)."""
        return author_node(self.author)

    @classmethod
    def from_stored(cls, stored: StoredEvent, *, attach: bool = True) -> Event:
        """Decode a stored event's body.

        ``attach=False`` leaves the detached sealed blobs out: the body names them by
        reference (the case index reads only open metadata).

        Raises:
            SyncError: no or bad case id, unknown kind, or a malformed body.
        """
        case_id = stored.case_id
        if case_id is None or not is_valid_id(case_id):
            raise SyncError(f"event {stored.author}#{stored.seq} has no valid case id")
        try:
            author_node(stored.author)
        except ValueError as exc:
            raise SyncError(f"event {stored.seq}: {exc}") from None
        payload: Payload = decode_body(stored.kind, stored.body)
        if attach and stored.payloads:
            # The detached sealed blobs the body references (see events.py): the
            # fold then holds the blobs themselves, as the case book needs them.
            payload = payload.attach({sealed_ref(blob): blob for blob in stored.payloads})
        return cls(case_id, stored.author, stored.seq, stored.hlc, payload)


class _Write(NamedTuple):
    value: Value
    event: Event
    seen: tuple[EventRef, ...]


def _settle(name: str, writes: list[_Write]) -> tuple[Value, tuple[EventRef, ...], Conflict | None]:
    """Live writes of one register -> (displayed value, heads, conflict or None).

    ``writes`` come in fold order. A write supersedes only earlier writes (by
    ``(hlc, author, seq)``): an author cannot have seen a later event, since the
    writer stamps every edit after everything it saw. So a hostile ``seen`` (itself,
    or a cycle) cannot blank a register, and the newest write is always live.
    """
    position = {w.event.ref: i for i, w in enumerate(writes)}
    superseded = {ref for i, w in enumerate(writes) for ref in w.seen if position.get(ref, i) < i}
    live = [w for w in reversed(writes) if w.event.ref not in superseded]  # newest first
    heads = tuple(sorted(w.event.ref for w in live))
    conflict = None
    if len({w.value for w in live}) > 1:
        candidates = tuple(
            Candidate(w.value, w.event.node, w.event.hlc, w.event.payload.op) for w in live
        )
        conflict = Conflict(name, candidates)
    return live[0].value, heads, conflict


def _dedupe(events: Iterable[Event]) -> list[Event]:
    """One event per ``(author, seq)``, sorted; a forked pair keeps a fixed pick."""
    chosen: dict[EventRef, Event] = {}
    for event in events:
        prior = chosen.get(event.ref)
        if prior is None or (
            prior != event
            and (event.hlc, event.kind, event.payload.encode())
            < (prior.hlc, prior.kind, prior.payload.encode())
        ):
            chosen[event.ref] = event
    return sorted(chosen.values(), key=lambda e: (e.hlc, e.author, e.seq))


def fold(events: Iterable[Event]) -> CaseState:
    """Fold one case's events (any order, duplicates allowed) into its state.

    Raises:
        ValueError: no events, or events of more than one case (a caller's bug).
    """
    ordered = _dedupe(events)
    if not ordered:
        raise ValueError("fold needs at least one event")
    case_ids = {e.case_id for e in ordered}
    if len(case_ids) > 1:
        raise ValueError(f"fold got events of {len(case_ids)} cases")

    opened: Event | None = None
    registers: dict[str, list[_Write]] = defaultdict(list)
    consent: set[str] = set()
    notes: dict[str, Note] = {}
    added: dict[str, Event] = {}
    calls: list[CallEntry] = []
    grants: list[Grant] = []
    erasures: list[Erasure] = []
    receipts: list[Receipt] = []
    for e in ordered:
        p = e.payload
        if isinstance(p, CaseOpened):
            opened = opened or e
            registers[CaseField.CATEGORY.value].append(_Write(p.category, e, ()))
            registers[CaseField.URGENCY.value].append(_Write(p.urgency, e, ()))
            registers[CaseField.STATUS.value].append(_Write(Status.NEW, e, ()))
            registers[CaseField.DEPARTMENT.value].append(_Write(p.department, e, ()))
            if p.sealed is not None:
                registers[PERSONAL_REGISTER].append(_Write(p.sealed, e, ()))
            consent.update(p.consent)
        elif isinstance(p, FieldSet):
            registers[p.field.value].append(_Write(_field_value(p), e, p.seen))
        elif isinstance(p, PersonalSet):
            registers[PERSONAL_REGISTER].append(_Write(p.sealed, e, p.seen))
        elif isinstance(p, NoteAdded):
            notes.setdefault(p.note_id, Note(p.note_id, p.sealed, e.node, e.hlc, p.op))
        elif isinstance(p, ReferralAdded):
            if p.referral_id not in added:
                added[p.referral_id] = e
                register = referral_register(p.referral_id)
                registers[register].append(_Write(ReferralState.REQUESTED, e, ()))
        elif isinstance(p, ReferralStateSet):
            registers[referral_register(p.referral_id)].append(_Write(p.state, e, p.seen))
        elif isinstance(p, ConsentAdded):
            consent.add(p.department)
        elif isinstance(p, ConsentWithdrawn):
            consent.discard(p.department)
        elif isinstance(p, CallLogged):
            calls.append(
                CallEntry(
                    p.call_id,
                    p.participants,
                    p.started_hlc,
                    p.ended_hlc,
                    p.duration_s,
                    e.node,
                    e.hlc,
                    p.op,
                )
            )
        elif isinstance(p, KeyGranted):
            grants.append(Grant(p.grants, e.node, e.hlc, p.op))
        elif isinstance(p, CaseErased):
            erasures.append(Erasure(e.node, e.hlc, p.op, p.reason))
        elif isinstance(p, ErasureReceipt):
            receipts.append(Receipt(e.node, e.hlc, p.op, p.dropped))
        # An export is a node fact; one filed under a case changes nothing of it.

    values: dict[str, Value] = {}
    heads: dict[str, tuple[EventRef, ...]] = {}
    conflicts: list[Conflict] = []
    for name in sorted(registers):
        if name.startswith("referral:") and name.removeprefix("referral:") not in added:
            continue  # state of a referral whose REFERRAL_ADDED has not arrived yet
        values[name], heads[name], conflict = _settle(name, registers[name])
        if conflict is not None:
            conflicts.append(conflict)

    referrals = []
    for rid, ev in added.items():
        p = ev.payload
        assert isinstance(p, ReferralAdded)
        state = ReferralState(str(values[referral_register(rid)]))
        referrals.append(Referral(rid, p.department, p.reason, ev.node, ev.hlc, p.op, state))

    registers_ = ("category", "urgency", "status", "department", PERSONAL_REGISTER)
    category, urgency, status, department, personal = (values.get(r) for r in registers_)
    return CaseState(
        id=ordered[0].case_id,
        opened=opened is not None,
        created_hlc=opened.hlc if opened else None,
        origin=opened.node if opened else None,
        site=opened.payload.site if opened and isinstance(opened.payload, CaseOpened) else None,
        category=Category(category) if isinstance(category, str) else None,
        urgency=Urgency(urgency) if isinstance(urgency, str) else None,
        status=Status(status) if isinstance(status, str) else None,
        department=department if isinstance(department, str) else None,
        consent=tuple(sorted(consent)),
        notes=tuple(notes.values()),
        referrals=tuple(referrals),
        calls=tuple(calls),
        grants=tuple(grants),
        personal_sealed=personal if isinstance(personal, bytes) else None,
        conflicts=tuple(conflicts),
        history=tuple(HistoryEntry(e.hlc, e.node, e.payload.op, e.kind) for e in ordered),
        registers=heads,
        erasures=tuple(erasures),
        receipts=tuple(receipts),
    )


def _field_value(p: FieldSet) -> Value:
    if p.field is CaseField.CATEGORY:
        return Category(p.value)
    if p.field is CaseField.URGENCY:
        return Urgency(p.value)
    if p.field is CaseField.STATUS:
        return Status(p.value)
    return p.value or None


# -- writing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Draft:
    """The next event of a case, short of what the author's chain adds (seq, hashes)."""

    case_id: str
    hlc: int
    payload: Payload

    @property
    def kind(self) -> EventKind:
        return self.payload.KIND

    @property
    def body(self) -> bytes:
        return self.payload.encode()

    @property
    def payloads(self) -> tuple[bytes, ...]:
        """The sealed blobs the body references: stored and sent beside the event."""
        return self.payload.detached()

    def event(self, author: str, seq: int) -> Event:
        """The draft as the fold sees it once ``author`` stored it as ``seq``."""
        return Event(self.case_id, author, seq, self.hlc, self.payload)


def _clean(value: Any) -> Any:
    """Operator text without surrounding blanks; anything else as it is (validated later)."""
    return value.strip() if isinstance(value, str) else value


def _member(enum_type: type[Status] | type[ReferralState] | type[CaseField], value: object) -> Any:
    try:
        return enum_type(_clean(value))  # a non-str raises ValueError too
    except ValueError:
        allowed = ", ".join(enum_type)
        raise UsageError(f"{value!r} is not one of {allowed}") from None


class CaseWriter:
    """Builds case events for one operator at this node.

    Every method validates first and touches the clock last, so refused input
    changes nothing. Methods return a :class:`Draft`; the caller appends it to the
    node's chain.

    Args:
        op: The operator's name, recorded in every event for attribution.
        clock: This node's HLC.
        rng: Randomness for new ids (tests pass a seeded one).

    Raises:
        UsageError: ``op`` is empty, too long or has control characters.
    """

    def __init__(self, op: str, clock: Clock, rng: random.Random | None = None) -> None:
        self.op: str = check_text("operator name", _clean(op), OP_MAX)
        self.clock = clock
        self.rng = rng

    def _next(self, state: CaseState, payload: Payload, wall_ms: int) -> Draft:
        return Draft(state.id, self.clock.now(wall_ms, after=state.last_hlc), payload)

    @staticmethod
    def _editable(state: CaseState) -> None:
        if not state.opened:
            raise UsageError(
                f"case {state.id} is incomplete here (its opening has not arrived yet); "
                "it can be edited once it has"
            )

    def open_case(
        self,
        *,
        wall_ms: int,
        site: str,
        category: Category | str,
        urgency: Urgency | str,
        consent: Iterable[str] = (),
        department: str | None = None,
        sealed: bytes | None = None,
    ) -> Draft:
        """A new case; its id is a fresh UUIDv7 of the event's HLC time."""
        payload = CaseOpened(
            self.op,
            _clean(site),
            _clean(category),
            _clean(urgency),
            tuple(sorted({_clean(d) for d in consent}, key=str)),
            _clean(department) or None,
            sealed,
        )
        hlc = self.clock.now(wall_ms)
        return Draft(new_id(hlc_wall_ms(hlc), self.rng), hlc, payload)

    def set_field(
        self, state: CaseState, field: CaseField | str, value: str | None, *, wall_ms: int
    ) -> Draft:
        """Set category, urgency, department (None or "" unassigns) or status."""
        self._editable(state)
        name = CaseField(_member(CaseField, field))
        if name is CaseField.STATUS:
            return self.set_status(state, value, wall_ms=wall_ms)
        text = "" if value is None and name is CaseField.DEPARTMENT else _clean(value)
        payload = FieldSet(self.op, name, text, state.heads(name))
        if state.conflict(name) is None and _field_value(payload) == getattr(state, name):
            raise UsageError(f"{name} is already {text or 'unassigned'}")
        return self._next(state, payload, wall_ms)

    def set_status(self, state: CaseState, status: Status | str | None, *, wall_ms: int) -> Draft:
        """Change the status, refusing a transition an operator may not make."""
        self._editable(state)
        new = Status(_member(Status, status))
        assert state.status is not None  # every opened case has one
        check_transition(state.status, new)
        payload = FieldSet(self.op, CaseField.STATUS, new, state.heads(CaseField.STATUS))
        return self._next(state, payload, wall_ms)

    def resolve_conflict(
        self, state: CaseState, register: str, value: str | bytes | None, *, wall_ms: int
    ) -> Draft:
        """Write ``value`` over every live candidate of a conflicted register.

        Any valid value may be chosen, not only a candidate; a status is not checked
        against transitions, since the candidates were each valid where made.

        Raises:
            UsageError: the register has no conflict, or ``value`` is invalid for it.
        """
        self._editable(state)
        if state.conflict(register) is None:
            raise UsageError(f"{register} has no conflict to resolve")
        seen = state.heads(register)
        payload: Payload
        if register == PERSONAL_REGISTER:
            payload = PersonalSet(self.op, _clean(value), seen)
        elif register.startswith("referral:"):
            rid = register.removeprefix("referral:")
            payload = ReferralStateSet(self.op, rid, _member(ReferralState, value), seen)
        else:
            text = "" if value is None else _clean(value)
            payload = FieldSet(self.op, CaseField(register), text, seen)
        return self._next(state, payload, wall_ms)

    def set_personal(self, state: CaseState, sealed: bytes, *, wall_ms: int) -> Draft:
        """Replace the sealed personal block (sealed by the sealing module)."""
        self._editable(state)
        payload = PersonalSet(self.op, sealed, state.heads(PERSONAL_REGISTER))
        return self._next(state, payload, wall_ms)

    def add_note(self, state: CaseState, sealed: bytes, *, wall_ms: int) -> Draft:
        self._editable(state)
        payload = NoteAdded(self.op, new_id(wall_ms, self.rng), sealed)
        return self._next(state, payload, wall_ms)

    def refer(self, state: CaseState, department: str, reason: str, *, wall_ms: int) -> Draft:
        """Refer the case to ``department``; the referral starts as requested."""
        self._editable(state)
        payload = ReferralAdded(
            self.op,
            new_id(wall_ms, self.rng),
            _clean(department),
            _clean(reason),
        )
        return self._next(state, payload, wall_ms)

    def set_referral_state(
        self,
        state: CaseState,
        referral_id: str,
        new_state: ReferralState | str,
        *,
        wall_ms: int,
    ) -> Draft:
        self._editable(state)
        referral = state.referral(referral_id)
        if referral is None:
            known = ", ".join(r.referral_id for r in state.referrals) or "none"
            raise UsageError(f"case has no referral {referral_id!r} (referrals: {known})")
        new = ReferralState(_member(ReferralState, new_state))
        register = referral_register(referral.referral_id)
        if state.conflict(register) is None and referral.state is new:
            raise UsageError(f"referral to {referral.department} is already {new}")
        payload = ReferralStateSet(self.op, referral.referral_id, new, state.heads(register))
        return self._next(state, payload, wall_ms)

    def add_consent(self, state: CaseState, department: str, *, wall_ms: int) -> Draft:
        """Record that the citizen agreed to share the case with ``department``."""
        self._editable(state)
        payload = ConsentAdded(self.op, _clean(department))
        if payload.department in state.consent:
            raise UsageError(f"consent for {payload.department} is recorded already")
        return self._next(state, payload, wall_ms)

    def withdraw_consent(self, state: CaseState, department: str, *, wall_ms: int) -> Draft:
        """Record that the citizen no longer shares the case with ``department``."""
        self._editable(state)
        payload = ConsentWithdrawn(self.op, _clean(department))
        if payload.department not in state.consent:
            raise UsageError(f"{payload.department} is not in the case's consent")
        return self._next(state, payload, wall_ms)

    def log_call(
        self,
        state: CaseState,
        *,
        participants: Iterable[str],
        started_hlc: int,
        ended_hlc: int | None,
        duration_s: int,
        wall_ms: int,
        call_id: str | None = None,
    ) -> Draft:
        """Log a call about the case (who took part, when, how long)."""
        self._editable(state)
        payload = CallLogged(
            self.op,
            call_id or new_id(wall_ms, self.rng),
            tuple(dict.fromkeys(participants)),
            started_hlc,
            ended_hlc,
            duration_s,
        )
        return self._next(state, payload, wall_ms)

    def grant_keys(self, state: CaseState, grants: bytes, *, wall_ms: int) -> Draft:
        """Record the data key re-sealed for new audience members."""
        self._editable(state)
        return self._next(state, KeyGranted(self.op, grants), wall_ms)

    def erase(self, state: CaseState, reason: str, *, wall_ms: int) -> Draft:
        """Ask every node to drop the case's sealed data (the book checks who may)."""
        self._editable(state)
        return self._next(state, CaseErased(self.op, _clean(reason)), wall_ms)

    def receipt(self, state: CaseState, dropped: int, *, wall_ms: int) -> Draft:
        """Say that this node applied the case's erasure (any state: also incomplete)."""
        return self._next(state, ErasureReceipt(self.op, dropped), wall_ms)
