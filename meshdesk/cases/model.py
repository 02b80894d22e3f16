"""The vocabulary of a consultation case (相談記録) and the citizen's sealed block.

The enums are the open, replicated metadata every node may read; their values are
the wire form (stable English identifiers), their labels what staff see in Japanese
or English. The citizen's details travel only sealed, so :class:`Personal` is the
plaintext that the sealing module encrypts; it is validated here so a bad entry is
refused at the desk, before it is sealed and replicated for good.

The shape of a folded case (:class:`CaseState` and its parts) is here too, apart
from the fold that builds it, so readers of state need not import the fold.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import msgpack

from meshdesk.errors import SyncError, UsageError

if TYPE_CHECKING:  # events.py imports this module; these are annotations only
    from meshdesk.cases.events import EventKind, EventRef

__all__ = [
    "CASE_FIELD_LABELS",
    "CATEGORY_LABELS",
    "LABELS",
    "PERSONAL_REGISTER",
    "REFERRAL_STATE_LABELS",
    "STATUS_LABELS",
    "STATUS_TRANSITIONS",
    "URGENCY_LABELS",
    "CallEntry",
    "Candidate",
    "CaseField",
    "CaseState",
    "Category",
    "Conflict",
    "Grant",
    "HistoryEntry",
    "Lang",
    "Note",
    "Personal",
    "Referral",
    "ReferralState",
    "Status",
    "Urgency",
    "Value",
    "check_transition",
    "referral_register",
]

Lang = Literal["ja", "en"]
#: What a register holds: an enum value or a department (str), a sealed block
#: (bytes), or "no department" (None).
Value = str | bytes | None


class _Labelled(enum.StrEnum):
    """A StrEnum whose members have a Japanese and an English label."""

    def label(self, lang: Lang = "ja") -> str:
        """The member's label in ``lang`` ("ja" or "en")."""
        ja, en = LABELS[type(self)][self]
        return ja if lang == "ja" else en


class Category(_Labelled):
    """What the consultation is about (相談分類)."""

    MEDICAL = "medical"
    WELFARE_ELDERCARE = "welfare_eldercare"
    CHILD_REARING = "child_rearing"
    HOUSING = "housing"
    SUPPLIES = "supplies"
    SAFETY_MISSING = "safety_missing"
    PROCEDURES_TAX = "procedures_tax"
    MENTAL_HEALTH = "mental_health"
    OTHER = "other"


class Urgency(_Labelled):
    """How soon someone must act (緊急度); :attr:`rank` sorts the queue."""

    IMMEDIATE = "immediate"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the most urgent; sort ascending to put urgent cases first."""
        return list(Urgency).index(self)


class Status(_Labelled):
    """Where the case stands (状況); see :data:`STATUS_TRANSITIONS`."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    REFERRED = "referred"
    RESOLVED = "resolved"
    CLOSED = "closed"


class ReferralState(_Labelled):
    """Progress of one referral to a department (紹介)."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    DONE = "done"


class CaseField(_Labelled):
    """The scalar metadata an operator can set with a FIELD_SET event."""

    CATEGORY = "category"
    URGENCY = "urgency"
    STATUS = "status"
    DEPARTMENT = "department"


CATEGORY_LABELS: Mapping[Category, tuple[str, str]] = {
    Category.MEDICAL: ("医療", "Medical"),
    Category.WELFARE_ELDERCARE: ("福祉・介護", "Welfare and elder care"),
    Category.CHILD_REARING: ("子育て", "Child-rearing"),
    Category.HOUSING: ("住まい", "Housing"),
    Category.SUPPLIES: ("物資", "Supplies"),
    Category.SAFETY_MISSING: ("安否確認・行方不明", "Safety check and missing persons"),
    Category.PROCEDURES_TAX: ("手続き・税", "Procedures and tax"),
    Category.MENTAL_HEALTH: ("こころの健康", "Mental health"),
    Category.OTHER: ("その他", "Other"),
}
URGENCY_LABELS: Mapping[Urgency, tuple[str, str]] = {
    Urgency.IMMEDIATE: ("緊急", "Immediate"),
    Urgency.HIGH: ("高", "High"),
    Urgency.NORMAL: ("通常", "Normal"),
    Urgency.LOW: ("低", "Low"),
}
STATUS_LABELS: Mapping[Status, tuple[str, str]] = {
    Status.NEW: ("新規", "New"),
    Status.IN_PROGRESS: ("対応中", "In progress"),
    Status.REFERRED: ("紹介済み", "Referred"),
    Status.RESOLVED: ("解決", "Resolved"),
    Status.CLOSED: ("終了", "Closed"),
}
REFERRAL_STATE_LABELS: Mapping[ReferralState, tuple[str, str]] = {
    ReferralState.REQUESTED: ("依頼中", "Requested"),
    ReferralState.ACCEPTED: ("受付済み", "Accepted"),
    ReferralState.DECLINED: ("辞退", "Declined"),
    ReferralState.DONE: ("対応完了", "Done"),
}
CASE_FIELD_LABELS: Mapping[CaseField, tuple[str, str]] = {
    CaseField.CATEGORY: ("相談分類", "Category"),
    CaseField.URGENCY: ("緊急度", "Urgency"),
    CaseField.STATUS: ("状況", "Status"),
    CaseField.DEPARTMENT: ("担当課", "Department"),
}
#: Every labelled enum and its labels, value -> (ja, en).
LABELS: Mapping[type[enum.StrEnum], Mapping[Any, tuple[str, str]]] = {
    Category: CATEGORY_LABELS,
    Urgency: URGENCY_LABELS,
    Status: STATUS_LABELS,
    ReferralState: REFERRAL_STATE_LABELS,
    CaseField: CASE_FIELD_LABELS,
}

#: Status changes an operator may make; "reopen" is resolved/closed -> in_progress.
STATUS_TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.IN_PROGRESS, Status.REFERRED, Status.RESOLVED, Status.CLOSED}),
    Status.IN_PROGRESS: frozenset({Status.REFERRED, Status.RESOLVED, Status.CLOSED}),
    Status.REFERRED: frozenset({Status.IN_PROGRESS, Status.RESOLVED, Status.CLOSED}),
    Status.RESOLVED: frozenset({Status.CLOSED, Status.IN_PROGRESS}),
    Status.CLOSED: frozenset({Status.IN_PROGRESS}),
}


def check_transition(current: Status, new: Status) -> None:
    """Refuse a status change an operator may not make, naming the allowed ones.

    Only writes are checked: the fold takes concurrent writes as they are, since
    each was valid on the node that made it.

    Raises:
        UsageError: ``new`` is not reachable from ``current``.
    """
    allowed = STATUS_TRANSITIONS[current]
    if new == current:
        raise UsageError(f"status is already {current}")
    if new not in allowed:
        names = ", ".join(sorted(allowed))
        raise UsageError(f"cannot go from {current} to {new}; allowed: {names}")


#: Register name of the sealed personal block (beside the :class:`CaseField` names).
PERSONAL_REGISTER = "personal"


def referral_register(referral_id: str) -> str:
    """Register name of one referral's state, as :class:`Conflict` and heads use it."""
    return f"referral:{referral_id}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _check_text(what: str, value: object, max_len: int, *, multiline: bool = False) -> str:
    """Validate operator text: a non-empty str, at most ``max_len`` characters.

    Japanese (full-width) text is fine; control characters are not, except newline
    and tab in ``multiline`` fields, since they break tables and terminals.

    Raises:
        UsageError: not a str, empty, too long, control characters, or not UTF-8.
    """
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text, not {type(value).__name__}")
    if not value.strip():
        raise UsageError(f"{what} must not be empty")
    if len(value) > max_len:
        raise UsageError(f"{what} is longer than {max_len} characters")
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise UsageError(f"{what} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} is not valid Unicode text") from exc
    return value


def _check_int(what: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}")
    return value


_TEXT_LIMITS: Mapping[str, int] = {
    "name": 100,
    "furigana": 100,
    "phone": 32,
    "address": 200,
    "shelter": 100,
    "language": 32,
    "needs": 2000,
}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERSONAL_UNPACK: dict[str, Any] = {
    "max_str_len": 8 * 2000 + 64,  # needs: 2000 characters of up to 4 UTF-8 bytes
    "max_bin_len": 0,
    "max_array_len": 0,
    "max_map_len": 16,
    "max_ext_len": 0,
}


@dataclass(frozen=True, slots=True)
class Personal:
    """The citizen's details: the plaintext of a case's sealed block.

    Only ``name`` is required: in a disaster a first consultation often has no
    more. ``age`` or ``birth_date`` (or both) may be given.

    Raises:
        UsageError: a field has the wrong type, is empty or too long.
    """

    name: str
    furigana: str | None = None
    age: int | None = None
    birth_date: dt.date | None = None
    phone: str | None = None
    address: str | None = None
    shelter: str | None = None
    household_size: int | None = None
    language: str | None = None
    needs: str | None = None

    def __post_init__(self) -> None:
        for key, limit in _TEXT_LIMITS.items():
            value = getattr(self, key)
            if value is not None or key == "name":
                _check_text(key, value, limit, multiline=key in ("address", "needs"))
        if self.age is not None:
            _check_int("age", self.age, 0, 150)
        if self.household_size is not None:
            _check_int("household_size", self.household_size, 1, 99)
        if self.birth_date is not None and (
            type(self.birth_date) is not dt.date or self.birth_date.year < 1850
        ):
            raise UsageError(f"birth_date must be a date after 1850, got {self.birth_date!r}")

    def to_msgpack(self) -> bytes:
        """Canonical msgpack map of every field (None included), to be sealed."""
        data = asdict(self)
        if self.birth_date is not None:
            data["birth_date"] = self.birth_date.isoformat()
        return msgpack.packb(data, use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Personal:
        """Decode an unsealed block written by :meth:`to_msgpack` on any node.

        Raises:
            SyncError: not a map of exactly the known fields with valid values.
        """
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, **_PERSONAL_UNPACK)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SyncError(f"personal block is not valid msgpack: {exc}") from exc
        names = {f.name for f in fields(cls)}
        if not isinstance(obj, dict) or set(obj) != names:
            got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise SyncError(f"personal block must be a map of {sorted(names)}, got {got}")
        birth = obj["birth_date"]
        try:
            if birth is not None:
                if not isinstance(birth, str) or not _DATE.fullmatch(birth):
                    raise UsageError(f"birth_date must be YYYY-MM-DD, got {birth!r}")
                try:
                    obj["birth_date"] = dt.date.fromisoformat(birth)
                except ValueError as exc:
                    raise UsageError(f"birth_date is not a date: {birth!r}") from exc
            return cls(**obj)
        except UsageError as exc:
            raise SyncError(f"personal block: {exc}") from exc


# -- the folded state (built by meshdesk.cases.fold) ------------------------------------


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
