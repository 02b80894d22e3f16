"""The shape of a folded case: :class:`CaseState` and its parts.

:mod:`meshdesk.cases.fold` builds it from events; everyone else only reads it. It
lives apart from the vocabulary (:mod:`meshdesk.cases.model`) because it names event
kinds and refs (:mod:`meshdesk.cases.events`), which are built on that vocabulary:
vocabulary -> events -> state -> fold, with no cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from meshdesk.cases.events import EventKind, EventRef
from meshdesk.cases.model import Category, ReferralState, Status, Urgency, Value

__all__ = [
    "CallEntry",
    "Candidate",
    "CaseState",
    "Conflict",
    "Erasure",
    "Grant",
    "HistoryEntry",
    "Note",
    "Receipt",
    "Referral",
]


class Candidate(NamedTuple):
    """One live write of a conflicted register: what, by which node and operator, when."""

    value: Value
    author: str
    hlc: int
    op: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """Concurrent writes to one register that nobody has reconciled yet.

    ``candidates`` run newest first by ``(hlc, author)``; the first is displayed.
    """

    field: str
    candidates: tuple[Candidate, ...]


class HistoryEntry(NamedTuple):
    """Attribution of one event: when, which node, which operator, what kind."""

    hlc: int
    author: str
    op: str
    kind: EventKind


@dataclass(frozen=True, slots=True)
class Note:
    """A sealed free-text note and who wrote it."""

    note_id: str
    sealed: bytes
    author: str
    hlc: int
    op: str


@dataclass(frozen=True, slots=True)
class Referral:
    """A referral to a department with its current (displayed) state."""

    referral_id: str
    department: str
    reason: str
    author: str
    hlc: int
    op: str
    state: ReferralState


@dataclass(frozen=True, slots=True)
class CallEntry:
    """One call-log entry: participants and timing, never the media."""

    call_id: str
    participants: tuple[str, ...]
    started_hlc: int
    ended_hlc: int | None
    duration_s: int
    author: str
    hlc: int
    op: str


@dataclass(frozen=True, slots=True)
class Grant:
    """A KEY_GRANT: the data key re-sealed for new audience members."""

    grants: bytes
    author: str
    hlc: int
    op: str


@dataclass(frozen=True, slots=True)
class Erasure:
    """A CASE_ERASED: who asked for the citizen's data to be erased, and why."""

    author: str
    hlc: int
    op: str
    reason: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """An ERASURE_RECEIPT: node ``author`` dropped the case's sealed payloads."""

    author: str
    hlc: int
    op: str
    dropped: int


_REGISTER_NAME = re.compile(r"category|urgency|status|department|personal|referral:[0-9a-f-]{36}")


@dataclass(frozen=True, slots=True)
class CaseState:
    """Everything known about one case, folded from the events held locally.

    ``opened`` is False while the CASE_OPENED has not arrived: the case is then
    incomplete (identity fields None, scalars None unless edited) but not broken.

    Attributes:
        registers: Live write refs per register name; read them with :meth:`heads`.
            See :mod:`meshdesk.cases.fold` for the register rules.
    """

    id: str
    opened: bool
    created_hlc: int | None
    origin: str | None
    site: str | None
    category: Category | None
    urgency: Urgency | None
    status: Status | None
    department: str | None
    consent: tuple[str, ...]
    notes: tuple[Note, ...]
    referrals: tuple[Referral, ...]
    calls: tuple[CallEntry, ...]
    grants: tuple[Grant, ...]
    personal_sealed: bytes | None
    conflicts: tuple[Conflict, ...]
    history: tuple[HistoryEntry, ...]
    registers: Mapping[str, tuple[EventRef, ...]]
    #: Erasures asked for (valid or not: the case book checks their authors).
    erasures: tuple[Erasure, ...] = ()
    #: Nodes that applied an erasure (one receipt per node counts).
    receipts: tuple[Receipt, ...] = ()

    @property
    def last_hlc(self) -> int:
        """HLC of the newest event: a new edit must sort after it."""
        return self.history[-1].hlc

    def heads(self, register: str) -> tuple[EventRef, ...]:
        """The live writes of ``register``: what a new write must list as ``seen``.

        Args:
            register: A :class:`CaseField` value, ``"personal"`` or
                :func:`referral_register` of a referral id.

        Raises:
            ValueError: not a register name.
        """
        if not _REGISTER_NAME.fullmatch(register):
            raise ValueError(f"not a case register: {register!r}")
        return self.registers.get(register, ())

    def conflict(self, register: str) -> Conflict | None:
        """The open conflict on ``register``, if any."""
        return next((c for c in self.conflicts if c.field == register), None)

    def referral(self, referral_id: str) -> Referral | None:
        return next((r for r in self.referrals if r.referral_id == referral_id), None)
